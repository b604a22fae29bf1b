'use strict';
// Wire-level writers for protocol v1 (proto/PROTOCOL.md), used by the
// generated encoder in ./fields.cjs. Each put* writes one present field (key,
// then value) at buf[pos] and returns the new position; it returns pos
// unchanged when the value cannot be encoded for the field's type (the field
// is then absent), and -1 when the field does not fit before cap.
//
// Nothing here validates limits (a width of 70000 is written; the daemon
// rejects it as out_of_range), like the C encoder.

const MAX_SAFE = Number.MAX_SAFE_INTEGER;
const MAX_U64 = (1n << 64n) - 1n;
const DIGITS = /^[0-9]{1,20}$/;
// Strings up to this many UTF-16 units are tried as ASCII in a JS loop.
const ASCII_LOOP_MAX = 40;

const SURROGATE = /[\uD800-\uDFFF]/;

/** The prefix of s holding its first max code points. A surrogate pair is
 * one code point, so it is never split; a lone surrogate counts as one, as
 * the U+FFFD it is written as does. */
function cutChars(s, max) {
  const len = s.length;
  if (len <= max) return s;
  // Without a surrogate in the first max units each unit is one code point:
  // the cut is those units. The regex runs natively, about ten times
  // faster than the loop below over a 120-unit prompt (node_bench.mjs).
  const head = s.slice(0, max);
  if (!SURROGATE.test(head)) return head;
  let i = 0;
  for (let n = 0; n < max && i < len; n++) {
    const c = s.charCodeAt(i);
    i += (c & 0xFC00) === 0xD800 && i + 1 < len &&
      (s.charCodeAt(i + 1) & 0xFC00) === 0xDC00 ? 2 : 1;
  }
  return i >= len ? s : s.slice(0, i);
}

function varintSize(n) {
  // n: a byte length (a non-negative integer under 2^31).
  return n < 0x80 ? 1 : n < 0x4000 ? 2 : n < 0x200000 ? 3 : n < 0x10000000 ? 4 : 5;
}

/** Unsigned LEB128, shortest form; n a non-negative integer Number <= 2^53. */
function putVarint(buf, pos, n) {
  if (n > 0xFFFFFFF) {
    // Millisecond timestamps: the low 28 bits as four groups, then the rest
    // (under 2^25), so the loop below stays in small-integer arithmetic.
    const hi = Math.floor(n / 0x10000000);
    const lo = n - hi * 0x10000000;
    buf[pos++] = (lo & 0x7F) | 0x80;
    buf[pos++] = ((lo >>> 7) & 0x7F) | 0x80;
    buf[pos++] = ((lo >>> 14) & 0x7F) | 0x80;
    buf[pos++] = (lo >>> 21) | 0x80;
    n = hi;
  }
  while (n > 0x7F) {
    buf[pos++] = (n & 0x7F) | 0x80;
    n >>>= 7;
  }
  buf[pos++] = n;
  return pos;
}

function putVarintBig(buf, pos, n) {
  while (n > 0x7Fn) {
    buf[pos++] = Number(n & 0x7Fn) | 0x80;
    n >>= 7n;
  }
  buf[pos++] = Number(n);
  return pos;
}

function putKey(buf, pos, k0, k1) {
  buf[pos++] = k0;
  if (k1 >= 0) buf[pos++] = k1;
  return pos;
}

/**
 * A string field. v: a string; a finite number or a BigInt is written as
 * its decimal text; with errObj, an object with a string .message (an
 * Error) is written as that message. Anything else leaves the field out.
 * cut > 0: at most that many code points are written.
 */
function putStr(buf, pos, cap, k0, k1, v, cut, errObj) {
  let s;
  if (typeof v === 'string') s = v;
  else if (typeof v === 'number') {
    if (!Number.isFinite(v)) return pos;
    s = String(v);
  } else if (typeof v === 'bigint') s = String(v);
  else if (errObj && typeof v === 'object' && typeof v.message === 'string') s = v.message;
  else return pos;
  if (cut > 0) s = cutChars(s, cut);
  const units = s.length;
  // UTF-8 takes at least one byte per UTF-16 unit.
  if (pos + 2 + 1 + units > cap) return -1;
  pos = putKey(buf, pos, k0, k1);
  if (units <= ASCII_LOOP_MAX) {
    // Short ASCII text (ids, models, tiers, addresses): a loop here beats
    // the call into C++ that Buffer#write makes. Its length is one byte.
    let p = pos + 1;
    let i = 0;
    for (; i < units; i++) {
      const c = s.charCodeAt(i);
      if (c > 0x7F) break;
      buf[p++] = c;
    }
    if (i === units) {
      buf[pos] = units;
      return p;
    }
  }
  // At most three bytes per unit. When the length's varint has the same size for both
  // bounds, write the text first and its length before it; else measure.
  const lb = varintSize(units);
  if (lb === varintSize(units * 3) && pos + lb + units * 3 <= cap) {
    const n = buf.write(s, pos + lb);
    putVarint(buf, pos, n);
    return pos + lb + n;
  }
  const n = Buffer.byteLength(s, 'utf8');
  if (pos + varintSize(n) + n > cap) return -1;
  pos = putVarint(buf, pos, n);
  return pos + buf.write(s, pos);
}

/**
 * A uint64 field. v: a non-negative Number (a fraction is rounded, as for a
 * duration from performance.now()), a BigInt up to 2^64-1, a Date (its
 * milliseconds) or a string of decimal digits. Anything else (negative,
 * NaN, Infinity, too large) leaves the field out.
 */
function putU64(buf, pos, cap, k0, k1, v) {
  let n;
  if (typeof v === 'number') {
    if (v >= 0 && v <= MAX_SAFE) n = v % 1 === 0 ? v : Math.round(v);
    else if (v > MAX_SAFE && v < 18446744073709551616) n = BigInt(v);
    else return pos;
  } else if (typeof v === 'bigint') {
    if (v < 0n || v > MAX_U64) return pos;
    n = v <= 9007199254740991n ? Number(v) : v;
  } else if (typeof v === 'object' && v instanceof Date) {
    n = v.getTime();
    if (!(n >= 0)) return pos;
  } else if (typeof v === 'string' && DIGITS.test(v)) {
    const b = BigInt(v);
    if (b > MAX_U64) return pos;
    n = b <= 9007199254740991n ? Number(b) : b;
  } else {
    return pos;
  }
  if (pos + 2 + 10 > cap) return -1;
  pos = putKey(buf, pos, k0, k1);
  return typeof n === 'number' ? putVarint(buf, pos, n) : putVarintBig(buf, pos, n);
}

/** A bool field: true/false or 1/0; anything else leaves it out. */
function putBool(buf, pos, cap, k0, k1, v) {
  let b;
  if (v === true || v === 1) b = 1;
  else if (v === false || v === 0) b = 0;
  else return pos;
  if (pos + 3 > cap) return -1;
  pos = putKey(buf, pos, k0, k1);
  buf[pos] = b;
  return pos + 1;
}

module.exports = { cutChars, varintSize, putVarint, putStr, putU64, putBool };

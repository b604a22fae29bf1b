// Test helpers: a small protocol v1 decoder (test-only, independent of the
// encoder: it reads the table, not the generated code), a UDP receiver
// standing in for the daemon, and paths.
import dgram from 'node:dgram';
import { readFileSync, existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';

export const PKG = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const REPO = resolve(PKG, '..', '..');
export const VECTORS = join(REPO, 'proto', 'vectors', 'vectors.json');
export const GEN_DOC = join(REPO, 'proto', 'gen_doc.py');
export const inRepo = existsSync(GEN_DOC) && existsSync(VECTORS);

const require = createRequire(import.meta.url);
const { TABLE } = require('../lib/fields.cjs');

export function loadVectors() {
  return JSON.parse(readFileSync(VECTORS, 'utf8'));
}

/** Datagram -> { dataset, ...fields } (strings, Numbers, booleans), or
 * throws on anything malformed. Unknown tags are kept as tag_<n>. */
export function decode(buf) {
  if (buf.length < 4 || buf[0] !== 0xBF || buf[1] !== 0xFD || buf[2] !== 1) {
    throw new Error(`bad header ${buf.subarray(0, 4).toString('hex')}`);
  }
  const ds = TABLE.datasets.find((d) => d.id === buf[3]);
  const ev = { dataset: ds ? ds.name : buf[3] };
  let pos = 4;
  const varint = () => {
    let n = 0n;
    let shift = 0n;
    for (;;) {
      if (pos >= buf.length) throw new Error('truncated varint');
      const b = buf[pos++];
      n |= BigInt(b & 0x7F) << shift;
      shift += 7n;
      if (!(b & 0x80)) return n;
    }
  };
  while (pos < buf.length) {
    const key = Number(varint());
    const tag = key >> 3;
    const wt = key & 7;
    const f = TABLE.fields.find((x) => x.tag === tag);
    const name = f ? f.name : `tag_${tag}`;
    if (wt === 0) {
      const n = varint();
      ev[name] = f && f.type === 'bool' ? n === 1n : n <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(n) : n;
    } else if (wt === 2) {
      const len = Number(varint());
      if (pos + len > buf.length) throw new Error('truncated string');
      ev[name] = buf.toString('utf8', pos, pos + len);
      pos += len;
    } else {
      throw new Error(`wire type ${wt}`);
    }
  }
  return ev;
}

/** A bound UDP socket on 127.0.0.1 that collects datagrams. */
export async function receiver() {
  const sock = dgram.createSocket('udp4');
  const got = [];
  const waiters = [];
  sock.on('message', (msg) => {
    got.push(msg);
    for (const w of waiters.splice(0)) w();
  });
  await new Promise((r) => sock.bind(0, '127.0.0.1', r));
  return {
    port: sock.address().port,
    got,
    /** Resolves once n datagrams arrived (rejects after ms). */
    async waitFor(n, ms = 5000) {
      const deadline = Date.now() + ms;
      while (got.length < n) {
        if (Date.now() > deadline) throw new Error(`got ${got.length} datagrams, want ${n}`);
        await new Promise((r) => {
          waiters.push(r);
          setTimeout(r, 50);
        });
      }
      return got;
    },
    close() {
      sock.close();
    },
  };
}

/** Resolves after the pending dgram callbacks (next ticks) have run. */
export function settle(ms = 0) {
  return new Promise((r) => setTimeout(r, ms));
}

/** A port with nothing listening (bound, then closed). */
export async function deadPort() {
  const s = dgram.createSocket('udp4');
  await new Promise((r) => s.bind(0, '127.0.0.1', r));
  const port = s.address().port;
  await new Promise((r) => s.close(r));
  return port;
}

'use strict';
// Protocol v1 encoder (proto/PROTOCOL.md, "Canonical encoding"): the 4-byte
// header, then every present field exactly once, in ascending tag order,
// with shortest varints. The per-field code is generated from
// proto/fields.def into ./fields.cjs.
//
// A field is present when the event has it (or one of its aliases, see
// ./aliases.cjs) with a value other than undefined or null that its type can
// encode; anything else (an object for a string, a negative width, NaN) is
// left out as if absent. Limits are not checked, as in the C shim: the
// daemon counts such events under rejected.<reason>.

const { TABLE, encodeFields } = require('./fields.cjs');

const MAX_DATAGRAM = 8192;   // the daemon's default --max-datagram
const MAX_UDP = 65507;       // largest UDP payload over IPv4
const PROMPT_CHARS = 120;    // the daemon keeps no more of prompt than this
const ERROR_CHARS = 500;     // nor of error_message

const MAGIC0 = parseInt(TABLE.magic.slice(0, 2), 16);
const MAGIC1 = parseInt(TABLE.magic.slice(2, 4), 16);
const VERSION = TABLE.protocol_version;
const HEADER_LEN = TABLE.header_length;

const DATASET_IDS = Object.create(null);
for (const d of TABLE.datasets) DATASET_IDS[d.name] = d.id;

/** The dataset id for a name ("image_events"), or an id 1..255 itself (for
 * a dataset newer than this package); 0 for anything else. */
function datasetId(dataset) {
  if (typeof dataset === 'string') return DATASET_IDS[dataset] || 0;
  if (typeof dataset === 'number' && dataset >= 1 && dataset <= 255 &&
      Math.floor(dataset) === dataset) return dataset;
  return 0;
}

/**
 * Encode event ev (an object) of dataset id ds into buf[0..cap). Returns the
 * datagram's length, or 0 when it does not fit cap. promptChars and
 * errorChars > 0 cut those fields to that many characters first. Getters of
 * ev that throw propagate: callers that must not throw catch around it.
 */
function encodeInto(buf, cap, ds, ev, promptChars, errorChars) {
  if (cap < HEADER_LEN) return 0;
  buf[0] = MAGIC0;
  buf[1] = MAGIC1;
  buf[2] = VERSION;
  buf[3] = ds;
  return encodeFields(buf, HEADER_LEN, cap, ev, promptChars, errorChars);
}

let scratch = null;

/**
 * One event as a new Buffer: the datagram the protocol defines for it, or
 * null when dataset is unknown, event is not an object, a getter of event
 * throws, or the datagram would not fit options.maxDatagram (default 8192).
 * No cut by default (the bytes of proto/vectors/vectors.json);
 * options.promptChars / options.errorChars cut those fields as the client
 * does (120 / 500). Never throws.
 */
function encode(dataset, event, options) {
  const ds = datasetId(dataset);
  if (ds === 0 || event === null || typeof event !== 'object') return null;
  const o = options != null && typeof options === 'object' ? options : {};
  const cap = clampDatagram(o.maxDatagram);
  if (scratch === null) scratch = Buffer.allocUnsafe(MAX_UDP);
  let n;
  try {
    n = encodeInto(scratch, cap, ds, event, o.promptChars > 0 ? o.promptChars : 0,
      o.errorChars > 0 ? o.errorChars : 0);
  } catch {
    return null;
  }
  return n === 0 ? null : Buffer.from(scratch.subarray(0, n));
}

/** maxDatagram option -> a size in 64..65507 (the daemon's range). */
function clampDatagram(v) {
  if (typeof v !== 'number' || !(v > 0)) return MAX_DATAGRAM;
  return Math.min(Math.max(Math.floor(v), 64), MAX_UDP);
}

module.exports = {
  TABLE,
  MAX_DATAGRAM,
  PROMPT_CHARS,
  ERROR_CHARS,
  HEADER_LEN,
  datasetId,
  clampDatagram,
  encodeInto,
  encode,
};

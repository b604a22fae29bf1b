'use strict';
// @birdfeeder/client: send birdfeeder events (protocol v1) from Node.js.
// CommonJS entry; index.js is the ESM entry and re-exports this module, so
// both share one implementation and one default client. See docs/node.md.

const { Client, createClient, getDefaultClient, sendTinybirdEvent, parseAddr, DEFAULT_ADDR } =
  require('./lib/client.cjs');
const { encode, datasetId, TABLE, MAX_DATAGRAM, PROMPT_CHARS, ERROR_CHARS } = require('./lib/encode.cjs');
const { middleware, annotate, skip } = require('./lib/middleware.cjs');
const { cutChars } = require('./lib/wire.cjs');
const { ALIASES } = require('./lib/aliases.cjs');

module.exports = {
  createClient,
  getDefaultClient,
  sendTinybirdEvent,
  middleware,
  annotate,
  skip,
  encode,
  datasetId,
  cutChars,
  parseAddr,
  Client,
  PROTOCOL: TABLE,
  ALIASES,
  DEFAULT_ADDR,
  MAX_DATAGRAM,
  PROMPT_CHARS,
  ERROR_CHARS,
};
// `import x from` in ESM and TypeScript's default import both see the module.
module.exports.default = module.exports;

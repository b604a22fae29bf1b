// @birdfeeder/client, ESM entry: the CommonJS implementation (index.cjs)
// re-exported, so `import` and `require` share one module instance.
import cjs from './index.cjs';

export const {
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
  PROTOCOL,
  ALIASES,
  DEFAULT_ADDR,
  MAX_DATAGRAM,
  PROMPT_CHARS,
  ERROR_CHARS,
} = cjs;

export default cjs;

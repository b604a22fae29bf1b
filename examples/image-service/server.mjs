#!/usr/bin/env node
// A tiny image generation API, instrumented with @birdfeeder/client.
//
//   BIRDFEEDER_ADDR=127.0.0.1:8190 node examples/image-service/server.mjs [--port N]
//
//   GET /prompt/<prompt>?model=flux&width=1024&height=1024&steps=4&seed=1
//       -> a small PPM image (fake generation, no network)
//       &fail=1      the model backend fails: 500, an error event
//       &delay=MS    generation takes this long (default 5)
//       Same prompt and parameters again: served from the cache (X-Cache: HIT).
//       Authorization: Bearer tok-ada (or ?token=tok-ada) picks a user.
//   GET /_stats  -> the shim's counters (not instrumented)
//
// The wiring is the plan's: the middleware starts the clock when the request
// arrives; the service annotates the request at the end of its
// cache-or-generate path (success) and in its catch block (error); the
// middleware sends one event when the response is finished or fails.
import http from 'node:http';
import { createHash } from 'node:crypto';
// In a service: import { createClient, middleware, annotate } from '@birdfeeder/client';
import { createClient, middleware, annotate } from '../../client-shim/node/index.js';

const MODELS = {
  flux: { steps: 4 },
  turbo: { steps: 2 },
  kontext: { steps: 28 },
  seedream: { steps: 20 },
  nanobanana: { steps: 1 },
  gptimage: { steps: 1, tokenPriced: true }, // priced per token: report usage
};

// Stand-in for the service's auth: token -> auth result.
const USERS = {
  'tok-ada': { userId: 'u_ada', username: 'ada', tier: 'flower' },
  'tok-bob': { userId: 'u_bob', username: 'bob', tier: 'nectar' },
  'tok-sam': { userId: 'u_sam', tier: 'seed' },
};

const birdfeeder = createClient(); // $BIRDFEEDER_ADDR, else 127.0.0.1:8190
const track = middleware({
  client: birdfeeder,
  dataset: 'image_events',
  trustProxy: process.env.TRUST_PROXY === '1',
  requestId: (req) => req.headers['x-request-id'],
});

const cache = new Map();

class HttpError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function authenticate(req, url) {
  const m = /^Bearer\s+(\S+)$/i.exec(req.headers.authorization || '');
  const token = m ? m[1] : url.searchParams.get('token');
  return (token && USERS[token]) || { tier: 'anonymous' };
}

function intParam(url, name, def, min, max) {
  const raw = url.searchParams.get(name);
  if (raw === null || raw === '') return def;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min || n > max) {
    throw new HttpError(400, `${name} must be an integer from ${min} to ${max}`);
  }
  return n;
}

function parseParams(req, url) {
  const prompt = decodeURIComponent(url.pathname.slice('/prompt/'.length));
  const model = url.searchParams.get('model') || 'flux';
  return {
    prompt,
    model,
    width: intParam(url, 'width', 1024, 64, 2048),
    height: intParam(url, 'height', 1024, 64, 2048),
    steps: intParam(url, 'steps', MODELS[model] ? MODELS[model].steps : 4, 1, 100),
    seed: intParam(url, 'seed', 42, 0, 2 ** 31),
    delay: intParam(url, 'delay', 5, 0, 2000),
    fail: url.searchParams.get('fail') === '1',
  };
}

/** gptimage is priced per token: what the provider would report. */
function imageUsage(p) {
  return { prompt_tokens: Math.ceil(p.prompt.length / 4) + 8, completion_tokens: Math.round(p.width * p.height / 256) };
}

/** A 16x16 PPM whose colours depend on the parameters. */
function fakeImage(p) {
  const h = createHash('sha256').update(JSON.stringify(p)).digest();
  const header = Buffer.from('P6\n16 16\n255\n');
  const px = Buffer.alloc(16 * 16 * 3);
  for (let i = 0; i < px.length; i++) px[i] = h[i % h.length] ^ (i & 0xFF);
  return Buffer.concat([header, px]);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function generate(p) {
  if (!MODELS[p.model]) throw new HttpError(400, `unknown model ${p.model}`);
  await sleep(p.delay);
  if (p.fail) throw new Error(`${p.model} backend unavailable (simulated)`);
  return fakeImage(p);
}

async function checkCacheAndGenerate(req, res, p, auth) {
  const key = JSON.stringify([p.model, p.prompt, p.width, p.height, p.steps, p.seed]);
  let entry = cache.get(key);
  const cached = entry !== undefined;
  if (!cached) {
    entry = { image: await generate(p), usage: MODELS[p.model].tokenPriced ? imageUsage(p) : null };
    cache.set(key, entry);
  }
  // birdfeeder: the end of the cache-or-generate path, where everything the
  // event needs is known. (The daemon prices it: a cache hit costs 0.)
  annotate(req, {
    model: p.model, prompt: p.prompt, width: p.width, height: p.height, steps: p.steps,
    cached, auth, usage: entry.usage,
  });
  const headers = { 'Content-Type': 'image/x-portable-pixmap', 'X-Cache': cached ? 'HIT' : 'MISS' };
  if (entry.usage) {
    headers['X-Prompt-Tokens'] = String(entry.usage.prompt_tokens);
    headers['X-Completion-Tokens'] = String(entry.usage.completion_tokens);
  }
  res.writeHead(200, headers);
  res.end(entry.image);
}

async function handleImage(req, res, url) {
  const auth = authenticate(req, url);
  let p = null;
  try {
    p = parseParams(req, url);
    await checkCacheAndGenerate(req, res, p, auth);
  } catch (err) {
    // birdfeeder: the error path. One event still: the middleware sends it
    // when this response finishes.
    annotate(req, p ? {
      model: p.model, prompt: p.prompt, width: p.width, height: p.height, steps: p.steps,
      cached: false, auth, error: err,
    } : { model: url.searchParams.get('model') || 'flux', cached: false, auth, error: err });
    const status = err instanceof HttpError ? err.status : 500;
    res.writeHead(status, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify({ error: err.message }));
  }
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://localhost');
  if (req.method === 'GET' && url.pathname.startsWith('/prompt/')) {
    track(req, res);
    handleImage(req, res, url);
  } else if (url.pathname === '/_stats') {
    res.writeHead(200, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify(birdfeeder.stats()));
  } else {
    res.writeHead(404, { 'Content-Type': 'application/json' });
    res.end('{"error":"not found"}');
  }
});

function portArg() {
  const i = process.argv.indexOf('--port');
  const v = i > 0 ? process.argv[i + 1] : process.env.PORT;
  return v === undefined ? 8080 : Number(v);
}

server.listen(portArg(), '127.0.0.1', () => {
  process.stdout.write(`listening http://127.0.0.1:${server.address().port}\n`);
});

for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    server.close();
    server.closeAllConnections();
    birdfeeder.close();
  });
}

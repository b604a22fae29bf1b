#!/usr/bin/env node
// A tiny OpenAI-compatible text generation API, instrumented with
// @birdfeeder/client.
//
//   BIRDFEEDER_ADDR=127.0.0.1:8190 node examples/text-service/server.mjs [--port N]
//
//   POST /v1/chat/completions  {"model", "messages": [...], "stream"?: true}
//        -> chat.completion JSON with usage (or server-sent events when
//           stream is true); a fake completion, no network
//   GET  /<prompt>?model=gpt-5-nano  -> the completion as plain text
//   Either: ?fail=1 (or "fail": true in the body) makes the upstream fail
//           (502); ?delay=MS sets the generation time (default 5); the same
//           request again is a cache hit. Authorization: Bearer tok-ada
//           (or ?token=) picks a user. Usage is also in X-*-Tokens headers.
//   GET  /_stats -> the shim's counters (not instrumented)
//
// Wiring, as in the plan: the middleware starts the clock when the request
// arrives; sendOpenAIResponse (success path) and sendErrorResponse (error
// path) each annotate the request; exactly one of them answers a request,
// and the middleware sends one event when the response ends.
import http from 'node:http';
// In a service: import { createClient, middleware, annotate } from '@birdfeeder/client';
import { createClient, middleware, annotate } from '../../client-shim/node/index.js';

const MODELS = new Set(['gpt-5-nano', 'gpt-4.1-nano', 'deepseek-r1']);
const DEFAULT_MODEL = 'gpt-5-nano';

const USERS = {
  'tok-ada': { userId: 'u_ada', username: 'ada', tier: 'flower' },
  'tok-bob': { userId: 'u_bob', username: 'bob', tier: 'nectar' },
  'tok-sam': { userId: 'u_sam', tier: 'seed' },
};

const birdfeeder = createClient(); // $BIRDFEEDER_ADDR, else 127.0.0.1:8190
const track = middleware({
  client: birdfeeder,
  dataset: 'llm_events',
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

const tokens = (text) => Math.ceil(String(text).length / 4);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** The fake model: a deterministic answer and an OpenAI-style usage. */
async function complete(model, messages, delay, fail) {
  if (!MODELS.has(model)) throw new HttpError(400, `unknown model ${model}`);
  if (!Array.isArray(messages) || messages.length === 0) {
    throw new HttpError(400, 'messages must be a non-empty array');
  }
  await sleep(delay);
  if (fail) throw new HttpError(502, `upstream ${model} timed out (simulated)`);
  const last = String(messages[messages.length - 1].content ?? '');
  const content = `You said: ${last.slice(0, 200)}`;
  const perMessage = messages.map((m) => tokens(m.content ?? '') + 3);
  const promptTokens = perMessage.reduce((a, b) => a + b, 0);
  // Prompt caching upstream: the conversation before the last message.
  const cachedTokens = promptTokens - perMessage[perMessage.length - 1];
  const completionTokens = tokens(content);
  return {
    id: `chatcmpl-${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}`,
    object: 'chat.completion',
    created: Math.floor(Date.now() / 1000),
    model,
    choices: [{ index: 0, message: { role: 'assistant', content }, finish_reason: 'stop' }],
    usage: {
      prompt_tokens: promptTokens,
      completion_tokens: completionTokens,
      total_tokens: promptTokens + completionTokens,
      prompt_tokens_details: { cached_tokens: cachedTokens },
    },
  };
}

function usageHeaders(usage) {
  return {
    'X-Prompt-Tokens': String(usage.prompt_tokens),
    'X-Completion-Tokens': String(usage.completion_tokens),
    'X-Cached-Tokens': String(usage.prompt_tokens_details.cached_tokens),
  };
}

/** Success path: answer, and tell birdfeeder what was served. */
function sendOpenAIResponse(req, res, completion, { cached, stream, plain, auth }) {
  annotate(req, { model: completion.model, usage: completion.usage, cached, stream, auth });
  const headers = { ...usageHeaders(completion.usage), 'X-Cache': cached ? 'HIT' : 'MISS' };
  if (plain) {
    res.writeHead(200, { ...headers, 'Content-Type': 'text/plain; charset=utf-8' });
    res.end(completion.choices[0].message.content);
  } else if (stream) {
    res.writeHead(200, { ...headers, 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache' });
    const base = { id: completion.id, object: 'chat.completion.chunk', created: completion.created, model: completion.model };
    const words = completion.choices[0].message.content.split(/(?<= )/);
    for (const w of words) {
      res.write(`data: ${JSON.stringify({ ...base, choices: [{ index: 0, delta: { content: w }, finish_reason: null }] })}\n\n`);
    }
    res.write(`data: ${JSON.stringify({ ...base, choices: [{ index: 0, delta: {}, finish_reason: 'stop' }] })}\n\n`);
    res.write(`data: ${JSON.stringify({ ...base, choices: [], usage: completion.usage })}\n\n`);
    res.end('data: [DONE]\n\n');
  } else {
    res.writeHead(200, { ...headers, 'Content-Type': 'application/json' });
    res.end(JSON.stringify(completion));
  }
}

/** Error path: answer with an OpenAI-style error, and tell birdfeeder. */
function sendErrorResponse(req, res, err, { model, stream, auth }) {
  annotate(req, { model, error: err, cached: false, stream, auth });
  const status = err instanceof HttpError ? err.status : 500;
  res.writeHead(status, { 'Content-Type': 'application/json' });
  res.end(JSON.stringify({ error: { message: err.message, type: status === 502 ? 'upstream_error' : 'invalid_request_error' } }));
}

function readJson(req, limit = 1 << 20) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (c) => {
      size += c.length;
      if (size > limit) reject(new HttpError(413, 'request body too large'));
      else chunks.push(c);
    });
    req.on('end', () => {
      try {
        resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')));
      } catch {
        reject(new HttpError(400, 'request body is not valid JSON'));
      }
    });
    req.on('error', reject);
  });
}

async function handleCompletion(req, res, url) {
  const auth = authenticate(req, url);
  const plain = req.method === 'GET';
  let model = url.searchParams.get('model') || DEFAULT_MODEL;
  let stream = false;
  try {
    let messages;
    let fail = url.searchParams.get('fail') === '1';
    if (plain) {
      messages = [{ role: 'user', content: decodeURIComponent(url.pathname.slice(1)) }];
    } else {
      const body = await readJson(req);
      if (body === null || typeof body !== 'object') throw new HttpError(400, 'body must be an object');
      model = typeof body.model === 'string' && body.model ? body.model : DEFAULT_MODEL;
      stream = body.stream === true;
      fail = fail || body.fail === true;
      messages = body.messages;
    }
    const delayRaw = Number(url.searchParams.get('delay') ?? 5);
    const delay = Number.isFinite(delayRaw) ? Math.min(Math.max(delayRaw, 0), 2000) : 5;
    const key = JSON.stringify([model, messages]);
    let completion = fail ? undefined : cache.get(key);
    const cached = completion !== undefined;
    if (!cached) {
      completion = await complete(model, messages, delay, fail);
      cache.set(key, completion);
    }
    sendOpenAIResponse(req, res, completion, { cached, stream, plain, auth });
  } catch (err) {
    sendErrorResponse(req, res, err, { model, stream, auth });
  }
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://localhost');
  if (url.pathname === '/_stats') {
    res.writeHead(200, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify(birdfeeder.stats()));
  } else if ((req.method === 'POST' && url.pathname === '/v1/chat/completions') ||
      (req.method === 'GET' && url.pathname.length > 1 && url.pathname !== '/favicon.ico')) {
    track(req, res);
    handleCompletion(req, res, url);
  } else {
    res.writeHead(404, { 'Content-Type': 'application/json' });
    res.end('{"error":{"message":"not found"}}');
  }
});

function portArg() {
  const i = process.argv.indexOf('--port');
  const v = i > 0 ? process.argv[i + 1] : process.env.PORT;
  return v === undefined ? 8081 : Number(v);
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

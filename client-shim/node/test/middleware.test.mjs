// The request instrumentation: one event per request, on finish or failure.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { createRequire } from 'node:module';
import { decode, receiver, settle } from './helpers.mjs';

const require = createRequire(import.meta.url);
const { createClient, middleware, annotate, skip } = require('../index.cjs');

/** A node:http server whose handler is handler(req, res); returns its URL. */
async function serve(handler) {
  const server = http.createServer(handler);
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return { server, url: `http://127.0.0.1:${server.address().port}` };
}

async function setup(options, handler) {
  const rx = await receiver();
  const client = createClient({ port: rx.port });
  const track = middleware({ client, ...options });
  const { server, url } = await serve((req, res) => {
    track(req, res);
    handler(req, res);
  });
  return {
    rx, client, track, url,
    async events(n) {
      const got = await rx.waitFor(n);
      await settle(60); // and no more than n
      assert.equal(rx.got.length, n, 'one event per request');
      return got.map(decode);
    },
    close() {
      server.close();
      server.closeAllConnections();
      client.close();
      rx.close();
    },
  };
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

test('success: annotated fields, timing, status, referrer and socket IP', async () => {
  const t = await setup({ dataset: 'image_events' }, async (req, res) => {
    await sleep(25);
    annotate(req, {
      model: 'flux', prompt: 'a red fox', width: 512, height: 512, steps: 4, cached: false,
      auth: { userId: 'u_1', username: 'ada', tier: 'flower' },
    });
    res.end('img');
  });
  try {
    const before = Date.now();
    const r = await fetch(`${t.url}/prompt/fox`, {
      headers: { referer: 'https://example.org/page?x=1', 'x-forwarded-for': '203.0.113.9' },
    });
    assert.equal(await r.text(), 'img');
    const [ev] = await t.events(1);
    assert.equal(ev.dataset, 'image_events');
    assert.equal(ev.model, 'flux');
    assert.equal(ev.prompt, 'a red fox');
    assert.equal(ev.width, 512);
    assert.equal(ev.steps, 4);
    assert.equal(ev.cached, false);
    assert.equal(ev.user_id, 'u_1');
    assert.equal(ev.username, 'ada');
    assert.equal(ev.tier, 'flower');
    assert.equal(ev.status, 'success');
    assert.equal(ev.error_message, undefined);
    assert.equal(ev.referrer, 'https://example.org/page?x=1'); // the daemon cuts it
    assert.equal(ev.ip, '127.0.0.1'); // X-Forwarded-For not trusted by default
    assert.ok(ev.duration_ms >= 20 && ev.duration_ms < 5000, `duration ${ev.duration_ms}`);
    assert.ok(ev.start_time >= before - 5 && ev.start_time <= Date.now());
    assert.equal(ev.end_time, ev.start_time + ev.duration_ms);
  } finally {
    t.close();
  }
});

test('error paths: annotated error, HTTP status >= 400, and aborted responses', async () => {
  const t = await setup({ dataset: 'llm_events', model: 'default-model' }, (req, res) => {
    const u = new URL(req.url, 'http://x');
    if (u.pathname === '/fail') {
      annotate(req, { model: 'gpt-5-nano', error: new Error('upstream timeout') });
      res.statusCode = 502;
      res.end('{}');
    } else if (u.pathname === '/404') {
      res.statusCode = 404;
      res.end();
    } else if (u.pathname === '/hang') {
      annotate(res, { model: 'gpt-5-nano', stream: true });
      res.writeHead(200);
      res.write('partial'); // never ends: the client goes away
    } else {
      annotate(req, { model: 'gpt-5-nano', usage: { prompt_tokens: 3, completion_tokens: 4 } });
      res.end('ok');
    }
  });
  try {
    await (await fetch(`${t.url}/fail`)).text();
    await (await fetch(`${t.url}/404`)).text();
    await (await fetch(`${t.url}/ok`)).text();
    await new Promise((resolve) => {
      const req = http.get(`${t.url}/hang`, (res) => {
        res.once('data', () => {
          req.destroy();
          resolve();
        });
      });
      req.on('error', () => {});
    });
    const evs = await t.events(4);
    const [fail, notFound, ok, hang] = evs;
    assert.equal(fail.status, 'error');
    assert.equal(fail.error_message, 'upstream timeout');
    assert.equal(fail.model, 'gpt-5-nano');
    assert.equal(notFound.status, 'error');
    assert.equal(notFound.error_message, 'HTTP 404 Not Found');
    assert.equal(notFound.model, 'default-model');
    assert.equal(ok.status, 'success');
    assert.equal(ok.prompt_tokens, 3);
    assert.equal(ok.completion_tokens, 4);
    assert.equal(hang.status, 'error');
    assert.match(hang.error_message, /closed before the response was complete/);
    assert.equal(hang.stream, true);
  } finally {
    t.close();
  }
});

test('trustProxy: X-Forwarded-For only when told, by hop count, with ports removed', async () => {
  const rx = await receiver();
  const client = createClient({ port: rx.port });
  const tracks = [
    middleware({ client, trustProxy: true }),
    middleware({ client, trustProxy: 1 }),
    middleware({ client, trustProxy: 2 }),
    middleware({ client, trustProxy: true, ipHeader: 'CF-Connecting-IP' }),
    middleware({ client }),
  ];
  let which = 0;
  const { server, url } = await serve((req, res) => {
    tracks[which](req, res);
    annotate(req, { model: 'm' });
    res.end();
  });
  try {
    const headers = { 'x-forwarded-for': '198.51.100.7:4444, 10.0.0.2', 'cf-connecting-ip': '[2001:db8::1]:443' };
    for (which = 0; which < tracks.length; which++) {
      await (await fetch(url, { headers })).text();
    }
    const ips = (await rx.waitFor(tracks.length)).map((b) => decode(b).ip);
    assert.deepEqual(ips, ['198.51.100.7', '10.0.0.2', '198.51.100.7', '2001:db8::1', '127.0.0.1']);
  } finally {
    server.close();
    server.closeAllConnections();
    client.close();
    rx.close();
  }
});

test('Express style: next() is called, res.locals.birdfeeder is read, one event per request', async () => {
  const rx = await receiver();
  const client = createClient({ port: rx.port });
  const track = middleware({ client, dataset: 'llm_events', requestId: (req) => req.headers['x-request-id'] });
  // A minimal Express-like chain: app-level and route-level mounting of the
  // same middleware must not double the event.
  const chain = [track, track, (req, res, next) => {
    res.locals = res.locals || {};
    next();
  }, (req, res) => {
    res.locals.birdfeeder = { model: 'gpt-4.1-nano', promptTokens: 12, cached: true, user: 'u_9' };
    res.statusCode = 200;
    res.end('{"ok":true}');
  }];
  const { server, url } = await serve((req, res) => {
    let i = 0;
    const next = () => chain[i++](req, res, next);
    next();
  });
  try {
    await (await fetch(url, { headers: { 'x-request-id': 'req-42' } })).text();
    await (await fetch(url, { headers: { 'x-request-id': 'x'.repeat(65) } })).text();
    const got = await rx.waitFor(2);
    await settle(60);
    assert.equal(rx.got.length, 2);
    const [a, b] = got.map(decode);
    assert.equal(a.id, 'req-42');
    assert.equal(a.model, 'gpt-4.1-nano');
    assert.equal(a.prompt_tokens, 12);
    assert.equal(a.cached, true);
    assert.equal(a.user_id, 'u_9');
    assert.equal(b.id, undefined); // over 64 bytes: left to the daemon
  } finally {
    server.close();
    server.closeAllConnections();
    client.close();
    rx.close();
  }
});

test('skip(), annotate {skip}, fields() and auth() options; callbacks that throw', async () => {
  const rx = await receiver();
  const client = createClient({ port: rx.port });
  const errors = [];
  const track = middleware({
    client,
    auth: (req) => (req.headers.authorization ? { userId: 'u_auth', tier: 'nectar' } : null),
    fields: (req) => {
      if (req.url === '/throw') throw new Error('fields() broke');
      return { steps: 8 };
    },
    onError: (e) => errors.push(e.message),
  });
  const { server, url } = await serve((req, res) => {
    track(req, res);
    if (req.url === '/health') skip(req);
    if (req.url === '/quiet') annotate(req, { skip: true });
    annotate(req, { model: 'flux' });
    res.end();
  });
  try {
    for (const path of ['/health', '/quiet', '/throw']) await (await fetch(url + path)).text();
    await (await fetch(url + '/gen', { headers: { authorization: 'Bearer t' } })).text();
    const got = await rx.waitFor(1);
    await settle(60);
    assert.equal(got.length, 1);
    const ev = decode(got[0]);
    assert.equal(ev.user_id, 'u_auth');
    assert.equal(ev.tier, 'nectar');
    assert.equal(ev.steps, 8);
    assert.deepEqual(errors, ['fields() broke']);
    assert.equal(client.stats().failed, 1);
    // Untracked objects: annotate/skip say so and do nothing.
    assert.equal(annotate({}, { model: 'x' }), false);
    assert.equal(skip(null), false);
    assert.doesNotThrow(() => track(null, undefined));
    assert.doesNotThrow(() => track({}, {}, () => {}));
  } finally {
    server.close();
    server.closeAllConnections();
    client.close();
    rx.close();
  }
});

test('many concurrent requests: exactly one event each', async () => {
  const t = await setup({ dataset: 'image_events' }, async (req, res) => {
    annotate(req, { model: 'turbo', id: req.url.slice(1) });
    await sleep(Math.random() * 10);
    res.end('x');
  });
  try {
    const n = 100;
    await Promise.all(Array.from({ length: n }, (_, i) => fetch(`${t.url}/r${i}`).then((r) => r.text())));
    const evs = await t.events(n);
    assert.deepEqual(evs.map((e) => e.id).sort(), Array.from({ length: n }, (_, i) => `r${i}`).sort());
  } finally {
    t.close();
  }
});

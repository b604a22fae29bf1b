// The client: sending, counters, cuts, garbage, missing daemon, unref.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { PKG, decode, receiver, settle, deadPort } from './helpers.mjs';
import * as esm from '../index.js';

const require = createRequire(import.meta.url);
const bf = require('../index.cjs');
const { createClient, encode, cutChars, parseAddr } = bf;

function sum(s) {
  return s.sent + s.dropped + s.oversize + s.failed;
}

/** Run an ESM script in a child node with env; returns { status, stdout, stderr, ms }. */
function runNode(script, env = {}, timeout = 10000) {
  const t0 = Date.now();
  const p = spawnSync(process.execPath, ['--input-type=module', '-e', script], {
    cwd: PKG, env: { ...process.env, ...env }, encoding: 'utf8', timeout,
  });
  return { status: p.status, signal: p.signal, stdout: p.stdout, stderr: p.stderr, ms: Date.now() - t0 };
}

test('image(), llm() and send() deliver one datagram each, with the right bytes', async () => {
  const rx = await receiver();
  const c = createClient({ host: '127.0.0.1', port: rx.port });
  try {
    assert.equal(c.address, `127.0.0.1:${rx.port}`);
    assert.equal(c.error, null);
    const img = { id: 'i1', model: 'flux', prompt: 'a fox', width: 1024, height: 768, steps: 4, cached: false };
    const llm = { id: 'l1', model: 'gpt-5-nano', prompt_tokens: 10, completion_tokens: 5, stream: true };
    assert.equal(c.image(img), true);
    assert.equal(c.llm(llm), true);
    assert.equal(c.send('llm_events', { model: 'm' }), true);
    assert.equal(c.send(1, { model: 'n' }), true);
    const got = await rx.waitFor(4);
    assert.deepEqual(got[0], encode('image_events', img));
    assert.deepEqual(got[1], encode('llm_events', llm));
    assert.deepEqual(decode(got[2]), { dataset: 'llm_events', model: 'm' });
    assert.deepEqual(decode(got[3]), { dataset: 'image_events', model: 'n' });
    await settle(5);
    assert.deepEqual(c.stats(), { sent: 4, dropped: 0, oversize: 0, failed: 0 });
  } finally {
    c.close();
    rx.close();
  }
});

test('sends return a boolean synchronously, never a promise', async () => {
  const rx = await receiver();
  const c = createClient({ port: rx.port });
  try {
    for (const r of [c.image({ model: 'a' }), c.llm({ model: 'b' }), c.send('x', {}), c.image(null)]) {
      assert.equal(typeof r, 'boolean');
    }
    assert.equal(bf.sendTinybirdEvent({ model: 'z' }), undefined);
  } finally {
    c.close();
    rx.close();
  }
});

test('a burst of events all arrive, in order, from one reused buffer', async () => {
  const rx = await receiver();
  const c = createClient({ port: rx.port });
  const n = 500;
  try {
    // In chunks that fit the receiver's socket buffer; the next chunk waits
    // until the receiver has read this one, so a loaded machine (a slow
    // reader) cannot overflow the buffer and fail the test.
    for (let i = 0; i < n; i++) {
      c.llm({ id: `e${i}`, model: 'gpt-5-nano', prompt_tokens: i });
      if (i % 100 === 99) await rx.waitFor(i + 1);
    }
    const got = await rx.waitFor(n);
    got.forEach((b, i) => assert.deepEqual(decode(b),
      { dataset: 'llm_events', id: `e${i}`, model: 'gpt-5-nano', prompt_tokens: i }));
    await settle(5);
    assert.deepEqual(c.stats(), { sent: n, dropped: 0, oversize: 0, failed: 0 });
  } finally {
    c.close();
    rx.close();
  }
});

test('camelCase aliases of the seed plan, Error objects and usage', async () => {
  const rx = await receiver();
  const c = createClient({ port: rx.port });
  try {
    c.image({
      id: 'req-1', startTime: 1764441205123, endTime: 1764441207473, duration: 2350.4,
      model: 'flux', user: 'u_1', username: 'ada', tier: 'seed', status: 'error',
      error: new Error('boom'), referer: 'https://example.org/x', cached: false,
    });
    c.llm({
      model: 'gpt-4.1-nano', userId: 'u_2',
      usage: { prompt_tokens: 100, completion_tokens: 20, total_tokens: 120, prompt_tokens_details: { cached_tokens: 64 } },
    });
    // The field's own name wins over an alias, and over usage.
    c.llm({ model: 'm', user_id: 'own', user: 'alias', prompt_tokens: 7, usage: { prompt_tokens: 9 } });
    const got = await rx.waitFor(3);
    assert.deepEqual(decode(got[0]), {
      dataset: 'image_events', id: 'req-1', user_id: 'u_1', username: 'ada', tier: 'seed',
      model: 'flux', start_time: 1764441205123, end_time: 1764441207473, duration_ms: 2350,
      status: 'error', error_message: 'boom', cached: false, referrer: 'https://example.org/x',
    });
    assert.deepEqual(decode(got[1]), {
      dataset: 'llm_events', user_id: 'u_2', model: 'gpt-4.1-nano',
      prompt_tokens: 100, completion_tokens: 20, cached_tokens: 64,
    });
    assert.deepEqual(decode(got[2]), { dataset: 'llm_events', user_id: 'own', model: 'm', prompt_tokens: 7 });
  } finally {
    c.close();
    rx.close();
  }
});

test('prompt is cut to 120 code points, never inside a surrogate pair', async () => {
  assert.equal(cutChars('p'.repeat(200), 120), 'p'.repeat(120));
  assert.equal(cutChars('short', 120), 'short');
  // 119 letters then a cat (two UTF-16 units): the cat is the 120th character.
  const cat = '\u{1F408}';
  assert.equal(cutChars('a'.repeat(119) + cat + 'b', 120), 'a'.repeat(119) + cat);
  assert.equal(cutChars(cat.repeat(150), 120), cat.repeat(120));
  // A lone surrogate counts as one character (it is sent as U+FFFD).
  assert.equal(cutChars('\uD800'.repeat(130), 120), '\uD800'.repeat(120));

  const rx = await receiver();
  const c = createClient({ port: rx.port });
  try {
    const prompts = ['p'.repeat(300), 'é'.repeat(119) + cat + 'tail', cat.repeat(200), 'ok'];
    for (const prompt of prompts) c.image({ model: 'flux', prompt });
    c.llm({ model: 'm', error_message: 'x'.repeat(2000) });
    const got = (await rx.waitFor(5)).map(decode);
    assert.equal(got[0].prompt, 'p'.repeat(120));
    assert.equal(got[1].prompt, 'é'.repeat(119) + cat);
    assert.equal([...got[2].prompt].length, 120);
    assert.equal(got[2].prompt, cat.repeat(120));
    assert.equal(got[3].prompt, 'ok');
    assert.equal(got[4].error_message, 'x'.repeat(500));
  } finally {
    c.close();
    rx.close();
  }
});

test('an event over 8192 bytes is counted as oversize and not sent', async () => {
  const rx = await receiver();
  const c = createClient({ port: rx.port });
  try {
    // prompt is cut, but referrer is not: 9000 bytes of it cannot fit.
    assert.equal(c.image({ model: 'flux', referrer: 'r'.repeat(9000) }), false);
    assert.equal(c.image({ model: 'flux', referrer: 'é'.repeat(4100) }), false); // 8200 bytes
    assert.equal(c.image({ model: 'flux', prompt: 'p'.repeat(100000) }), true);  // cut first
    // Just under: header 4 + model 6 + key 2 + length 2 + 8178 = 8192.
    assert.equal(c.image({ model: 'flux', referrer: 'r'.repeat(8178) }), true);
    assert.equal(c.image({ model: 'flux', referrer: 'r'.repeat(8179) }), false);
    const got = await rx.waitFor(2);
    assert.equal(got[1].length, 8192);
    await settle(5);
    assert.deepEqual(c.stats(), { sent: 2, dropped: 0, oversize: 3, failed: 0 });
  } finally {
    c.close();
    rx.close();
  }
});

test('never throws on garbage; each call counts exactly once', async () => {
  const rx = await receiver();
  const c = createClient({ port: rx.port });
  const throwing = { get model() { throw new Error('getter'); } };
  const proxy = new Proxy({}, { get() { throw new Error('trap'); } });
  const cyclic = { model: 'm' };
  cyclic.self = cyclic;
  const weird = {
    model: { toString() { throw new Error('no'); } }, id: Symbol('s'), width: -5, height: NaN,
    steps: Infinity, start_time: new Date(NaN), end_time: 2n ** 70n, duration_ms: '12abc',
    cached: 'yes', stream: 2, prompt: { a: 1 }, user_id: [1, 2], error: { message: 42 },
    usage: 'lots', referrer: () => 'x', ip: true, prompt_tokens: -1n,
  };
  const garbage = [undefined, null, 0, 1, '', 'str', true, Symbol('x'), 10n, [], [1, 2], () => 1,
    new Date(), new Map([['model', 'm']]), Object.create(null), throwing, proxy, cyclic, weird,
    { model: null }, { model: undefined }, { model: 'ok', width: 1e300 }];
  let calls = 0;
  try {
    for (const g of garbage) {
      assert.doesNotThrow(() => c.image(g));
      assert.doesNotThrow(() => c.llm(g));
      assert.doesNotThrow(() => c.send('image_events', g));
      calls += 3;
    }
    for (const ds of [undefined, null, '', 'nope', 0, 256, 1.5, -1, {}, Symbol('d'), 'IMAGE_EVENTS']) {
      assert.doesNotThrow(() => c.send(ds, { model: 'm' }));
      calls++;
    }
    for (const args of [[], [undefined], [{ model: 'm' }]]) {
      assert.doesNotThrow(() => c.send(...args));
      calls++;
    }
    await settle(20);
    const s = c.stats();
    assert.equal(sum(s), calls);
    assert.equal(s.dropped, 0);
    // Objects (even empty or odd) go out with whatever fields could be
    // encoded; the daemon rejects what it must (no model).
    assert.ok(s.sent > 0 && s.failed > 0, JSON.stringify(s));
    // What was sent is well-formed, and the odd values were left out.
    for (const b of rx.got) decode(b);
    const w = encode('image_events', weird);
    assert.deepEqual(decode(w), { dataset: 'image_events' });
    // A fraction is rounded; 1e300 is no uint64.
    assert.deepEqual(decode(encode('image_events', { model: 'ok', width: 1e300, duration: 1.6 })),
      { dataset: 'image_events', model: 'ok', duration_ms: 2 });
  } finally {
    c.close();
    rx.close();
  }
});

test('no daemon listening: events are counted as dropped, nothing throws', async () => {
  const port = await deadPort();
  const c = createClient({ host: '127.0.0.1', port });
  const n = 20;
  try {
    for (let i = 0; i < n; i++) {
      assert.doesNotThrow(() => c.llm({ model: 'm', id: `x${i}` }));
      // Let the kernel's refusal (ICMP port unreachable) come back between
      // sends, as it does for a service's spaced requests.
      await settle(2);
    }
    await settle(50);
    const s = c.stats();
    assert.equal(sum(s), n);
    assert.equal(s.oversize + s.failed, 0);
    // Each refusal is reported once, on the next send or read of the
    // socket; the kernel may fold two into one report, so allow a little.
    assert.ok(s.dropped >= n - 2, JSON.stringify(s));
  } finally {
    c.close();
  }
});

test('send errors are counted as in the C shim; a kernel queue drops new events', async () => {
  const rx = await receiver();
  const c = createClient({ port: rx.port });
  try {
    // Stub the socket's send: each call fails with the next errno code.
    const codes = ['EAGAIN', 'ENOBUFS', 'EWOULDBLOCK', 'EPERM', 'EMSGSIZE', null];
    const real = c._sock.send.bind(c._sock);
    c._sock.send = (buf, off, len, cb) => {
      const code = codes.shift();
      if (code === null) return real(buf, off, len, cb);
      process.nextTick(cb, Object.assign(new Error(code), { code }));
    };
    for (let i = 0; i < 6; i++) assert.equal(c.llm({ model: 'm' }), true);
    await settle(10);
    assert.deepEqual(c.stats(), { sent: 1, dropped: 3, oversize: 0, failed: 2 });
    // While libuv holds a datagram (the kernel said EAGAIN), the next
    // events are dropped at once, without touching the buffer it points at.
    const held = Buffer.from(c._buf);
    c._sock.getSendQueueCount = () => 1;
    assert.equal(c.llm({ model: 'other', id: 'x'.repeat(50) }), false);
    assert.deepEqual(c._buf, held);
    assert.deepEqual(c.stats(), { sent: 1, dropped: 4, oversize: 0, failed: 2 });
  } finally {
    c.close();
    rx.close();
  }
});

test('stats() returns a fresh snapshot; close() is idempotent; sends after close fail', async () => {
  const rx = await receiver();
  const c = createClient({ port: rx.port });
  const s1 = c.stats();
  s1.sent = 99;
  assert.deepEqual(c.stats(), { sent: 0, dropped: 0, oversize: 0, failed: 0 });
  c.image({ model: 'm' });
  await settle(5);
  c.close();
  c.close();
  assert.equal(c.image({ model: 'm' }), false);
  assert.deepEqual(c.stats(), { sent: 1, dropped: 0, oversize: 0, failed: 1 });
  rx.close();
});

test('address from options, $BIRDFEEDER_ADDR, or 127.0.0.1:8190', () => {
  const saved = process.env.BIRDFEEDER_ADDR;
  try {
    delete process.env.BIRDFEEDER_ADDR;
    let c = createClient();
    assert.equal(c.address, '127.0.0.1:8190');
    c.close();
    process.env.BIRDFEEDER_ADDR = 'localhost:9001';
    c = createClient();
    assert.equal(c.address, '127.0.0.1:9001');
    c.close();
    c = createClient({ addr: '127.0.0.2:7' });
    assert.equal(c.address, '127.0.0.2:7');
    c.close();
    c = createClient({ port: 9002 }); // host/port beat the environment
    assert.equal(c.address, '127.0.0.1:9002');
    c.close();
    c = createClient({ host: '::1', port: '9003' });
    assert.equal(c.address, '[::1]:9003');
    c.close();
  } finally {
    if (saved === undefined) delete process.env.BIRDFEEDER_ADDR;
    else process.env.BIRDFEEDER_ADDR = saved;
  }
  assert.deepEqual(parseAddr('[::1]:8190'), { host: '::1', port: 8190, family: 6 });
  assert.deepEqual(parseAddr('10.0.0.1:1'), { host: '10.0.0.1', port: 1, family: 4 });
  // The C shim's unix:/PATH form is refused with the reason.
  assert.match(parseAddr('unix:/run/birdfeeder/events.sock').message,
    /node:dgram has no Unix datagram sockets/);
  for (const bad of ['', '8190', ':8190', '127.0.0.1', '127.0.0.1:0', '127.0.0.1:65536',
    '127.0.0.1:x', 'example.com:8190', '::1:8190', '[::1]8190', '[nope]:1', '1.2.3.4:12345678',
    '[fe80::1%lo]:8190']) {
    assert.ok(parseAddr(bad) instanceof Error, bad);
  }
});

test('a bad address (or options that throw) warns, never throws, and counts events as failed', async () => {
  const warnings = [];
  const onWarning = (w) => warnings.push(w);
  process.on('warning', onWarning);
  try {
    assert.doesNotThrow(() => createClient(new Proxy({}, { get() { throw new Error('x'); } })).close());
    const c = createClient({ addr: 'daemon.internal:8190' });
    assert.ok(c.error instanceof Error);
    assert.equal(c.address, null);
    assert.equal(c.image({ model: 'm' }), false);
    c.close();
    assert.deepEqual(c.stats(), { sent: 0, dropped: 0, oversize: 0, failed: 1 });
    await settle(5);
    assert.equal(warnings.filter((w) => w.code === 'BIRDFEEDER_DISABLED').length, 2);
  } finally {
    process.off('warning', onWarning);
  }
});

test('IPv6 loopback', async (t) => {
  const dgram = await import('node:dgram');
  const s = dgram.createSocket('udp6');
  try {
    await new Promise((resolve, reject) => { s.once('error', reject); s.bind(0, '::1', resolve); });
  } catch {
    t.skip('no IPv6 loopback here');
    return;
  }
  const got = new Promise((r) => s.once('message', r));
  const c = createClient({ addr: `[::1]:${s.address().port}` });
  c.image({ model: 'v6' });
  assert.deepEqual(decode(await got), { dataset: 'image_events', model: 'v6' });
  c.close();
  s.close();
});

test('the unref\'d socket never keeps a process alive', () => {
  const entry = JSON.stringify(join(PKG, 'index.js'));
  // Sends to a live-looking address, to a dead one, and never closes.
  const r = runNode(`
    import { createClient } from ${entry};
    const a = createClient({ port: 9 });
    const b = createClient();
    for (let i = 0; i < 100; i++) { a.image({ model: 'm' }); b.llm({ model: 'm' }); }
    setTimeout(() => console.log(JSON.stringify(a.stats())), 20);
  `, { BIRDFEEDER_ADDR: '127.0.0.1:9' });
  assert.equal(r.status, 0, r.stderr);
  assert.ok(r.ms < 5000, `took ${r.ms} ms`);
  const s = JSON.parse(r.stdout);
  assert.equal(s.sent + s.dropped, 100);
});

test('ESM and CommonJS entries share one implementation', () => {
  assert.equal(esm.createClient, bf.createClient);
  assert.equal(esm.middleware, bf.middleware);
  assert.equal(esm.default, bf);
  const mw = require('../middleware.cjs');
  assert.equal(mw.middleware, bf.middleware);
  assert.equal(bf.getDefaultClient(), esm.getDefaultClient());
});

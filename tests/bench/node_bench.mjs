#!/usr/bin/env node
// make bench, Node part: what one event costs a Node service, the shim's
// way (one UDP datagram to birdfeederd) next to the old way (one fetch POST
// per event to the Events API), in the same process on the same machine.
//
//   node tests/bench/node_bench.mjs [--build build] [--sends 200000] [--posts 2000]
//        [--concurrency 1,16] [--to HOST:PORT] [--events-api URL --token T]
//
// Without --to it starts $build/birdfeederd itself (or, when that is not
// built, a receiver that discards); without --events-api it starts
// tests/fake_tinybird.py in count-only mode, which is also the daemon's
// sink, so the shim's events are counted as delivered rows. Everything
// listens on 127.0.0.1. Prints a table; figures only, it never fails on them.
//
// Columns: wall ns/event is elapsed time over events; CPU us/event is this
// process's user+system time over events (what the service pays, whatever
// the other side's speed); events/s is events over elapsed time.
import { spawn } from 'node:child_process';
import dgram from 'node:dgram';
import { mkdtempSync, rmSync, existsSync } from 'node:fs';
import { tmpdir, cpus } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { createRequire } from 'node:module';
import { createClient } from '../../client-shim/node/index.js';

const { encodeInto } = createRequire(import.meta.url)('../../client-shim/node/lib/encode.cjs');

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

function parseArgs(argv) {
  const a = {
    build: 'build', sends: 200000, posts: 2000, concurrency: [1, 16], to: null,
    eventsApi: null, token: 'bench-token',
  };
  for (let i = 2; i < argv.length; i++) {
    const k = argv[i];
    const v = argv[i + 1];
    if (k === '--build') a.build = v;
    else if (k === '--sends') a.sends = Number(v);
    else if (k === '--posts') a.posts = Number(v);
    else if (k === '--concurrency') a.concurrency = v.split(',').map(Number);
    else if (k === '--to') a.to = v;
    else if (k === '--events-api') a.eventsApi = v.replace(/\/$/, '');
    else if (k === '--token') a.token = v;
    else if (k === '-h' || k === '--help') {
      console.log('usage: node tests/bench/node_bench.mjs [--build DIR] [--sends N] [--posts N] ' +
        '[--concurrency 1,16] [--to HOST:PORT] [--events-api URL] [--token T]');
      process.exit(0);
    } else {
      console.error(`node_bench: unknown argument ${k}`);
      process.exit(2);
    }
    i++;
  }
  for (const t of [a.to, a.eventsApi]) {
    if (t && !/^(http:\/\/)?(127\.\d+\.\d+\.\d+|localhost|\[::1\])(:\d+)?$/.test(t)) {
      console.error(`node_bench: ${t}: loopback addresses only`);
      process.exit(2);
    }
  }
  return a;
}

const children = [];
function cleanup() {
  for (const c of children) if (c.exitCode === null) c.kill('SIGTERM');
}
process.on('exit', cleanup);
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(130));

/** Spawn cmd; resolve with the first match of re in its stdout or stderr. */
function startChild(cmd, args, re, env) {
  return new Promise((resolveP, reject) => {
    const c = spawn(cmd, args, { cwd: REPO, env: env || process.env, stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(c);
    let out = '';
    const timer = setTimeout(() => reject(new Error(`${cmd}: not ready in 30 s: ${out}`)), 30000);
    const onData = (d) => {
      out += d;
      const m = re.exec(out);
      if (m) {
        clearTimeout(timer);
        resolveP({ child: c, match: m });
      }
      if (out.length > 100000) out = out.slice(-10000);
    };
    c.stdout.on('data', onData);
    c.stderr.on('data', onData);
    c.on('exit', (code) => reject(new Error(`${cmd} exited (${code}): ${out}`)));
    c.on('error', reject);
  });
}

async function startFake(token) {
  const { match } = await startChild('python3', [join(REPO, 'tests', 'fake_tinybird.py'), '--port', '0',
    '--token', token, '--datasources', join(REPO, 'tinybird', 'datasources'), '--count-only'],
  /listening (127\.0\.0\.1:\d+)/);
  return `http://${match[1]}`;
}

async function startDaemon(bin, fakeUrl, token, dir) {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('TINYBIRD')));
  env.TINYBIRD_API_KEY = token;
  const { match } = await startChild(bin, ['--listen', '127.0.0.1:0', '--tinybird-url', fakeUrl,
    '--catalog', join(REPO, 'daemon', 'catalog.json'), '--ip-hash-key-file', join(dir, 'key'),
    '--spool-dir', join(dir, 'spool'), '--stats-socket', '', '--flush-interval-ms', '200'],
  /event=listening addr=(127\.0\.0\.1:\d+)/, env);
  return match[1];
}

/** A receiver on its own thread that reads and discards (no daemon built). */
async function startDiscard() {
  const src = `
    const dgram = require('node:dgram');
    const { parentPort } = require('node:worker_threads');
    const s = dgram.createSocket('udp4');
    s.on('message', () => {});
    s.bind(0, '127.0.0.1', () => parentPort.postMessage(s.address().port));`;
  const w = new Worker(src, { eval: true });
  w.unref();
  const port = await new Promise((r) => w.once('message', r));
  return `127.0.0.1:${port}`;
}

async function fakeRows(url, ds) {
  const r = await fetch(`${url}/_fake/summary`);
  const s = await r.json();
  return (s.rows && s.rows[ds]) || 0;
}

// One typical text-service event (the fields sendOpenAIResponse knows).
function event(i) {
  const now = Date.now() - 3600000 + i; // within the daemon's stale_time window
  return {
    id: `bench-${i}`, user_id: 'u_48213', username: 'ada', tier: 'flower', model: 'gpt-5-nano',
    start_time: now, end_time: now + 850, duration_ms: 850, status: 'success',
    prompt_tokens: 1234, completion_tokens: 567, cached_tokens: 1024, stream: false, cached: false,
    referrer: 'https://example.org/chat', ip: '203.0.113.7',
  };
}

function cpuUs(c0) {
  const c = process.cpuUsage(c0);
  return c.user + c.system;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const tick = () => new Promise((r) => setImmediate(r));

// One typical image-service event: a 400-byte prompt (the shim cuts it to
// 120 characters), sizes, a referrer, an IPv6 client.
function imageEvent(i) {
  const now = Date.now() - 3600000 + i; // within the daemon's stale_time window
  return {
    id: `bench-img-${i}`, user_id: 'u_48213', username: 'ada', tier: 'seed', model: 'flux',
    start_time: now, end_time: now + 2400, duration_ms: 2400, status: 'success',
    prompt: 'a watercolour of a lighthouse at dusk with gulls, waves on the rocks and warm '
      .repeat(6).slice(0, 400),
    width: 1024, height: 1024, steps: 4, cached: false,
    referrer: 'https://app.example.com/gallery/42?utm_source=newsletter', ip: '2001:db8:1:2::7',
  };
}

async function benchShim(addr, n, kind = 'llm') {
  const client = createClient({ addr });
  const make = kind === 'image' ? imageEvent : event;
  const send = kind === 'image' ? (ev) => client.image(ev) : (ev) => client.llm(ev);
  const events = Array.from({ length: 1024 }, (_, i) => make(i));
  // Warm up (JIT, socket), then measure. Sends run in chunks of 1000 with a
  // turn of the event loop between, as in a service; the time includes
  // dgram's callbacks.
  for (let i = 0; i < 5000; i++) send(events[i & 1023]);
  await sleep(50);
  const before = client.stats();
  let syncNs = 0n;
  const c0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n;) {
    const end = Math.min(n, i + 1000);
    const s0 = process.hrtime.bigint();
    for (; i < end; i++) {
      const ev = events[i & 1023];
      ev.id = `bench-${i}`;
      send(ev);
    }
    syncNs += process.hrtime.bigint() - s0;
    await tick();
  }
  const wall = Number(process.hrtime.bigint() - t0);
  const cpu = cpuUs(c0);
  await sleep(50);
  const after = client.stats();
  client.close();
  const d = {};
  for (const k of Object.keys(after)) d[k] = after[k] - before[k];
  return { wallNs: wall, syncNs: Number(syncNs), cpuUs: cpu, stats: d, warm: before.sent + before.dropped };
}

/**
 * The floor under any Node sender: the same image datagrams, encoded
 * beforehand, sent by node:dgram on a connected socket with a callback,
 * in the same chunks as benchShim. What the shim adds is its CPU minus this.
 */
async function benchDgramFloor(addr, n) {
  const [host, port] = [addr.slice(0, addr.lastIndexOf(':')), Number(addr.slice(addr.lastIndexOf(':') + 1))];
  const sock = dgram.createSocket('udp4');
  await new Promise((r, j) => { sock.once('error', j); sock.connect(port, host, r); });
  const bufs = Array.from({ length: 1024 }, (_, i) => {
    const b = Buffer.allocUnsafe(8192);
    return b.subarray(0, encodeInto(b, 8192, 1, imageEvent(i), 120, 500));
  });
  let done = 0;
  const cb = () => { done++; };
  for (let i = 0; i < 5000; i++) sock.send(bufs[i & 1023], cb);
  await sleep(50);
  const c0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n;) {
    const end = Math.min(n, i + 1000);
    for (; i < end; i++) sock.send(bufs[i & 1023], cb);
    await tick();
  }
  const wall = Number(process.hrtime.bigint() - t0);
  const cpu = cpuUs(c0);
  await sleep(50);
  sock.close();
  return { wallNs: wall, cpuUs: cpu, done };
}

function benchEncode(n) {
  // What client.llm() does before dgram: encode into its reused buffer.
  const ev = event(1);
  const buf = Buffer.allocUnsafe(8192);
  for (let i = 0; i < 20000; i++) encodeInto(buf, 8192, 2, ev, 120, 500);
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) encodeInto(buf, 8192, 2, ev, 120, 500);
  return Number(process.hrtime.bigint() - t0);
}

async function benchFetch(url, token, n, concurrency) {
  const target = `${url}/v0/events?name=llm_events`;
  const statuses = {};
  let next = 0;
  const post = async (i) => {
    // The old way, as the services did it: one JSON event, 5 s timeout.
    try {
      const r = await fetch(target, {
        method: 'POST',
        headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
        body: JSON.stringify(event(i)),
        signal: AbortSignal.timeout(5000),
      });
      await r.arrayBuffer();
      statuses[r.status] = (statuses[r.status] || 0) + 1;
    } catch (e) {
      const k = e.name === 'TimeoutError' ? 'timeout' : 'error';
      statuses[k] = (statuses[k] || 0) + 1;
    }
  };
  const worker = async () => {
    while (next < n) await post(next++);
  };
  for (let i = 0; i < 50; i++) await post(i); // warm up: connections, JIT
  for (const k of Object.keys(statuses)) delete statuses[k];
  next = 0;
  const c0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  await Promise.all(Array.from({ length: concurrency }, worker));
  return { wallNs: Number(process.hrtime.bigint() - t0), cpuUs: cpuUs(c0), statuses };
}

function row(name, n, wallNs, cpuUsTotal, note = '') {
  const ns = wallNs / n;
  const eps = n / (wallNs / 1e9);
  const cpu = cpuUsTotal === null ? '' : (cpuUsTotal / n).toFixed(2);
  console.log(`${name.padEnd(36)} ${String(n).padStart(7)} ${ns.toFixed(0).padStart(11)} ` +
    `${cpu.padStart(11)} ${eps.toFixed(0).padStart(10)}  ${note}`);
}

async function main() {
  const a = parseArgs(process.argv);
  const dir = mkdtempSync(join(tmpdir(), 'bf-node-bench-'));
  try {
    let eventsApi = a.eventsApi;
    if (!eventsApi) eventsApi = await startFake(a.token);
    if (!eventsApi.startsWith('http')) eventsApi = `http://${eventsApi}`;
    let to = a.to;
    let sink = to ? `daemon at ${to}` : '';
    const bin = join(resolve(REPO, a.build), 'birdfeederd');
    let ownDaemon = false;
    if (!to && existsSync(bin)) {
      to = await startDaemon(bin, eventsApi, a.token, dir);
      ownDaemon = !a.eventsApi;
      sink = `birdfeederd at ${to} -> fake Events API`;
    } else if (!to) {
      to = await startDiscard();
      sink = `a discarding UDP receiver at ${to} (${bin} not built)`;
    }

    console.log(`node bench: Node ${process.version}, ${cpus().length} CPUs; shim -> ${sink}; ` +
      `old way -> fetch POST ${eventsApi}/v0/events`);
    console.log(`${'method'.padEnd(36)} ${'events'.padStart(7)} ${'wall ns/ev'.padStart(11)} ` +
      `${'CPU us/ev'.padStart(11)} ${'events/s'.padStart(10)}`);

    const encNs = benchEncode(a.sends);
    row('shim: encode only (no send)', a.sends, encNs, null);

    const rows0 = ownDaemon ? await fakeRows(eventsApi, 'llm_events') : 0;
    const s = await benchShim(to, a.sends);
    row('shim: client.llm(), call only', a.sends, s.syncNs, null);
    row('shim: client.llm() + callbacks', a.sends, s.wallNs, s.cpuUs,
      `sent ${s.stats.sent}, dropped ${s.stats.dropped}, failed ${s.stats.failed}`);
    const si = await benchShim(to, a.sends, 'image');
    row('shim: client.image() + callbacks', a.sends, si.wallNs, si.cpuUs,
      `sent ${si.stats.sent}, dropped ${si.stats.dropped}, failed ${si.stats.failed}`);
    const fl = await benchDgramFloor(to, a.sends);
    row('floor: dgram send, same bytes', a.sends, fl.wallNs, fl.cpuUs,
      `shim image() / floor: ${(si.cpuUs / fl.cpuUs).toFixed(2)} times, ` +
      `${((si.cpuUs - fl.cpuUs) / a.sends).toFixed(2)} us over it`);
    if (ownDaemon) {
      const want = rows0 + s.warm + s.stats.sent;
      const deadline = Date.now() + 20000;
      let rows = 0;
      let last = -1;
      let stable = 0;
      while (Date.now() < deadline) {
        rows = await fakeRows(eventsApi, 'llm_events');
        if (rows >= want) break;
        stable = rows === last ? stable + 1 : 0;
        if (stable >= 10) break; // 2 s without progress
        last = rows;
        await sleep(200);
      }
      const delivered = rows - rows0 - s.warm;
      console.log(`${''.padEnd(36)} daemon delivered ${delivered} of ${s.stats.sent} rows ` +
        `(${(100 * (s.stats.sent - delivered) / Math.max(1, s.stats.sent)).toFixed(3)}% lost)`);
    }

    for (const c of a.concurrency) {
      const f = await benchFetch(eventsApi, a.token, a.posts, c);
      const st = Object.entries(f.statuses).map(([k, v]) => `${k}: ${v}`).join(', ');
      row(`old way: fetch POST, ${c} in flight`, a.posts, f.wallNs, f.cpuUs, st);
    }
  } finally {
    cleanup();
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(`node_bench: ${e.stack || e}`);
  process.exitCode = 1;
});

'use strict';
// Request instrumentation for node:http and Express-style servers: the clock
// starts when the middleware sees the request, and exactly one event is sent
// when the response finishes ('finish') or fails first ('close' before
// 'finish': the client went away, the socket broke).
//
// What only the service knows (model, prompt, sizes, token usage, cache hit,
// the user from its auth, an error) it hands over per request with
// annotate(req, {...}), or in Express with res.locals.birdfeeder = {...}.
// The middleware adds the timing, the status, the referrer and the client
// IP.

const { getDefaultClient } = require('./client.cjs');
const { datasetId } = require('./encode.cjs');

const kState = Symbol.for('birdfeeder.request');

class RequestState {
  constructor(cfg, req) {
    this.cfg = cfg;
    this.req = req;
    this.startMs = Date.now();
    this.t0 = performance.now();
    this.fields = null;   // merged annotate() calls
    this.skip = false;
    this.done = false;
  }
}

function isObject(v) {
  return v !== null && typeof v === 'object';
}

function stateOf(target) {
  if (!isObject(target)) return undefined;
  const st = target[kState];
  if (st !== undefined) return st;
  // A response can find its request's state and the other way round.
  if (isObject(target.req) && target.req[kState] !== undefined) return target.req[kState];
  if (isObject(target.res) && target.res[kState] !== undefined) return target.res[kState];
  return undefined;
}

/**
 * Add fields to the event of the request (req or res) that middleware()
 * tracks; later calls override earlier ones field by field. Fields are the
 * protocol's names or their aliases (startTime, error, user, usage, ...),
 * plus `auth`: the service's auth result ({ userId | user_id, username,
 * tier }), `dataset`, and `skip: true` (send nothing for this request).
 * Returns false when the request is not tracked. Never throws.
 */
function annotate(target, fields) {
  const st = stateOf(target);
  if (st === undefined || !isObject(fields)) return false;
  if (st.fields === null) st.fields = {};
  Object.assign(st.fields, fields);
  return true;
}

/** Send no event for this request (health checks, cache hits you do not
 * want to log). Returns false when the request is not tracked. */
function skip(target) {
  const st = stateOf(target);
  if (st === undefined) return false;
  st.skip = true;
  return true;
}

/** "1.2.3.4:5678" -> "1.2.3.4", "[::1]:80" -> "::1"; trims. */
function cleanIp(s) {
  if (typeof s !== 'string') return undefined;
  s = s.trim();
  if (s === '') return undefined;
  if (s[0] === '[') {
    const close = s.indexOf(']');
    return close > 0 ? s.slice(1, close) : undefined;
  }
  const colon = s.indexOf(':');
  if (colon > 0 && colon === s.lastIndexOf(':')) return s.slice(0, colon); // v4:port
  return s;
}

function headerValue(h) {
  return Array.isArray(h) ? h.join(',') : h;
}

/** The client's address: the socket's peer, or with trustProxy the
 * forwarding header's (true: its first entry; N: the entry N proxies back). */
function clientIp(req, cfg) {
  const sock = req.socket || req.connection;
  const peer = sock ? sock.remoteAddress : undefined;
  if (!cfg.trustProxy || !isObject(req.headers)) return cleanIp(peer);
  const h = headerValue(req.headers[cfg.ipHeader]);
  if (typeof h !== 'string' || h === '') return cleanIp(peer);
  const hops = h.split(',');
  if (cfg.trustProxy === true) return cleanIp(hops[0]) || cleanIp(peer);
  // trustProxy: N proxies of ours in front: the chain is hops + peer, and
  // the client is N entries from its end.
  const chain = hops.concat(peer === undefined ? [] : [peer]);
  return cleanIp(chain[Math.max(0, chain.length - 1 - cfg.trustProxy)]);
}

function has(ev, a, b, c) {
  return ev[a] != null || (b !== undefined && ev[b] != null) || (c !== undefined && ev[c] != null);
}

/** The event for a finished (or failed) request. */
function buildEvent(st, res, aborted) {
  const cfg = st.cfg;
  const req = st.req;
  const ev = {};
  if (st.fields !== null) Object.assign(ev, st.fields);
  const locals = res.locals;
  if (isObject(locals) && isObject(locals.birdfeeder)) Object.assign(ev, locals.birdfeeder);
  if (cfg.fields !== null) {
    const extra = cfg.fields(req, res);
    if (isObject(extra)) Object.assign(ev, extra);
  }

  let auth = ev.auth;
  if (!isObject(auth) && cfg.auth !== null) auth = cfg.auth(req, res);
  if (isObject(auth)) {
    if (!has(ev, 'user_id', 'userId', 'user')) {
      const id = auth.userId != null ? auth.userId : auth.user_id != null ? auth.user_id : auth.id;
      if (id != null) ev.user_id = id;
    }
    if (ev.username == null && auth.username != null) ev.username = auth.username;
    if (ev.tier == null && auth.tier != null) ev.tier = auth.tier;
  }
  if (typeof ev.user === 'object') delete ev.user; // an object is no user_id

  if (ev.model == null || ev.model === '') ev.model = cfg.model;
  if (!has(ev, 'id') && cfg.requestId !== null) {
    const id = cfg.requestId(req, res);
    // The protocol caps id at 64 bytes: a longer one would get the event
    // rejected, so leave it to the daemon to make one.
    if (typeof id === 'string' && id !== '' && Buffer.byteLength(id) <= 64) ev.id = id;
  }

  // Timing. The service's own times win; by default start is when the
  // middleware saw the request and end = start + duration, so the two never
  // disagree (a wall clock stepping back could put end before start, which
  // the daemon rejects). Given one time, the daemon derives the other.
  const givenStart = has(ev, 'start_time', 'startTime');
  const givenEnd = has(ev, 'end_time', 'endTime');
  const givenDuration = has(ev, 'duration_ms', 'durationMs', 'duration');
  const duration = Math.max(0, Math.round(performance.now() - st.t0));
  if (!givenStart && !givenEnd) {
    ev.start_time = st.startMs;
    if (!givenDuration) {
      ev.duration_ms = duration;
      ev.end_time = st.startMs + duration;
    }
  } else if (!givenDuration && !(givenStart && givenEnd)) {
    ev.duration_ms = duration;
  }

  if (ev.status == null || ev.status === '') {
    const err = has(ev, 'error_message', 'errorMessage', 'error');
    const code = res.statusCode;
    if (err) {
      ev.status = 'error';
    } else if (aborted) {
      ev.status = 'error';
      ev.error_message = 'connection closed before the response was complete';
    } else if (code >= 400) {
      ev.status = 'error';
      ev.error_message = `HTTP ${code}${res.statusMessage ? ' ' + res.statusMessage : ''}`;
    } else {
      ev.status = 'success';
    }
  }
  if (!has(ev, 'referrer', 'referer') && isObject(req.headers)) {
    const r = req.headers.referer || req.headers.referrer;
    if (typeof r === 'string' && r !== '') ev.referrer = r;
  }
  if (ev.ip == null) {
    const ip = clientIp(req, cfg);
    if (ip !== undefined) ev.ip = ip;
  }
  return ev;
}

// Shared by every request ('this' is the response): no closure per request.
function onResponseEnd() {
  const st = this[kState];
  if (st === undefined || st.done) return;
  st.done = true; // 'finish' then 'close', or 'close' alone: one event
  if (st.skip) return;
  try {
    const aborted = !this.writableFinished;
    const ev = buildEvent(st, this, aborted);
    if (ev.skip === true) return;
    const ds = ev.dataset != null ? datasetId(ev.dataset) : st.cfg.dataset;
    st.cfg.client.send(ds, ev);
  } catch (err) {
    // A throwing fields()/auth()/requestId() callback or getter must not
    // take the server down; the event is counted as failed.
    try {
      if (typeof st.cfg.client._failed === 'number') st.cfg.client._failed++;
    } catch { /* a frozen custom client */ }
    if (st.cfg.onError !== null) {
      try { st.cfg.onError(err); } catch { /* ignore */ }
    }
  }
}

/**
 * Instrument requests. Returns `track(req, res, next?)`: call it first
 * thing in a node:http handler, or mount it in Express (app.use(track) or
 * per route), where it calls next().
 *
 * options:
 *   client      a client from createClient() (default: the default client,
 *               from $BIRDFEEDER_ADDR)
 *   dataset     'image_events' or 'llm_events' (per request: annotate
 *               { dataset })
 *   model       model name when the request named none ('unknown')
 *   trustProxy  false (default): the IP is the socket's peer. true: the
 *               first address of X-Forwarded-For. A number N: the address N
 *               proxies back (N trusted proxies in front).
 *   ipHeader    header read with trustProxy ('x-forwarded-for')
 *   auth        (req, res) => auth result { userId, username, tier }, when
 *               not annotated
 *   requestId   (req, res) => id for the event (at most 64 bytes; by
 *               default the daemon makes one)
 *   fields      (req, res) => extra fields, read when the response ends
 *   onError     (err) => void, for errors thrown by the callbacks above
 */
function middleware(options) {
  const o = isObject(options) ? options : {};
  const fn = (name) => (typeof o[name] === 'function' ? o[name] : null);
  const trust = o.trustProxy;
  const cfg = {
    client: isObject(o.client) && typeof o.client.send === 'function' ? o.client : getDefaultClient(),
    dataset: datasetId(o.dataset == null ? 'image_events' : o.dataset),
    model: typeof o.model === 'string' && o.model !== '' ? o.model : 'unknown',
    trustProxy: trust === true ? true : Number.isInteger(trust) && trust > 0 ? trust : false,
    ipHeader: typeof o.ipHeader === 'string' ? o.ipHeader.toLowerCase() : 'x-forwarded-for',
    auth: fn('auth'),
    requestId: fn('requestId'),
    fields: fn('fields'),
    onError: fn('onError'),
  };
  return function birdfeeder(req, res, next) {
    try {
      if (isObject(req) && isObject(res) && req[kState] === undefined &&
          typeof res.on === 'function') {
        const st = new RequestState(cfg, req);
        req[kState] = st;
        res[kState] = st;
        res.on('finish', onResponseEnd);
        res.on('close', onResponseEnd);
      }
    } catch {
      /* never break the request */
    }
    if (typeof next === 'function') next();
  };
}

module.exports = { middleware, annotate, skip, clientIp, kState };

'use strict';
// The birdfeeder client: one UDP datagram per event to the daemon on this
// host, fire-and-forget. Mirrors client-shim/c/bf_client.h:
//
// - the socket is connected once (numeric addresses only, no DNS), so a
//   send is one syscall and the kernel reports a missing daemon
//   (ECONNREFUSED) instead of dropping in silence;
// - it is unref'd: it never keeps a process alive;
// - sends never throw, never block and never return promises; every call
//   adds one to exactly one of the counters sent / dropped / oversize /
//   failed (sent, dropped and failed once dgram calls back, at the latest on
//   the next tick);
// - prompt is cut to 120 characters (code points) and error_message to 500
//   before encoding, as the daemon cuts them; a datagram over 8192 bytes is
//   not sent but counted as oversize.

const dgram = require('node:dgram');
const net = require('node:net');
const { datasetId, clampDatagram, encodeInto, PROMPT_CHARS, ERROR_CHARS } = require('./encode.cjs');

const DEFAULT_ADDR = '127.0.0.1:8190';
const ADDR_ENV = 'BIRDFEEDER_ADDR';

// Errors that mean "the daemon did not take it" rather than "we could not
// send": as in the C shim, counted as dropped.
const DROP_CODES = new Set(['EAGAIN', 'EWOULDBLOCK', 'ENOBUFS', 'ECONNREFUSED']);

/**
 * Parse "A.B.C.D:PORT", "[IPv6]:PORT" or "localhost:PORT" (127.0.0.1), port
 * 1..65535, as bf_client_open does (the rule of proto/bf_addr.h and
 * PROTOCOL.md, "Addresses"). Returns { host, port, family } or an Error.
 */
function parseAddr(text) {
  if (typeof text !== 'string') return new Error('address must be a string');
  // The C shim and the CLI send to the daemon's Unix datagram socket too;
  // node:dgram has no Unix datagram sockets, so this client stays on UDP.
  if (text.startsWith('unix:')) {
    return new Error(`${JSON.stringify(text)}: node:dgram has no Unix datagram sockets; ` +
      'give the daemon a UDP --listen as well and use that address');
  }
  let host;
  let portText;
  if (text.startsWith('[')) {
    const close = text.indexOf(']');
    if (close < 0 || text[close + 1] !== ':') return new Error(`bad address ${JSON.stringify(text)}`);
    host = text.slice(1, close);
    portText = text.slice(close + 2);
    if (net.isIPv6(host) === false) return new Error(`bad IPv6 address in ${JSON.stringify(text)}`);
  } else {
    const colon = text.lastIndexOf(':');
    if (colon <= 0) return new Error(`bad address ${JSON.stringify(text)}: want HOST:PORT`);
    host = text.slice(0, colon);
    portText = text.slice(colon + 1);
    if (host.includes(':')) return new Error(`bad address ${JSON.stringify(text)}: IPv6 needs [brackets]`);
  }
  return hostPort(host, portText);
}

function hostPort(host, port) {
  if (host === 'localhost') host = '127.0.0.1';
  if (typeof host === 'string' && host.startsWith('[') && host.endsWith(']')) host = host.slice(1, -1);
  // No zone index ("fe80::1%eth0"): the rule of proto/bf_addr.h.
  const family = typeof host === 'string' && !host.includes('%') ? net.isIP(host) : 0;
  if (family === 0) {
    return new Error(`bad host ${JSON.stringify(host)}: want an IPv4 or IPv6 address or localhost ` +
      '(no name lookups: they could block)');
  }
  const p = typeof port === 'string' && /^[0-9]{1,5}$/.test(port) ? Number(port) : port;
  if (typeof p !== 'number' || !Number.isInteger(p) || p < 1 || p > 65535) {
    return new Error(`bad port ${JSON.stringify(port)}: want 1..65535`);
  }
  return { host, port: p, family };
}

/** The daemon's address from options, else $BIRDFEEDER_ADDR, else the
 * default; an Error when the one chosen does not parse. */
function resolveAddr(o) {
  if (o.host != null || o.port != null) {
    return hostPort(o.host == null ? '127.0.0.1' : o.host, o.port == null ? 8190 : o.port);
  }
  if (o.addr != null) return parseAddr(o.addr);
  const env = process.env[ADDR_ENV];
  return parseAddr(env ? env : DEFAULT_ADDR);
}

// dgram's lookup, called for bind and connect: the address is numeric
// already, so answer at once. With dns.lookup (the default) even a numeric
// address is answered on a later tick, and the first events would wait in
// dgram's queue; this way the socket is bound and connected when
// createClient returns.
function numericLookup(host, options, callback) {
  if (typeof options === 'function') callback = options;
  const family = net.isIP(host);
  if (family === 0) {
    const err = new Error(`birdfeeder: not a numeric address: ${host}`);
    err.code = 'EINVAL';
    callback(err);
  } else {
    callback(null, host, family);
  }
}

class Client {
  constructor(options) {
    const o = options != null && typeof options === 'object' ? options : {};
    this._sent = 0;
    this._dropped = 0;
    this._oversize = 0;
    this._failed = 0;
    this._closed = false;
    this._cap = clampDatagram(undefined);
    this._promptChars = PROMPT_CHARS;
    this._errorChars = ERROR_CHARS;
    let addr;
    try {
      this._cap = clampDatagram(o.maxDatagram);
      if (o.promptChars !== undefined) this._promptChars = Math.max(0, o.promptChars | 0);
      if (o.errorChars !== undefined) this._errorChars = Math.max(0, o.errorChars | 0);
      addr = resolveAddr(o);
    } catch (err) {
      addr = err instanceof Error ? err : new Error(String(err)); // a throwing getter
    }
    this._buf = Buffer.allocUnsafeSlow(this._cap); // reused for every event
    this._sock = null;
    /** Why this client cannot send (a bad address, a socket error), or null. */
    this.error = null;
    /** "host:port" the client sends to ("[v6]:port" for IPv6), or null. */
    this.address = null;
    // One callback per client, not one closure per event.
    this._onSent = onSent.bind(this);

    if (addr instanceof Error) {
      this._disable(addr);
      return;
    }
    this.address = addr.family === 6 ? `[${addr.host}]:${addr.port}` : `${addr.host}:${addr.port}`;
    try {
      const sock = dgram.createSocket({ type: addr.family === 6 ? 'udp6' : 'udp4', lookup: numericLookup });
      this._sock = sock;
      sock.on('error', onSocketError.bind(this));
      sock.connect(addr.port, addr.host);
      sock.unref();
    } catch (err) {
      this._disable(err);
    }
  }

  _disable(err) {
    this.error = err;
    if (this._sock !== null) {
      try { this._sock.close(); } catch { /* already closed */ }
      this._sock = null;
    }
    process.emitWarning(`birdfeeder: events will not be sent: ${err.message}`,
      { code: 'BIRDFEEDER_DISABLED' });
  }

  /** Send one image_events event. Returns true when it was handed to the
   * socket (counted as sent or dropped once dgram calls back), false when
   * it was counted at once (oversize, failed). Never throws. */
  image(fields) {
    return this._send(1, fields);
  }

  /** Send one llm_events event; as image(). */
  llm(fields) {
    return this._send(2, fields);
  }

  /** Send one event of dataset ("image_events", "llm_events", or a dataset
   * id 1..255); as image(). An unknown dataset counts as failed. */
  send(dataset, fields) {
    return this._send(datasetId(dataset), fields);
  }

  _send(ds, fields) {
    const sock = this._sock;
    if (ds === 0 || fields === null || typeof fields !== 'object' || sock === null) {
      this._failed++;
      return false;
    }
    try {
      // libuv queues a datagram only when the kernel would block (EAGAIN),
      // and then still points at our buffer. While one waits there, drop new
      // events, as the C shim does on EAGAIN, rather than queue without
      // bound, and leave the buffer alone. (The usual send is synchronous:
      // the kernel has copied the bytes when send() returns.)
      if (sock.getSendQueueCount() !== 0) {
        this._dropped++;
        return false;
      }
    } catch {
      this._failed++; // closed under us
      return false;
    }
    let n;
    try {
      n = encodeInto(this._buf, this._cap, ds, fields, this._promptChars, this._errorChars);
    } catch {
      this._failed++; // a getter of fields threw
      return false;
    }
    if (n === 0) {
      this._oversize++;
      return false;
    }
    try {
      sock.send(this._buf, 0, n, this._onSent);
    } catch {
      this._failed++; // not connected (connect failed)
      return false;
    }
    return true;
  }

  /** Counters since createClient: { sent, dropped, oversize, failed }. Each
   * call of image/llm/send adds one to exactly one of them, once dgram has
   * called back (on the next tick at the latest). A datagram the kernel
   * later reports refused (no daemon listening) moves from sent to dropped. */
  stats() {
    return { sent: this._sent, dropped: this._dropped, oversize: this._oversize, failed: this._failed };
  }

  /** Close the socket. Later sends count as failed. Idempotent. */
  close() {
    if (this._closed) return;
    this._closed = true;
    const sock = this._sock;
    this._sock = null;
    if (sock !== null) {
      try { sock.close(); } catch { /* already closed */ }
    }
  }
}

function onSent(err) {
  if (!err) {
    this._sent++;
  } else if (DROP_CODES.has(err.code)) {
    if (err.code === 'ECONNREFUSED' && this._sent > 0) {
      // The refusal is of an earlier datagram (an ICMP port unreachable,
      // reported on the next call), and this one was not sent either.
      this._sent--;
      this._dropped++;
    }
    this._dropped++;
  } else {
    this._failed++;
  }
}

function onSocketError(err) {
  // The socket also reads (dgram always does), so a refusal can surface
  // here instead of in a send callback: an earlier datagram was refused.
  if (err && err.code === 'ECONNREFUSED') {
    if (this._sent > 0) {
      this._sent--;
      this._dropped++;
    }
    return;
  }
  if (err && err.syscall === 'connect' && this.error === null) this._disable(err);
}

/**
 * A client for the daemon at { host, port } (numeric IPv4/IPv6 or
 * "localhost"), or { addr: "HOST:PORT" }, else $BIRDFEEDER_ADDR, else
 * 127.0.0.1:8190. Never throws: with an address that does not parse, a
 * warning is emitted, client.error says why, and every event counts as
 * failed. Other options: maxDatagram (8192), promptChars (120),
 * errorChars (500; 0 turns a cut off).
 */
function createClient(options) {
  return new Client(options);
}

let defaultClient = null;

/** The process-wide client from $BIRDFEEDER_ADDR, created on first use. */
function getDefaultClient() {
  if (defaultClient === null || defaultClient._closed) defaultClient = new Client({});
  return defaultClient;
}

/**
 * Drop-in for the original plan's sendTinybirdEvent(event, { dataset }):
 * the same event object (camelCase names accepted), sent to the daemon by
 * the default client instead of POSTed to Tinybird. Returns undefined
 * (awaiting it is harmless); never throws.
 */
function sendTinybirdEvent(event, options) {
  let dataset = 'llm_events';
  if (options != null && typeof options === 'object' && options.dataset != null) dataset = options.dataset;
  getDefaultClient().send(dataset, event);
}

module.exports = { Client, createClient, getDefaultClient, sendTinybirdEvent, parseAddr, DEFAULT_ADDR };

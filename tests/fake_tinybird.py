#!/usr/bin/env python3
"""Fake Tinybird Events API for birdfeeder's integration tests and benchmarks.

Behaves like POST /v0/events on the real service as far as we know it (see
/work/shared/REFERENCE.md): Bearer auth (403), unknown datasource (404), gzip
bodies, NDJSON rows validated against the repo's .datasource schemas with bad
rows quarantined rather than rejected, 200 with wait=true / 202 without,
413 over the size limit, X-RateLimit-Limit/Remaining/Reset on every answer.
On top of that it records every request and offers a control API under
/_fake/* to inspect what arrived and to inject faults (error statuses, 429
with Retry-After, delays, resets, refused connections), and enforces, when
asked, a request limit per datasource shared by all clients (rate_limit
requests per rate_window_ms fixed window, 429 with Retry-After past it).

Standard library only.  Usage:

    python3 tests/fake_tinybird.py --port 0 --token SECRET \
        --datasources tinybird/datasources [--port-file F] [--rows-dir DIR] \
        [--count-only] [--max-body N] [--idle-timeout S]

Prints exactly one line `listening 127.0.0.1:PORT` on stdout once ready.
The control API is served on that port and also on a second "control port"
(see GET /_fake/info) that keeps answering while the main port refuses
connections.
"""

import argparse
import collections
import datetime
import http.server
import io
import json
import math
import os
import re
import signal
import socket
import socketserver
import struct
import sys
import threading
import time
import urllib.parse
import zlib

DEFAULT_MAX_BODY = 10_000_000          # bytes, decompressed (see REFERENCE.md: 10 MB)
HARD_READ_CAP = 256 * 1024 * 1024      # never buffer a request body bigger than this
DEFAULT_RATE_LIMIT = 1000              # requests/s per datasource, as documented
MAX_REQUEST_RECORDS = 200_000          # bound memory during long benchmarks


# ---------------------------------------------------------------------------
# .datasource parsing
# ---------------------------------------------------------------------------

class Column:
    """One SCHEMA column: name, ClickHouse type, JSONPath, nullability, default."""

    def __init__(self, name, type_str, json_path, default):
        self.name = name
        self.type_str = type_str
        self.json_path = json_path
        self.default = default                       # text of DEFAULT expr or None
        self.type = parse_type(type_str)
        self.nullable = self.type.nullable
        # `$.a.b` -> ['a', 'b']; anything fancier ($.a[:], $['x']) is not
        # supported and the column is then not checked (path_parts None).
        self.path_parts = _parse_json_path(json_path)

    @property
    def required(self):
        return not self.nullable and self.default is None

    def __repr__(self):
        return (f"Column({self.name!r}, {self.type_str!r}, {self.json_path!r}, "
                f"default={self.default!r})")


class CHType:
    """Parsed ClickHouse type: base name, type arguments, Nullable flag."""

    def __init__(self, name, args, nullable=False):
        self.name = name          # e.g. 'String', 'UInt32', 'DateTime64', 'Array'
        self.args = args          # list of CHType (Array/Map/...) or str (DateTime64(3))
        self.nullable = nullable


def _split_top_level(s):
    """Split 'a, b(c, d), e' on commas that are not inside parentheses/quotes."""
    parts, depth, cur, quote = [], 0, [], None
    for ch in s:
        if quote:
            cur.append(ch)
            if ch == quote:
                quote = None
            continue
        if ch in "'\"":
            quote = ch
        elif ch == '(':
            depth += 1
        elif ch == ')':
            depth -= 1
        elif ch == ',' and depth == 0:
            parts.append(''.join(cur).strip())
            cur = []
            continue
        cur.append(ch)
    if ''.join(cur).strip():
        parts.append(''.join(cur).strip())
    return parts


_COMPOSITE = {'Nullable', 'LowCardinality', 'Array', 'Map', 'Tuple'}


def parse_type(s):
    s = s.strip()
    m = re.fullmatch(r'(\w+)\s*(?:\((.*)\))?', s, re.S)
    if not m:
        raise ValueError(f"cannot parse type {s!r}")
    name, inner = m.group(1), m.group(2)
    if name == 'Nullable':
        t = parse_type(inner)
        t.nullable = True
        return t
    if name == 'LowCardinality':
        return parse_type(inner)     # storage detail only; same JSON type as inner
    if inner is None:
        return CHType(name, [])
    raw_args = _split_top_level(inner)
    if name in _COMPOSITE:
        return CHType(name, [parse_type(a) for a in raw_args])
    return CHType(name, raw_args)    # DateTime64(3, 'UTC'), Decimal(10, 2), FixedString(3)


def _parse_json_path(path):
    if path == '$':
        return []
    m = re.fullmatch(r'\$((?:\.[A-Za-z_][A-Za-z0-9_]*)+)', path)
    if not m:
        return None
    return m.group(1)[1:].split('.')


_COL_RE = re.compile(r'^(?:`(?P<q>[^`]+)`|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))\s+(?P<rest>.*)$')
_JSONPATH_RE = re.compile(r'`json:([^`]*)`')
_DEFAULT_RE = re.compile(r'\bDEFAULT\b', re.I)
_CODEC_RE = re.compile(r'\bCODEC\s*\(', re.I)


def parse_column_line(line):
    """Parse one SCHEMA line: `col` Type [DEFAULT x] `json:$.col` [DEFAULT x][,]"""
    text = line.strip()
    if text.endswith(','):
        text = text[:-1].rstrip()
    m = _COL_RE.match(text)
    if not m:
        raise ValueError(f"cannot parse schema line {line!r}")
    name = m.group('q') or m.group('bare')
    rest = m.group('rest')
    jm = _JSONPATH_RE.search(rest)
    json_path = jm.group(1).strip() if jm else f'$.{name}'
    if jm:
        rest = (rest[:jm.start()] + ' ' + rest[jm.end():]).strip()
    cm = _CODEC_RE.search(rest)
    if cm:                      # compression codecs do not affect ingestion
        rest = rest[:cm.start()].strip()
    default = None
    dm = _DEFAULT_RE.search(rest)
    if dm:
        default = rest[dm.end():].strip()
        rest = rest[:dm.start()].strip()
    return Column(name, rest.strip(), json_path, default)


def parse_datasource(text):
    """Return the list of Columns of a .datasource file's SCHEMA block."""
    lines = text.splitlines()
    cols, in_schema = [], False
    for line in lines:
        if not in_schema:
            if re.match(r'^SCHEMA\s*>\s*$', line):
                in_schema = True
            continue
        if not line.strip() or line.lstrip().startswith('#'):
            continue
        if not line[0].isspace():            # next top-level instruction ends the block
            break
        cols.append(parse_column_line(line))
    if not cols:
        raise ValueError("no SCHEMA block found")
    return cols


def load_datasources(directory):
    """{datasource name: [Column]} for every *.datasource file in directory."""
    out = {}
    for fn in sorted(os.listdir(directory)):
        if fn.endswith('.datasource'):
            with open(os.path.join(directory, fn), encoding='utf-8') as f:
                try:
                    out[fn[:-len('.datasource')]] = parse_datasource(f.read())
                except ValueError as e:
                    raise ValueError(f"{fn}: {e}") from None
    return out


# ---------------------------------------------------------------------------
# Row validation
# ---------------------------------------------------------------------------

_INT_RANGES = {}
for _bits in (8, 16, 32, 64, 128, 256):
    _INT_RANGES[f'UInt{_bits}'] = (0, 2 ** _bits - 1)
    _INT_RANGES[f'Int{_bits}'] = (-(2 ** (_bits - 1)), 2 ** (_bits - 1) - 1)

_DATE_RE = re.compile(r'(\d{4})-(\d{2})-(\d{2})')
_UUID_RE = re.compile(r'[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}')
_MISSING = object()


def _check_datetime(v, frac_digits):
    """Strict 'YYYY-MM-DD HH:MM:SS[.fff]' with exactly frac_digits decimals.

    The real API may accept more forms, but this is the one REFERENCE.md calls
    safe, so the daemon must produce exactly this.
    """
    if not isinstance(v, str):
        return f"expected string 'YYYY-MM-DD HH:MM:SS{'.' + 'f' * frac_digits if frac_digits else ''}', got {_jtype(v)}"
    frac = rf'\.(\d{{{frac_digits}}})' if frac_digits else ''
    m = re.fullmatch(r'(\d{4})-(\d{2})-(\d{2}) (\d{2}):(\d{2}):(\d{2})' + frac, v)
    if not m:
        want = 'YYYY-MM-DD HH:MM:SS' + ('.' + 'm' * frac_digits if frac_digits else '')
        return f"cannot parse {v!r} as {want}"
    try:
        datetime.datetime(*(int(x) for x in m.groups()[:6]))
    except ValueError as e:
        return f"invalid date/time {v!r}: {e}"
    return None


def _jtype(v):
    if v is None:
        return 'null'
    if isinstance(v, bool):
        return 'bool'
    if isinstance(v, int):
        return 'integer'
    if isinstance(v, float):
        return 'float'
    if isinstance(v, str):
        return 'string'
    if isinstance(v, list):
        return 'array'
    return 'object'


def check_value(t, v):
    """Return None if JSON value v fits ClickHouse type t, else a reason."""
    if v is None:
        return None if t.nullable else "null for non-Nullable type"
    n = t.name
    if n in ('String',):
        return None if isinstance(v, str) else f"expected string, got {_jtype(v)}"
    if n == 'FixedString':
        if not isinstance(v, str):
            return f"expected string, got {_jtype(v)}"
        limit = int(t.args[0]) if t.args else 0
        return None if len(v.encode()) <= limit else f"string longer than FixedString({limit})"
    if n == 'UUID':
        return None if isinstance(v, str) and _UUID_RE.fullmatch(v) else f"invalid UUID {v!r}"
    if n in _INT_RANGES:
        if isinstance(v, bool) or not isinstance(v, int):
            return f"expected integer, got {_jtype(v)}"
        lo, hi = _INT_RANGES[n]
        return None if lo <= v <= hi else f"{v} out of range for {n}"
    if n in ('Float32', 'Float64', 'Decimal', 'Decimal32', 'Decimal64', 'Decimal128'):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return f"expected number, got {_jtype(v)}"
        return None
    if n in ('Bool', 'Boolean'):
        return None if isinstance(v, bool) else f"expected true/false, got {_jtype(v)}"
    if n == 'DateTime64':
        digits = int(t.args[0]) if t.args else 3
        return _check_datetime(v, digits)
    if n == 'DateTime':
        return _check_datetime(v, 0)
    if n in ('Date', 'Date32'):
        if not isinstance(v, str) or not _DATE_RE.fullmatch(v):
            return f"cannot parse {v!r} as YYYY-MM-DD"
        try:
            datetime.date(*(int(x) for x in v.split('-')))
        except ValueError as e:
            return f"invalid date {v!r}: {e}"
        return None
    if n == 'Array':
        if not isinstance(v, list):
            return f"expected array, got {_jtype(v)}"
        for i, item in enumerate(v):
            err = check_value(t.args[0], item)
            if err:
                return f"element {i}: {err}"
        return None
    if n == 'Map':
        if not isinstance(v, dict):
            return f"expected object, got {_jtype(v)}"
        for k, item in v.items():
            err = check_value(t.args[1], item)
            if err:
                return f"key {k!r}: {err}"
        return None
    return None   # unknown type (JSON, IPv4, Enum...): accept anything present


def _lookup(obj, parts):
    for p in parts:
        if not isinstance(obj, dict) or p not in obj:
            return _MISSING
        obj = obj[p]
    return obj


def validate_row(obj, columns, require_all=False):
    """List of error strings for a parsed row (empty list: row is fine).

    A non-Nullable column without DEFAULT must be present; Nullable columns and
    columns with DEFAULT may be absent or null (Tinybird applies the default).
    require_all=True also demands every column be present (used by the harness
    to check the daemon emits full rows).
    """
    if not isinstance(obj, dict):
        return [f"row is not a JSON object ({_jtype(obj)})"]
    errors = []
    for col in columns:
        if col.path_parts is None:
            continue
        v = _lookup(obj, col.path_parts)
        if v is _MISSING:
            if col.required or require_all:
                errors.append(f"column `{col.name}` ({col.type_str}): missing value for {col.json_path}")
            continue
        if v is None and col.default is not None:
            continue
        err = check_value(col.type, v)
        if err:
            errors.append(f"column `{col.name}` ({col.type_str}): {err}")
    return errors


def _reject_constant(name):
    raise ValueError(f"{name} is not valid JSON")


def parse_ndjson_line(raw):
    """Parse one NDJSON line (bytes) -> (obj, None) or (None, error)."""
    try:
        text = raw.decode('utf-8')
    except UnicodeDecodeError as e:
        return None, f"invalid UTF-8: {e}"
    try:
        # NaN / Infinity are accepted by Python's json but not by real JSON.
        return json.loads(text, parse_constant=_reject_constant), None
    except ValueError as e:
        return None, f"invalid JSON: {e}"


# ---------------------------------------------------------------------------
# gzip
# ---------------------------------------------------------------------------

class BodyTooLarge(Exception):
    pass


class BadGzip(Exception):
    pass


def gunzip_limited(data, limit):
    """Decompress a (possibly multi-member) gzip body, refusing to inflate past
    limit bytes so a gzip bomb can't exhaust memory."""
    out = bytearray()
    while True:
        d = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            chunk = d.decompress(data, limit + 1 - len(out))
            out += chunk
            if len(out) > limit:
                raise BodyTooLarge()
            # unconsumed_tail is input not yet processed because of max_length.
            while d.unconsumed_tail:
                out += d.decompress(d.unconsumed_tail, limit + 1 - len(out))
                if len(out) > limit:
                    raise BodyTooLarge()
            out += d.flush()
        except zlib.error as e:
            raise BadGzip(str(e)) from None
        if not d.eof:
            raise BadGzip("truncated gzip stream")
        if len(out) > limit:
            raise BodyTooLarge()
        data = d.unused_data
        if not data.strip(b'\x00'):      # trailing padding is tolerated, like gzip(1)
            return bytes(out)


# ---------------------------------------------------------------------------
# Shared state
# ---------------------------------------------------------------------------

FAULT_DEFAULTS = {
    'status': 0,            # answer every events request with this status (0 = off)
    'status_every': None,   # [N, status]: every Nth events request gets status
    'retry_after': None,    # Retry-After value sent with 429s (None = header omitted)
    'ratelimit_reset': None,  # override X-RateLimit-Reset value
    'rate_limit': 0,        # enforce N requests per window per datasource with 429 (0 = off)
    'rate_window_ms': 1000,  # the limit's window: fixed, aligned to the fake's start
    'delay_ms': 0,          # sleep before answering events requests
    'max_body': None,       # 413 above this many decompressed bytes (None = --max-body)
    'down': False,          # reset events connections without answering
    'refuse': False,        # close the listening socket (connection refused)
    'refuse_ms': None,      # with refuse: reopen automatically after this long
    'keepalive': True,      # False: answer with Connection: close
}


class State:
    """Everything the handlers share, guarded by one lock."""

    def __init__(self, token, datasources, count_only, rows_dir, max_body):
        self.lock = threading.Lock()
        self.token = token
        self.schemas = datasources
        self.count_only = count_only
        self.rows_dir = rows_dir
        self.default_max_body = max_body
        self.conn_seq = 0              # never reset: connection ids stay unique
        self.req_seq = 0
        self.clear()

    def clear(self):
        # Caller holds the lock (or is __init__).
        self.faults = dict(FAULT_DEFAULTS)
        self.rows = collections.defaultdict(list)        # ds -> [raw line str]
        self.quarantine = collections.defaultdict(list)  # ds -> [{"row":..., "error":...}]
        self.row_counts = collections.Counter()
        self.quarantine_counts = collections.Counter()
        self.requests = collections.deque(maxlen=MAX_REQUEST_RECORDS)
        self.by_status = collections.Counter()
        self.event_conns = set()        # connection ids that carried events traffic
        self.bytes_in = 0
        self.events_seq = 0             # counter for status_every
        self.rl_windows = {}            # ds -> [window index, count]
        self.t_start = time.monotonic()


# ---------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------

STATUS_ERRORS = {
    400: "Bad request",
    403: "Invalid token: it does not exist, has expired or has no DATASOURCE:APPEND scope",
    404: "Not found",
    408: "Request timeout",
    413: "Request body too large",
    422: "Partial failure: a materialized view could not be written",
    429: "Too many requests: rate limit exceeded",
    500: "Internal server error",
    502: "Bad gateway",
    503: "Service temporarily unavailable",
    504: "Gateway timeout",
}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'      # keep-alive
    server_version = 'fake-tinybird/1'
    # Small headers+body writes without TCP_NODELAY hit the Nagle/delayed-ACK
    # 40 ms stall on keep-alive connections; the daemon would look slow.
    disable_nagle_algorithm = True

    def version_string(self):
        return self.server_version

    # -- plumbing ---------------------------------------------------------

    def setup(self):
        super().setup()
        st = self.server.state
        with st.lock:
            st.conn_seq += 1
            self.conn_id = st.conn_seq
        # Idle keep-alive connections are closed eventually, like a real LB.
        self.connection.settimeout(self.server.idle_timeout)

    def log_message(self, fmt, *args):
        if self.server.verbose:
            sys.stderr.write("fake_tinybird: %s - %s\n" % (self.address_string(), fmt % args))

    def _send(self, status, body, content_type='application/json', headers=(), close=False):
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        elif isinstance(body, str):
            body = body.encode()
        self.sent_status = status
        self.send_response(status)
        self.send_header('Content-Type', content_type)
        self.send_header('Content-Length', str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        if close:
            self.send_header('Connection', 'close')
            self.close_connection = True
        self.end_headers()
        if self.command != 'HEAD':
            self.wfile.write(body)

    def _read_body(self):
        """Read the whole request body (Content-Length or chunked).

        Returns bytes, or None after answering 411/413 (connection closed)."""
        te = (self.headers.get('Transfer-Encoding') or '').lower()
        if 'chunked' in te:
            buf = bytearray()
            while True:
                line = self.rfile.readline(1024)
                size = int(line.split(b';')[0].strip() or b'0', 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b'\r\n', b'\n', b''):
                        pass          # trailers
                    return bytes(buf)
                if len(buf) + size > HARD_READ_CAP:
                    self._send(413, {"error": STATUS_ERRORS[413]}, close=True)
                    return None
                buf += self.rfile.read(size)
                self.rfile.readline(1024)   # CRLF after chunk
        cl = self.headers.get('Content-Length')
        if cl is None:
            return b''
        try:
            n = int(cl)
        except ValueError:
            self._send(400, {"error": "invalid Content-Length"}, close=True)
            return None
        if n > HARD_READ_CAP:
            self._send(413, {"error": STATUS_ERRORS[413]}, close=True)
            return None
        return self.rfile.read(n)

    def _abort_connection(self):
        """Reset the TCP connection without answering (RST, not FIN)."""
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack('ii', 1, 0))
        except OSError:
            pass
        # The socket only really closes once its makefile() objects are gone.
        for f in (self.rfile, self.wfile):
            try:
                f.close()
            except Exception:
                pass
        try:
            self.connection.close()
        except OSError:
            pass
        # BaseHTTPRequestHandler still flushes/closes these afterwards.
        self.rfile, self.wfile = io.BytesIO(), io.BytesIO()
        self.close_connection = True

    # -- dispatch ---------------------------------------------------------

    def do_GET(self):
        self._dispatch()

    def do_POST(self):
        self._dispatch()

    def do_PUT(self):
        self._dispatch()

    def do_DELETE(self):
        self._dispatch()

    def do_HEAD(self):
        self._dispatch()

    def _dispatch(self):
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        if url.path.startswith('/_fake/'):
            return self._control(url.path, query)
        if self.server.control_only:
            body = self._read_body()
            if body is not None:
                self._send(404, {"error": "control port: only /_fake/* here"})
            return
        self._events(url.path, query)

    # -- events API ---------------------------------------------------------

    def _events(self, path, query):
        st = self.server.state
        t_mono, t_wall = time.monotonic(), time.time()
        self._rl = None
        with st.lock:
            faults = dict(st.faults)
            st.event_conns.add(self.conn_id)
            st.req_seq += 1
            req_id = st.req_seq
        rec = {
            'id': req_id, 'conn_id': self.conn_id,
            't_mono': t_mono, 't_wall': t_wall, 't': t_mono - st.t_start,
            'method': self.command, 'path': self.path,
            'datasource': (query.get('name') or [None])[0],
            'wait': (query.get('wait') or [''])[0].lower() == 'true',
            'content_encoding': self.headers.get('Content-Encoding'),
            'content_type': self.headers.get('Content-Type'),
            'user_agent': self.headers.get('User-Agent'),
            'bytes': 0, 'body_bytes': 0,
            'rows_ok': 0, 'rows_quarantined': 0,
            'fault': None, 'status': 0, 'error': None,
        }

        if faults['down'] or faults['refuse']:
            # Refuse also kills requests on connections accepted earlier, so a
            # kept-alive daemon connection sees the outage too.
            rec['fault'] = 'down' if faults['down'] else 'refuse'
            self._record(rec)
            self._abort_connection()
            return

        body = self._read_body()
        if body is None:           # _read_body already answered 400/413 and closes
            rec['status'], rec['error'] = self.sent_status, 'unreadable body'
            self._record(rec)
            return
        rec['bytes'] = len(body)

        if faults['delay_ms']:
            time.sleep(faults['delay_ms'] / 1000.0)

        status, payload = self._process(path, query, body, faults, rec)
        rec['status'] = status
        if status >= 400 and payload is not None:
            rec['error'] = payload.get('error')
        headers = self._ratelimit_headers(faults, status, rec)
        self._record(rec)
        self._send(status, payload, headers=headers, close=not faults['keepalive'])

    def _process(self, path, query, body, faults, rec):
        """Decide the answer. Returns (status, json payload); stores rows."""
        st = self.server.state
        if path != '/v0/events':
            return 404, {"error": f"Not found: {path}"}

        # Injected statuses come first: a 503 from a load balancer does not
        # look at the token.
        injected = None
        with st.lock:
            st.events_seq += 1
            seq = st.events_seq
            # Count the request in its datasource's window (for the
            # X-RateLimit-* headers, and for 429s when rate_limit is set).
            # Windows are fixed and shared by every client, as Tinybird's
            # per-datasource limit is shared by the workspace; every
            # request counts, the refused ones too.
            window_s = max(faults['rate_window_ms'], 1) / 1000.0
            now = time.monotonic()
            index = int((now - st.t_start) // window_s)
            w = st.rl_windows.get(rec['datasource'] or '')
            if w is None or w[0] != index:
                w = st.rl_windows[rec['datasource'] or ''] = [index, 0]
            w[1] += 1
            # (count so far, seconds to the window's end)
            self._rl = (w[1], st.t_start + (index + 1) * window_s - now)
            if faults['status']:
                injected = faults['status']
            elif faults['status_every'] and seq % faults['status_every'][0] == 0:
                injected = faults['status_every'][1]
            elif faults['rate_limit'] and w[1] > faults['rate_limit']:
                injected = 429
                rec['fault'] = 'rate_limit'
        if injected:
            rec['fault'] = rec['fault'] or f'status {injected}'
            msg = STATUS_ERRORS.get(injected, http.server.BaseHTTPRequestHandler.responses.get(
                injected, ('Error',))[0])
            if injected == 429 and faults['retry_after'] is not None:
                msg += f", retry after {faults['retry_after']} seconds"
            return injected, {"error": msg + " (injected by fake)"}

        if self.command != 'POST':
            return 405, {"error": f"Method {self.command} not allowed on /v0/events"}
        auth = self.headers.get('Authorization') or ''
        if not auth.startswith('Bearer ') or auth[len('Bearer '):].strip() != st.token:
            return 403, {"error": STATUS_ERRORS[403]}
        ds = rec['datasource']
        if not ds:
            return 400, {"error": "The 'name' parameter is required"}
        if ds not in st.schemas:
            return 404, {"error": (f"Data Source '{ds}' not found. Check that the token belongs "
                                   f"to the workspace on this host: the workspace may be in "
                                   f"another region (api.us-east.tinybird.co, ...)")}

        max_body = faults['max_body'] if faults['max_body'] is not None else st.default_max_body
        enc = (rec['content_encoding'] or 'identity').strip().lower()
        if enc == 'gzip':
            try:
                body = gunzip_limited(body, max_body)
            except BodyTooLarge:
                rec['body_bytes'] = None
                return 413, {"error": f"{STATUS_ERRORS[413]}: over {max_body} bytes decompressed"}
            except BadGzip as e:
                return 400, {"error": f"Invalid gzip body: {e}"}
        elif enc != 'identity':
            return 400, {"error": f"Unsupported Content-Encoding: {enc}"}
        rec['body_bytes'] = len(body)
        if len(body) > max_body:
            return 413, {"error": f"{STATUS_ERRORS[413]}: over {max_body} bytes"}

        if st.count_only:
            n = body.count(b'\n')
            if body and not body.endswith(b'\n'):
                n += 1
            with st.lock:
                st.row_counts[ds] += n
            rec['rows_ok'] = n
        else:
            self._ingest(ds, body, rec)
        status = 200 if rec['wait'] else 202
        return status, {"successful_rows": rec['rows_ok'],
                        "quarantined_rows": rec['rows_quarantined']}

    def _ingest(self, ds, body, rec):
        st = self.server.state
        columns = st.schemas[ds]
        ok_lines, bad = [], []
        for raw in body.split(b'\n'):
            if raw.endswith(b'\r'):
                raw = raw[:-1]
            if not raw.strip():
                continue                 # trailing / blank lines are not rows
            obj, err = parse_ndjson_line(raw)
            errors = [err] if err else validate_row(obj, columns)
            if errors:
                bad.append({"row": obj if err is None else raw.decode('utf-8', 'replace'),
                            "error": "; ".join(errors)})
            else:
                ok_lines.append(raw.decode('utf-8'))
        with st.lock:
            st.rows[ds].extend(ok_lines)
            st.quarantine[ds].extend(bad)
            st.row_counts[ds] += len(ok_lines)
            st.quarantine_counts[ds] += len(bad)
            if st.rows_dir and ok_lines:
                with open(os.path.join(st.rows_dir, ds + '.ndjson'), 'a', encoding='utf-8') as f:
                    f.write('\n'.join(ok_lines) + '\n')
        rec['rows_ok'], rec['rows_quarantined'] = len(ok_lines), len(bad)

    def _ratelimit_headers(self, faults, status, rec):
        """X-RateLimit-* like the real API on every answer (Limit, Remaining
        after this request, Reset: whole seconds to the window's end), and
        Retry-After on 429: the retry_after fault when set, else, for a 429
        of the limiter itself, the seconds to the window's end (an injected
        429 without retry_after has none, for clients' fallback)."""
        if getattr(self, '_rl', None) is None:
            return []
        count, left_s = self._rl
        self._rl = None
        limit = faults['rate_limit'] or DEFAULT_RATE_LIMIT
        reset = faults['ratelimit_reset']
        if reset is None:
            reset = max(1, math.ceil(left_s))
        remaining = max(0, limit - count)
        rec['rl'] = [limit, remaining, reset]
        headers = [('X-RateLimit-Limit', str(limit)),
                   ('X-RateLimit-Remaining', str(remaining)),
                   ('X-RateLimit-Reset', str(reset))]
        if status == 429:
            if faults['retry_after'] is not None:
                headers.append(('Retry-After', str(faults['retry_after'])))
            elif rec['fault'] == 'rate_limit':
                headers.append(('Retry-After', str(reset)))
        return headers

    def _record(self, rec):
        st = self.server.state
        with st.lock:
            st.requests.append(rec)
            st.by_status[str(rec['status'])] += 1
            st.bytes_in += rec['bytes']

    # -- control API ---------------------------------------------------------

    def _control(self, path, query):
        st = self.server.state
        body = self._read_body()
        if body is None:
            return
        name = (query.get('name') or [None])[0]
        if path == '/_fake/info':
            return self._send(200, {"port": self.server.app.port,
                                    "control_port": self.server.app.control_port,
                                    "pid": os.getpid(), "count_only": st.count_only,
                                    "datasources": sorted(st.schemas)})
        if path == '/_fake/faults':
            if self.command == 'GET':
                with st.lock:
                    return self._send(200, dict(st.faults))
            try:
                changes = json.loads(body or b'{}')
                if not isinstance(changes, dict):
                    raise ValueError("expected a JSON object")
                unknown = set(changes) - set(FAULT_DEFAULTS)
                if unknown:
                    raise ValueError(f"unknown fault keys: {sorted(unknown)}")
                rw = changes.get('rate_window_ms', 1000)
                if not (isinstance(rw, int) and rw > 0):
                    raise ValueError("rate_window_ms must be a positive integer")
                se = changes.get('status_every')
                if se is not None and not (isinstance(se, list) and len(se) == 2
                                           and all(isinstance(x, int) for x in se) and se[0] > 0):
                    raise ValueError("status_every must be [N, status] with N > 0")
            except ValueError as e:
                return self._send(400, {"error": str(e)})
            with st.lock:
                st.faults.update(changes)
                if 'status_every' in changes:
                    st.events_seq = 0        # "every Nth" counts from now
                current = dict(st.faults)
            if 'refuse' in changes:
                self.server.app.set_refuse(bool(changes['refuse']), changes.get('refuse_ms'))
            return self._send(200, current)
        if path == '/_fake/reset':
            with st.lock:
                st.clear()
            self.server.app.set_refuse(False)
            return self._send(200, {"ok": True})
        if path == '/_fake/rows':
            if not name:
                return self._send(400, {"error": "name parameter required"})
            with st.lock:
                lines = list(st.rows.get(name, ()))
            text = ''.join(line + '\n' for line in lines)
            return self._send(200, text, content_type='application/x-ndjson')
        if path == '/_fake/quarantine':
            if not name:
                return self._send(400, {"error": "name parameter required"})
            with st.lock:
                items = list(st.quarantine.get(name, ()))
            text = ''.join(json.dumps(q) + '\n' for q in items)
            return self._send(200, text, content_type='application/x-ndjson')
        if path == '/_fake/requests':
            since = int((query.get('since') or ['0'])[0])
            with st.lock:
                recs = [r for r in st.requests if r['id'] > since]
            return self._send(200, recs)
        if path == '/_fake/summary':
            with st.lock:
                s = {"rows": dict(st.row_counts),
                     "quarantined": dict(st.quarantine_counts),
                     "requests_by_status": dict(st.by_status),
                     "requests": sum(st.by_status.values()),
                     "connections": len(st.event_conns),
                     "bytes_in": st.bytes_in,
                     # rate windows are aligned to this (time.monotonic())
                     "t_start_mono": st.t_start}
            return self._send(200, s)
        return self._send(404, {"error": f"unknown control endpoint {path}"})


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, app, control_only):
        self.app = app
        self.state = app.state
        self.control_only = control_only
        self.verbose = app.verbose
        self.idle_timeout = app.idle_timeout
        super().__init__(addr, Handler)

    def server_bind(self):
        # HTTPServer.server_bind calls getfqdn(), which can stall without DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def handle_error(self, request, client_address):
        # Clients dropping connections is routine here; only show with -v.
        if self.verbose:
            super().handle_error(request, client_address)


class App:
    """Owns the main (events) server and the control server."""

    def __init__(self, args):
        self.verbose = args.verbose
        self.idle_timeout = args.idle_timeout
        schemas = load_datasources(args.datasources)
        if args.rows_dir:
            os.makedirs(args.rows_dir, exist_ok=True)
        self.state = State(args.token, schemas, args.count_only, args.rows_dir, args.max_body)
        self.refuse_lock = threading.Lock()
        self.refuse_timer = None
        self.main = Server(('127.0.0.1', args.port), self, control_only=False)
        self.port = self.main.server_address[1]
        self.control = Server(('127.0.0.1', args.control_port), self, control_only=True)
        self.control_port = self.control.server_address[1]
        self.main_thread = self._serve(self.main)
        self._serve(self.control)

    @staticmethod
    def _serve(server):
        t = threading.Thread(target=server.serve_forever, kwargs={'poll_interval': 0.05},
                             daemon=True)
        t.start()
        return t

    def set_refuse(self, on, refuse_ms=None):
        """Really refuse connections: close the listening socket; reopen it on
        the same port when switched off (or after refuse_ms)."""
        with self.refuse_lock:
            if self.refuse_timer:
                self.refuse_timer.cancel()
                self.refuse_timer = None
            listening = self.main.socket.fileno() != -1
            if on and listening:
                self.main.shutdown()              # stop the accept loop first
                self.main.socket.close()          # now connect() gets ECONNREFUSED
            elif not on and not listening:
                self.main.socket = socket.socket(self.main.address_family,
                                                 self.main.socket_type)
                self.main.server_bind()
                self.main.server_activate()
                self.main_thread = self._serve(self.main)
            if on and refuse_ms:
                self.refuse_timer = threading.Timer(refuse_ms / 1000.0, self._auto_unrefuse)
                self.refuse_timer.daemon = True
                self.refuse_timer.start()

    def _auto_unrefuse(self):
        with self.state.lock:
            self.state.faults['refuse'] = False
            self.state.faults['refuse_ms'] = None
        self.set_refuse(False)

    def close(self):
        with self.refuse_lock:
            if self.refuse_timer:
                self.refuse_timer.cancel()
        for srv in (self.main, self.control):
            if srv.socket.fileno() != -1:
                srv.shutdown()
            srv.server_close()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--port', type=int, default=0, help='0 = ephemeral')
    p.add_argument('--control-port', type=int, default=0,
                   help='port for the always-on control server (0 = ephemeral)')
    p.add_argument('--token', required=True)
    p.add_argument('--datasources', required=True, help='directory of *.datasource files')
    p.add_argument('--port-file', help='write the main port number here once listening')
    p.add_argument('--rows-dir', help='append accepted rows to DIR/<ds>.ndjson')
    p.add_argument('--count-only', action='store_true',
                   help='benchmark mode: count rows by newlines, no parsing or storing')
    p.add_argument('--max-body', type=int, default=DEFAULT_MAX_BODY,
                   help='413 above this many decompressed bytes (default %(default)s)')
    p.add_argument('--idle-timeout', type=float, default=120.0,
                   help='close idle keep-alive connections after this many seconds')
    p.add_argument('-v', '--verbose', action='store_true', help='log requests to stderr')
    args = p.parse_args(argv)

    app = App(args)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    if args.port_file:
        tmp = args.port_file + '.tmp'
        with open(tmp, 'w') as f:
            f.write(f'{app.port}\n')
        os.replace(tmp, args.port_file)      # readers never see a partial file
    print(f'listening 127.0.0.1:{app.port}', flush=True)

    # Serving happens in threads; the main thread just waits for a signal so
    # the handler never has to call shutdown() from inside serve_forever.
    while not stop.wait(0.5):
        pass
    app.close()
    return 0


if __name__ == '__main__':
    sys.exit(main())

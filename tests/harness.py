"""Helpers for birdfeeder's integration tests (unittest, standard library only).

    from harness import FakeTinybird, Daemon, send_json_lines, wait_until

    with FakeTinybird() as tb, Daemon(['--tinybird-url', tb.url]) as d:
        send_json_lines([{"ds": "llm_events", ...}], d.port)
        wait_until(lambda: tb.rows('llm_events'))

Everything here has a timeout: a broken daemon fails a test, it never hangs it.
Binaries come from build/ (override with BIRDFEEDER_BUILD_DIR).  When they do
not exist yet, Daemon / send_json_lines raise unittest.SkipTest, unless
BIRDFEEDER_REQUIRE_BINARIES=1 (for CI, where a missing binary is a failure).
Set BIRDFEEDER_KEEP_TMP=1 to keep the daemon's temp dir for post-mortems.

Test classes subclass BirdfeederTestCase: self.fake() / self.daemon() /
self.tmpdir() are cleaned up after the test, and a failing test prints the
logs of the daemons and fakes it started.
"""

import datetime
import http.client
import json
import math
import os
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.parse
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parent
REPO = TESTS_DIR.parent
BUILD = Path(os.environ.get('BIRDFEEDER_BUILD_DIR', REPO / 'build')).resolve()
DAEMON_BIN = BUILD / 'birdfeederd'
CLI_BIN = BUILD / 'birdfeeder'
FAKE_SCRIPT = TESTS_DIR / 'fake_tinybird.py'
DATASOURCES = REPO / 'tinybird' / 'datasources'
REPO_CATALOG = REPO / 'daemon' / 'catalog.json'
IMAGE, LLM = 'image_events', 'llm_events'
DATASETS = (IMAGE, LLM)

sys.path.insert(0, str(TESTS_DIR))
import fake_tinybird  # noqa: E402  (shares the .datasource parser/validator)


# ---------------------------------------------------------------------------
# small utilities
# ---------------------------------------------------------------------------

def wait_until(pred, timeout=10, interval=0.05, msg=None, ignore=()):
    """Poll pred() until it returns something truthy; return that value.

    Raises AssertionError (with the last value seen) after timeout seconds.
    Exceptions listed in `ignore` count as "not yet" (e.g. ConnectionRefusedError).
    """
    deadline = time.monotonic() + timeout
    last, last_exc = None, None
    while True:
        try:
            last = pred()
            if last:
                return last
        except ignore as e:      # noqa: PERF203 - polling
            last_exc = e
        if time.monotonic() >= deadline:
            detail = f"last value {last!r}" + (f", last error {last_exc!r}" if last_exc else "")
            raise AssertionError(f"{msg or 'condition'} not met within {timeout}s: {detail}")
        time.sleep(interval)


def clean_env(env=None):
    """os.environ without TINYBIRD_* (so a developer's real key never leaks
    into a test), then `env` on top; a None value removes a variable."""
    out = {k: v for k, v in os.environ.items() if not k.startswith('TINYBIRD_')}
    for k, v in (env or {}).items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = str(v)
    return out


def _require(binary):
    if not Path(binary).is_file():
        msg = f"{binary} not built (run make)"
        if os.environ.get('BIRDFEEDER_REQUIRE_BINARIES') == '1':
            raise FileNotFoundError(msg)
        raise unittest.SkipTest(msg)


# A quoted value may lack its closing quote when the daemon truncated the line.
_LOGFMT_RE = re.compile(r'([A-Za-z_][\w.\-]*)=("(?:[^"\\]|\\.)*"?|\S*)')
_LOGFMT_ESC_RE = re.compile(r'\\(x[0-9a-fA-F]{2}|.)')


def _logfmt_unescape(v):
    # daemon/log.c log_quote(): \" and \\ escaped, control bytes as \xHH.
    return _LOGFMT_ESC_RE.sub(lambda m: chr(int(m.group(1)[1:], 16))
                              if len(m.group(1)) == 3 else m.group(1), v)


def parse_logfmt(line):
    """'ts=1 level=info event=x msg="a b"' -> {'ts': '1', ..., 'msg': 'a b'}"""
    out = {}
    for k, v in _LOGFMT_RE.findall(line):
        if v.startswith('"'):
            v = _logfmt_unescape(v[1:-1] if len(v) > 1 and v.endswith('"') else v[1:])
        out[k] = v
    return out


_PRIORITY_RE = re.compile(r'<([0-7])>')


def parse_log_line(line):
    """One daemon log line as a dict, in either --log-format (text: logfmt;
    json: one object), without the syslog priority prefix that lines carry
    under journald ('<4>'), which is returned as '_priority' (an int)."""
    out = {}
    m = _PRIORITY_RE.match(line)
    if m:
        line = line[m.end():]
    if line.startswith('{'):
        try:
            rec = json.loads(line)
        except ValueError:
            rec = None
        out = rec if isinstance(rec, dict) else {}
    else:
        out = parse_logfmt(line)
    if m:
        out['_priority'] = int(m.group(1))
    return out


def ts_ms(dt=None):
    """Tinybird's safe DateTime64(3) text form: 'YYYY-MM-DD HH:MM:SS.mmm' (UTC)."""
    dt = dt or datetime.datetime.now(datetime.timezone.utc)
    return dt.strftime('%Y-%m-%d %H:%M:%S.') + f'{dt.microsecond // 1000:03d}'


def stop_process(proc, timeout=5):
    """SIGTERM, then SIGKILL after timeout s; returns the exit code."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)
    return proc.returncode


def stat_at_least(d, key, n):
    """wait_until predicate: d.stats()[key] >= n (dotted key 'a.b'); returns
    the stats dict once it holds."""
    def pred():
        s = d.stats()
        v = s
        for part in key.split('.'):
            v = v[part]
        return s if v >= n else None
    return pred


class Figures:
    """Measured figures of a test module, printed as they come and again, all
    together, by the module's tearDownModule:

        figure = Figures('test_x')
        def tearDownModule(): figure.print_all()
        figure('test name', sent=100, duplicates=0)
    """

    def __init__(self, title):
        self.title = title
        self.lines = []

    def __call__(self, test, **kv):
        line = f"{test}: " + ", ".join(f"{k}={v}" for k, v in kv.items())
        self.lines.append(line)
        sys.stderr.write(f"\n[figures] {line}\n")

    def print_all(self):
        if self.lines:
            sys.stderr.write(f"\n==== {self.title} figures ====\n")
            for line in self.lines:
                sys.stderr.write(f"  {line}\n")


# ---------------------------------------------------------------------------
# the Prometheus text exposition (birdfeeder stats --prom, GET /metrics)
# ---------------------------------------------------------------------------

PROM_NAME = re.compile(r'[a-zA-Z_:][a-zA-Z0-9_:]*\Z')
PROM_LABEL = re.compile(r'[a-zA-Z_][a-zA-Z0-9_]*\Z')
PROM_SAMPLE = re.compile(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)(?: (-?\d+))?\Z')
PROM_PAIR = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(,|\Z)')


def check_prometheus(text):
    """Assert text is a valid Prometheus text exposition (format 0.0.4) as
    birdfeeder writes it: every family has one HELP and one TYPE line before
    its samples, samples of a family are contiguous, names and labels are
    valid, values parse as numbers, counters end in _total, no duplicate
    series. Returns {family: {'type': t, 'samples': {labels_tuple: value}}}."""
    families = {}
    current = None
    assert text.endswith('\n'), 'exposition must end with a newline'
    for n, line in enumerate(text.split('\n')[:-1], 1):
        where = f'line {n}: {line!r}'
        assert line, f'{where}: empty line'
        if line.startswith('#'):
            parts = line.split(' ', 3)
            assert len(parts) >= 3 and parts[1] in ('HELP', 'TYPE'), f'{where}: bad comment'
            kind, name = parts[1], parts[2]
            assert PROM_NAME.match(name), f'{where}: bad metric name'
            fam = families.setdefault(name, {'help': None, 'type': None, 'samples': {}})
            assert not fam['samples'], f'{where}: {kind} after samples of {name}'
            if kind == 'HELP':
                assert fam['help'] is None, f'{where}: second HELP'
                assert len(parts) == 4 and parts[3].strip(), f'{where}: empty HELP'
                fam['help'] = parts[3]
            else:
                assert fam['type'] is None, f'{where}: second TYPE'
                assert len(parts) == 4 and parts[3] in ('counter', 'gauge', 'summary'), \
                    f'{where}: type must be counter, gauge or summary'
                fam['type'] = parts[3]
            current = name
            continue
        m = PROM_SAMPLE.match(line)
        assert m, f'{where}: not a sample'
        name, labels, value = m.group(1), m.group(2), m.group(3)
        assert name == current, f'{where}: sample outside its family ({current})'
        fam = families[name]
        assert fam['help'] is not None and fam['type'] is not None, \
            f'{where}: sample before HELP and TYPE'
        pairs = []
        if labels:
            pos = 0
            while pos < len(labels):
                pm = PROM_PAIR.match(labels, pos)
                assert pm, f'{where}: bad labels at {labels[pos:]!r}'
                assert PROM_LABEL.match(pm.group(1)), f'{where}: bad label name'
                pairs.append((pm.group(1), pm.group(2)))
                pos = pm.end()
        key = tuple(pairs)
        assert key not in fam['samples'], f'{where}: duplicate series'
        v = float(value)  # raises on a non-number
        assert not math.isnan(v), f'{where}: NaN'
        fam['samples'][key] = v
    for name, fam in families.items():
        assert fam['samples'], f'family {name} has no samples'
        if fam['type'] == 'counter':
            assert name.endswith('_total'), f'counter {name} must end in _total'
            assert all(v >= 0 for v in fam['samples'].values()), f'counter {name} < 0'
        # Quantiles belong to a summary (promtool refuses them elsewhere).
        quantiled = {any(k == 'quantile' for k, _ in labels) for labels in fam['samples']}
        assert quantiled == {fam['type'] == 'summary'}, \
            f'{name}: quantile labels on a {fam["type"]}, or a summary without them'
    return families


# ---------------------------------------------------------------------------
# schema helpers
# ---------------------------------------------------------------------------

_schemas = {}


def schema(ds):
    """[fake_tinybird.Column] for datasource ds (from tinybird/datasources)."""
    if not _schemas:
        _schemas.update(fake_tinybird.load_datasources(str(DATASOURCES)))
    if ds not in _schemas:
        raise KeyError(f"no datasource {ds!r} in {DATASOURCES}")
    return _schemas[ds]


def row_errors(row, ds):
    """List of problems with row for ds (every column must be present and typed)."""
    return fake_tinybird.validate_row(row, schema(ds), require_all=True)


def validate_row_columns(row, ds):
    """Assert row has every column of ds, each with a value of the right type."""
    errors = row_errors(row, ds)
    if errors:
        raise AssertionError(f"row for {ds} is invalid: {'; '.join(errors)}\nrow: {row!r}")


def _sample_value(t):
    n = t.name
    if n in ('DateTime64',):
        return ts_ms()
    if n == 'DateTime':
        return ts_ms()[:19]
    if n in ('Date', 'Date32'):
        return ts_ms()[:10]
    if n.startswith(('UInt', 'Int')):
        return 1
    if n.startswith(('Float', 'Decimal')):
        return 0.5
    if n in ('Bool', 'Boolean'):
        return False
    if n == 'Array':
        return []
    if n == 'Map':
        return {}
    return 'x'


def make_row(ds, **overrides):
    """A schema-valid row for ds (flat $.col paths), with overrides applied."""
    row = {}
    for col in schema(ds):
        if col.path_parts and len(col.path_parts) == 1:
            row[col.path_parts[0]] = _sample_value(col.type)
    row.update(overrides)
    return row


# ---------------------------------------------------------------------------
# FakeTinybird
# ---------------------------------------------------------------------------

class FakeTinybird:
    """Runs tests/fake_tinybird.py on an ephemeral port.

    .url / .port: the events API; control calls go to the separate control
    port so they keep working while faults(refuse=True) is on.
    """

    def __init__(self, token='test-token', count_only=False, rows_dir=None,
                 max_body=None, extra_args=(), timeout=10):
        self.token = token
        self.timeout = timeout
        cmd = [sys.executable, str(FAKE_SCRIPT), '--port', '0', '--token', token,
               '--datasources', str(DATASOURCES)]
        if count_only:
            cmd.append('--count-only')
        if rows_dir:
            cmd += ['--rows-dir', str(rows_dir)]
        if max_body is not None:
            cmd += ['--max-body', str(max_body)]
        cmd += list(extra_args)
        self._stderr = tempfile.TemporaryFile()
        self._log_cache = ''
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._stderr,
                                     stdin=subprocess.DEVNULL)
        try:
            line = self._read_listening_line(timeout)
            m = re.fullmatch(r'listening 127\.0\.0\.1:(\d+)', line)
            if not m:
                raise AssertionError(f"fake_tinybird printed {line!r}")
            self.port = int(m.group(1))
            self.url = f'http://127.0.0.1:{self.port}'
            info = self._call('GET', '/_fake/info', port=self.port)
            self.control_port = info['control_port']
        except BaseException:
            self.stop()
            raise

    def _read_listening_line(self, timeout):
        deadline = time.monotonic() + timeout
        buf = b''
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        try:
            while b'\n' not in buf:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"fake_tinybird not ready in {timeout}s: {self.log()}")
                if sel.select(left):
                    chunk = os.read(self.proc.stdout.fileno(), 4096)
                    if not chunk:
                        self.proc.wait(timeout=5)
                        raise AssertionError(f"fake_tinybird exited ({self.proc.returncode}): "
                                             f"{self.log()}")
                    buf += chunk
        finally:
            sel.close()
        return buf.split(b'\n', 1)[0].decode()

    # -- control API ---------------------------------------------------------

    def _call(self, method, path, body=None, port=None, raw=False):
        conn = http.client.HTTPConnection('127.0.0.1', port or self.control_port,
                                          timeout=self.timeout)
        try:
            data = json.dumps(body).encode() if body is not None else None
            conn.request(method, path, body=data,
                         headers={'Content-Type': 'application/json'} if data else {})
            resp = conn.getresponse()
            payload = resp.read()
        finally:
            conn.close()
        if resp.status != 200:
            raise AssertionError(f"fake control {method} {path} -> {resp.status}: {payload!r}")
        return payload if raw else json.loads(payload)

    @staticmethod
    def _ndjson(payload):
        return [json.loads(line) for line in payload.decode().splitlines() if line.strip()]

    def rows(self, ds):
        """Accepted rows for ds as dicts (empty in count_only mode)."""
        q = urllib.parse.urlencode({'name': ds})
        return self._ndjson(self._call('GET', f'/_fake/rows?{q}', raw=True))

    def quarantine(self, ds):
        """[{'row': ..., 'error': ...}] for ds."""
        q = urllib.parse.urlencode({'name': ds})
        return self._ndjson(self._call('GET', f'/_fake/quarantine?{q}', raw=True))

    def requests(self, since=0):
        """Request records (dicts), oldest first; since=id returns newer ones."""
        return self._call('GET', f'/_fake/requests?since={int(since)}')

    def summary(self):
        return self._call('GET', '/_fake/summary')

    def row_count(self, ds):
        """Accepted row count for ds; works in count_only mode too."""
        return self.summary()['rows'].get(ds, 0)

    def faults(self, **kw):
        """Set faults (status=503, status_every=[3, 429], retry_after=1,
        ratelimit_reset=2, rate_limit=N, rate_window_ms=1000, delay_ms=...,
        max_body=...,
        down=True, refuse=True, refuse_ms=..., keepalive=False);
        returns the full current fault dict."""
        return self._call('POST', '/_fake/faults', body=kw)

    def reset(self):
        """Clear rows, quarantine, requests, counters and faults."""
        return self._call('POST', '/_fake/reset', body={})

    def wait_rows(self, ds, n, timeout=10):
        """Wait until at least n rows of ds were accepted; returns the count."""
        wait_until(lambda: self.row_count(ds) >= n, timeout=timeout, msg=f"{n} rows in {ds}")
        return self.row_count(ds)

    # -- lifecycle ------------------------------------------------------------

    def log(self):
        if self._stderr.closed:
            return self._log_cache
        self._stderr.seek(0)
        return self._stderr.read().decode(errors='replace')

    def stop(self):
        """SIGTERM, then SIGKILL after 5 s; returns the exit code."""
        stop_process(self.proc)
        if self.proc.stdout and not self.proc.stdout.closed:
            self.proc.stdout.close()
        if not self._stderr.closed:
            self._log_cache = self.log()      # log() keeps working after stop()
            self._stderr.close()
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        return False


# ---------------------------------------------------------------------------
# Daemon
# ---------------------------------------------------------------------------

def _short_tmpdir(prefix='bf-'):
    # A Unix socket path must fit in sun_path (108 bytes): keep the dir short.
    base = tempfile.gettempdir()
    if len(base) > 40:
        base = '/tmp'
    return tempfile.mkdtemp(prefix=prefix, dir=base)


class Daemon:
    """Runs build/birdfeederd with --listen 127.0.0.1:0 in a private temp dir.

    .port      UDP port the daemon bound (from its `event=listening` log line)
    .dir       its temp dir (cwd; key files and spool stay private)
    .stats()   one JSON stats line from --stats-socket
    .log()     its stderr so far;  .log_records() the same parsed (parse_log_line)
    .stop(sig) signal it and return the exit code
    """

    def __init__(self, args=(), env=None, stats_socket=True, timeout=10,
                 binary=None, listen='127.0.0.1:0', tinybird=None,
                 private_defaults=True, start=True, prefix=()):
        """tinybird: a FakeTinybird to deliver to (adds --tinybird-url and
        TINYBIRD_API_KEY).  private_defaults: unless args set them, point
        --ip-hash-key-file into the temp dir (its default is under /var/lib)
        and --catalog at daemon/catalog.json.  listen None: no --listen
        flag.  prefix: a command the daemon runs under (setpriv ...)."""
        self.binary = Path(binary) if binary else DAEMON_BIN
        self.args = list(args)
        env = dict(env or {})
        if tinybird is not None:
            self.args = ['--tinybird-url', tinybird.url] + self.args
            env.setdefault('TINYBIRD_API_KEY', tinybird.token)
        self.env = clean_env(env)
        self.private_defaults = private_defaults
        self.stats_socket = stats_socket
        self.timeout = timeout
        self.listen = listen
        self.prefix = list(prefix)
        self.proc = None
        self.port = None
        self.dir = None
        self._log_cache = None
        if start:
            self.start()

    def start(self):
        _require(self.binary)
        self.dir = Path(_short_tmpdir())
        self.stats_path = self.dir / 'stats.sock'
        cmd = self.prefix + [str(self.binary)]
        if self.listen is not None:
            cmd += ['--listen', self.listen]
        if self.stats_socket:
            cmd += ['--stats-socket', str(self.stats_path), '--stats-interval-ms', '100']
        if self.private_defaults:
            if not self._has_opt('--ip-hash-key-file'):
                cmd += ['--ip-hash-key-file', str(self.dir / 'ip-hash.key')]
            if not self._has_opt('--catalog') and REPO_CATALOG.is_file():
                cmd += ['--catalog', str(REPO_CATALOG)]
            if not self._has_opt('--spool-dir'):
                cmd += ['--spool-dir', str(self.dir / 'spool')]
        cmd += self.args
        self.cmd = cmd
        self.stderr_path = self.dir / 'stderr.log'
        self._stderr = open(self.stderr_path, 'wb')
        self._stdout = open(self.dir / 'stdout.log', 'wb')
        self.proc = subprocess.Popen(cmd, cwd=self.dir, env=self.env, stdin=subprocess.DEVNULL,
                                     stdout=self._stdout, stderr=self._stderr)
        try:
            self.port = self._wait_listening()
        except BaseException:
            self.cleanup()
            raise
        self.addr = f'127.0.0.1:{self.port}'
        return self

    def _has_opt(self, name):
        return any(a == name or a.startswith(name + '=') for a in self.args)

    def _wait_listening(self):
        addr_re = re.compile(r'127\.0\.0\.1:(\d+)')
        deadline = time.monotonic() + self.timeout
        while True:
            for rec in self.log_records():
                if rec.get('event') == 'listening':
                    m = addr_re.fullmatch(rec.get('addr', ''))
                    if m and int(m.group(1)) != 0:
                        return int(m.group(1))
            if self.proc.poll() is not None:
                raise AssertionError(f"birdfeederd exited with {self.proc.returncode} before "
                                     f"listening\ncmd: {self.cmd}\nstderr:\n{self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"birdfeederd logged no event=listening addr=127.0.0.1:PORT "
                                     f"within {self.timeout}s\ncmd: {self.cmd}\nstderr:\n{self.log()}")
            time.sleep(0.02)

    def log(self):
        if self._log_cache is not None:
            return self._log_cache
        try:
            return self.stderr_path.read_text(errors='replace')
        except (AttributeError, FileNotFoundError):
            return ''

    def log_records(self, event=None):
        """stderr lines parsed as dicts (parse_log_line), optionally only
        those of event=..."""
        recs = [parse_log_line(line) for line in self.log().splitlines() if line.strip()]
        return [r for r in recs if event is None or r.get('event') == event]

    def stats(self, timeout=None):
        """Read one line from the stats socket and return it as a dict."""
        if not self.stats_socket:
            raise AssertionError("Daemon started with stats_socket=False")
        timeout = timeout or self.timeout

        def once():
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(timeout)
                s.connect(str(self.stats_path))
                buf = b''
                while b'\n' not in buf:
                    chunk = s.recv(65536)
                    if not chunk:
                        raise ConnectionError(f"stats socket closed after {buf!r}")
                    buf += chunk
                return json.loads(buf.split(b'\n', 1)[0])

        # The socket may appear a moment after the listening line.
        return wait_until(once, timeout=timeout, interval=0.05, msg="stats line",
                          ignore=(FileNotFoundError, ConnectionRefusedError))

    def send_signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, sig=signal.SIGTERM, timeout=10):
        """Send sig and wait; returns the exit code (negative = killed by signal).
        Raises AssertionError (after SIGKILL) if it does not exit in time."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._kill()
                raise AssertionError(f"birdfeederd did not exit within {timeout}s of "
                                     f"signal {sig!r}\nstderr:\n{self.log()}") from None
        return self.proc.returncode

    def _kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass

    def cleanup(self):
        """Kill if still running, keep the log text, delete the temp dir."""
        if self.proc and self.proc.poll() is None:
            try:
                self.stop(timeout=5)
            except AssertionError:
                pass
        for f in (getattr(self, '_stderr', None), getattr(self, '_stdout', None)):
            if f and not f.closed:
                f.close()
        if self.dir and self._log_cache is None:
            self._log_cache = self.log()
            if os.environ.get('BIRDFEEDER_KEEP_TMP') == '1':
                sys.stderr.write(f"\nkept daemon dir {self.dir}\n")
            else:
                shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.cleanup()
        return False


# ---------------------------------------------------------------------------
# senders
# ---------------------------------------------------------------------------

def send_json_lines(lines, port, timeout=10, args=(), env=None):
    """Pipe lines into `build/birdfeeder send --to 127.0.0.1:PORT`.

    lines: str/bytes (sent as-is) or objects (JSON-encoded). Returns the
    CompletedProcess (stdout/stderr captured as bytes)."""
    _require(CLI_BIN)
    out = []
    for line in lines:
        if isinstance(line, bytes):
            out.append(line)
        elif isinstance(line, str):
            out.append(line.encode())
        else:
            out.append(json.dumps(line, separators=(',', ':')).encode())
    data = b''.join(x + b'\n' for x in out)
    return subprocess.run([str(CLI_BIN), 'send', '--to', f'127.0.0.1:{port}', *args],
                          input=data, capture_output=True, timeout=timeout, env=clean_env(env))


def send_raw(datagram, port, host='127.0.0.1'):
    """Send one UDP datagram (bytes, or str encoded as UTF-8)."""
    if isinstance(datagram, str):
        datagram = datagram.encode()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(datagram, (host, port))


# ---------------------------------------------------------------------------
# test case base
# ---------------------------------------------------------------------------

class BirdfeederTestCase(unittest.TestCase):
    """Base for the integration tests.

    self.fake() / self.daemon() start a FakeTinybird / Daemon that stops when
    the test ends; self.tmpdir() makes a temp dir removed then (kept with
    BIRDFEEDER_KEEP_TMP=1).  When the test fails, the stderr of every daemon
    and fake it started this way is written to stderr.  Subclasses that
    override setUp must call super().setUp().
    """
    maxDiff = 4000
    tmp_prefix = 'bf-test-'

    def setUp(self):
        self._daemons = []
        self._fakes = []
        self.addCleanup(self._dump_logs_on_failure)

    # -- processes --------------------------------------------------------------

    def fake(self, **kw):
        tb = FakeTinybird(**kw)
        self._fakes.append(tb)
        self.addCleanup(tb.stop)
        return tb

    def daemon(self, args=(), tinybird=None, **kw):
        d = Daemon(list(args), tinybird=tinybird, **kw)
        self._daemons.append(d)
        self.addCleanup(d.cleanup)
        return d

    def tmpdir(self, prefix=None):
        """A fresh short temp dir (Unix sockets fit), removed after the test."""
        p = Path(_short_tmpdir(prefix or self.tmp_prefix))
        if os.environ.get('BIRDFEEDER_KEEP_TMP') != '1':
            self.addCleanup(shutil.rmtree, p, True)
        return p

    # -- assertions -------------------------------------------------------------

    def assert_no_quarantine(self, tb, datasets=DATASETS):
        for ds in datasets:
            self.assertEqual(tb.quarantine(ds), [], f"quarantined rows in {ds}")

    # -- logs of a failed test ----------------------------------------------------

    def _failed(self):
        outcome = getattr(self, '_outcome', None)
        result = getattr(outcome, 'result', None)
        if result is not None:
            for test, _ in list(getattr(result, 'failures', [])) + list(getattr(result, 'errors', [])):
                if test is self or getattr(test, 'test_case', None) is self:
                    return True
        return bool(getattr(outcome, 'errors', None) and any(e for _, e in outcome.errors))

    def _dump_logs_on_failure(self):
        if not self._failed():
            return
        for i, d in enumerate(self._daemons):
            log = d.log()
            if len(log) > 20000:
                log = log[:8000] + '\n[...]\n' + log[-12000:]
            sys.stderr.write(f"\n--- {self.id()}: birdfeederd #{i} stderr ---\n{log}")
        for i, tb in enumerate(self._fakes):
            log = tb.log()
            if log.strip():
                sys.stderr.write(f"\n--- {self.id()}: fake_tinybird #{i} stderr ---\n{log[-8000:]}")

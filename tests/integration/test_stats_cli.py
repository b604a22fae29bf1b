"""`birdfeeder stats`: the live view, --once, --json and --prom.

Against a real daemon (harness.Daemon with a FakeTinybird) for the numbers,
and against a scripted stats socket (FakeStatsSocket) for what a daemon does
not do on demand: odd lines, unknown keys, a restart mid-view.
"""
import json
import os
import fcntl
import pty
import re
import select
import shutil
import signal
import socket
import subprocess
import struct
import sys
import tempfile
import termios
import threading
import time
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from harness import (CLI_BIN, REPO, BirdfeederTestCase, _require,  # noqa: E402
                     check_prometheus, clean_env, send_json_lines, send_raw, wait_until)

def run_stats(*args, env=None, timeout=20):
    _require(CLI_BIN)
    return subprocess.run([str(CLI_BIN), 'stats', *args], capture_output=True, text=True,
                          timeout=timeout, env=clean_env(env))


def images(n, prefix='i'):
    return [{"dataset": "image_events", "model": "flux", "id": f"{prefix}{k}"} for k in range(n)]


def llms(n, prefix='l'):
    return [{"dataset": "llm_events", "model": "gpt-5-nano", "id": f"{prefix}{k}"}
            for k in range(n)]


class FakeStatsSocket:
    """A Unix stream socket that plays the daemon's side: every client that
    connects gets the next script from `scripts` (a list of lists of raw
    lines, bytes), one line every `interval` s, then is closed (or kept open
    with hold=True)."""

    def __init__(self, scripts, interval=0.05, hold=False):
        self.dir = tempfile.mkdtemp(prefix='bfs-', dir='/tmp')
        self.path = os.path.join(self.dir, 'stats.sock')
        self.scripts = list(scripts)
        self.interval = interval
        self.hold = hold
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        self.sock.listen(4)
        self.sock.settimeout(0.2)
        self.stop_ev = threading.Event()
        self.connections = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stop_ev.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.connections += 1
            script = self.scripts.pop(0) if self.scripts else []
            with conn:
                try:
                    for line in script:
                        conn.sendall(line)
                        time.sleep(self.interval)
                    while self.hold and not self.stop_ev.is_set():
                        time.sleep(0.05)
                except OSError:
                    pass

    def close(self):
        self.stop_ev.set()
        self.sock.close()
        self.thread.join(timeout=5)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def snapshot(ts, uptime, **kw):
    base = {"ts_ms": ts, "uptime_ms": uptime, "received": 0, "received_bytes": 0,
            "rejected_total": 0, "rejected": {"bad_magic": 0}, "accepted_total": 0,
            "accepted": {"image_events": 0, "llm_events": 0},
            "rows_delivered_total": 0, "rows_delivered": {"image_events": 0, "llm_events": 0},
            "http": {}, "memory_cap": 67108864, "memory_bytes": 0, "last_flush_ok_ms": 0}
    base.update(kw)
    return (json.dumps(base, separators=(',', ':')) + '\n').encode()


def stats_def_rows():
    """The rows of daemon/stats.def, as docs/gen_stats_doc.py reads them."""
    p = subprocess.run([sys.executable, str(REPO / 'docs' / 'gen_stats_doc.py'), '--json'],
                       capture_output=True, text=True, timeout=60, check=True)
    return json.loads(p.stdout)


class TestStatsTable(unittest.TestCase):
    # The table in docs/operations.md is checked with the other generated
    # docs (test_cli.py, TestProtocolFiles).
    def test_every_row_has_help_and_counters_end_in_total(self):
        for r in stats_def_rows():
            with self.subTest(key=r['key']):
                self.assertTrue(r['help'].strip())
                if r['prom'] and r['type'] == 'counter':
                    self.assertTrue(r['prom'].endswith('_total'), r['prom'])


class TestPrometheusCheck(unittest.TestCase):
    """harness.check_prometheus is what --prom and GET /metrics are held to:
    it must refuse each mistake it names, or their tests could not fail."""

    GOOD = ('# HELP bf_rx_total Datagrams received.\n# TYPE bf_rx_total counter\n'
            'bf_rx_total{ds="a"} 3\nbf_rx_total{ds="b"} 4\n'
            '# HELP bf_q Queue.\n# TYPE bf_q gauge\nbf_q 0.5\n')

    def test_a_good_exposition_passes(self):
        fams = check_prometheus(self.GOOD)
        self.assertEqual(fams['bf_rx_total']['samples'][(('ds', 'b'),)], 4.0)

    def test_each_mistake_is_refused(self):
        h, t = '# HELP bf_x_total X.\n', '# TYPE bf_x_total counter\n'
        g = '# HELP bf_g G.\n# TYPE bf_g gauge\n'
        bad = {
            'no final newline': h + t + 'bf_x_total 1',
            'empty line': h + t + '\nbf_x_total 1\n',
            'no HELP': t + 'bf_x_total 1\n',
            'no TYPE': h + 'bf_x_total 1\n',
            'second HELP': h + h + t + 'bf_x_total 1\n',
            'empty HELP': '# HELP bf_x_total \n' + t + 'bf_x_total 1\n',
            'unknown type': h + '# TYPE bf_x_total histogram\nbf_x_total 1\n',
            'TYPE after samples': h + t + 'bf_x_total 1\n' + t,
            'sample outside its family': h + t + g + 'bf_g 1\nbf_x_total 1\n',
            'family split': h + t + 'bf_x_total{a="1"} 1\n' + g + 'bf_g 1\n'
                            'bf_x_total{a="2"} 1\n',
            'bad metric name': '# HELP 1bf X.\n# TYPE 1bf gauge\n1bf 1\n',
            'bad label': h + t + 'bf_x_total{a=1} 1\n',
            'unescaped quote': h + t + 'bf_x_total{a="x"y"} 1\n',
            'duplicate series': h + t + 'bf_x_total{a="1"} 1\nbf_x_total{a="1"} 2\n',
            'not a number': h + t + 'bf_x_total one\n',
            'NaN': g + 'bf_g NaN\n',
            'counter without _total': '# HELP bf_c C.\n# TYPE bf_c counter\nbf_c 1\n',
            'negative counter': h + t + 'bf_x_total -1\n',
            'family without samples': h + t + g + 'bf_g 1\n',
            'quantile on a gauge': g + 'bf_g{quantile="0.5"} 1\n',
            'summary without quantiles': '# HELP bf_s S.\n# TYPE bf_s summary\nbf_s 1\n',
        }
        for name, text in bad.items():
            with self.subTest(name):
                with self.assertRaises((AssertionError, ValueError)):
                    check_prometheus(text)


class StatsCliTestCase(BirdfeederTestCase):
    def setUp(self):
        _require(CLI_BIN)
        super().setUp()

    def daemon_with_events(self):
        """A daemon delivering to a FakeTinybird, after 7 image and 3 llm
        events and 2 bad datagrams (bad_magic, empty) were all counted."""
        tb = self.fake()
        d = self.daemon(tinybird=tb)
        p = send_json_lines(images(7) + llms(3), d.port)
        self.assertEqual(p.returncode, 0, p.stderr)
        send_raw(b'hello', d.port)
        send_raw(b'', d.port)
        wait_until(lambda: (lambda s: s['rows_delivered_total'] == 10 and s['received'] == 12)(
            d.stats()), msg='10 rows delivered, 12 datagrams received')
        return tb, d


class TestAgainstDaemon(StatsCliTestCase):
    def test_once_shows_the_counts(self):
        _, d = self.daemon_with_events()
        t0 = time.monotonic()
        p = run_stats('--socket', str(d.stats_path), '--once')
        took = time.monotonic() - t0
        self.assertEqual(p.returncode, 0, p.stderr)
        out = p.stdout
        sys.stderr.write('\n' + out)
        self.assertLess(took, 8, 'rates take about one second, not more')
        self.assertIn('rates over', out)
        expect = [
            r'^received\s+12\s+\S+/s\s+\d+ B$',
            r'^accepted\s+10\s+0/s\s+image_events 7, llm_events 3$',
            r'^rejected\s+2\s+0/s\s+.*\bempty 1\b',
            r'^rejected\s+.*\bbad_magic 1\b',
            r'^batched\s+10\b',
            r'^delivered\s+10\s+0/s\s+image_events 7, llm_events 3$',
            r'^dropped\s+0\s+0/s$',
            r'^requests\s+\d+\s+0/s\s+200 \d+',
            r'^retries\s+0\b',
            r'^memory\s+.* of 64\.0 MiB',
            r'^socket\s+queue .* kernel drops 0',
            r'^last flush\s+\d+(\.\d)?s ago$',
        ]
        for pattern in expect:
            self.assertRegex(out, re.compile(pattern, re.M))
        self.assertNotIn('\x1b', out, '--once writes no escape codes')

    def test_once_rates_under_load(self):
        _, d = self.daemon_with_events()
        events = b''.join(json.dumps(e).encode() + b'\n' for e in images(1, 'load'))
        sender = subprocess.Popen([str(CLI_BIN), 'send', '--to', d.addr, '--rate', '500',
                                   '--repeat', '2000'], stdin=subprocess.PIPE,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  env=clean_env())
        self.addCleanup(lambda: (sender.kill(), sender.wait()))
        sender.stdin.write(events)
        sender.stdin.close()
        wait_until(lambda: d.stats()['received'] > 100, msg='load started')
        p = run_stats('--socket', str(d.stats_path), '--once')
        self.assertEqual(p.returncode, 0, p.stderr)
        m = re.search(r'^received\s+(\d+)\s+(\d+(?:\.\d)?)/s', p.stdout, re.M)
        self.assertTrue(m, p.stdout)
        rate = float(m.group(2))
        # 500/s sent; allow for a slow (sanitizer) build and timer jitter.
        self.assertGreater(rate, 150, p.stdout)
        self.assertLess(rate, 1000, p.stdout)
        self.assertRegex(p.stdout, re.compile(r'^accepted\s+\d+\s+\d+(\.\d)?/s', re.M))

    def test_json_passes_lines_through(self):
        _, d = self.daemon_with_events()
        p = run_stats('--socket', str(d.stats_path), '--json', '--once')
        self.assertEqual(p.returncode, 0, p.stderr)
        lines = p.stdout.splitlines()
        self.assertEqual(len(lines), 1, p.stdout)
        obj = json.loads(lines[0])
        # As the daemon wrote it: compact, same keys in the same order.
        self.assertEqual(lines[0], json.dumps(obj, separators=(',', ':')))
        self.assertEqual(list(obj), list(d.stats()))
        self.assertEqual(obj['received'], 12)
        self.assertEqual(obj['accepted'], {'image_events': 7, 'llm_events': 3})

        # Streaming: one line per interval (100 ms in the harness).
        proc = subprocess.Popen([str(CLI_BIN), 'stats', '--socket', str(d.stats_path),
                                 '--json'], stdout=subprocess.PIPE, env=clean_env())
        self.addCleanup(lambda: (proc.kill(), proc.wait(), proc.stdout.close()))
        got = [json.loads(proc.stdout.readline()) for _ in range(4)]
        ts = [o['ts_ms'] for o in got]
        self.assertEqual(ts, sorted(ts))
        self.assertGreater(ts[-1], ts[0])

    def test_prom_is_valid_and_has_the_counts(self):
        _, d = self.daemon_with_events()
        p = run_stats('--socket', str(d.stats_path), '--prom')
        self.assertEqual(p.returncode, 0, p.stderr)
        fams = check_prometheus(p.stdout)

        def value(name, **labels):
            self.assertIn(name, fams, f'{name} missing from:\n{p.stdout}')
            return fams[name]['samples'][tuple(sorted(labels.items()))]

        self.assertEqual(fams['birdfeeder_received_total']['type'], 'counter')
        self.assertEqual(value('birdfeeder_received_total'), 12)
        self.assertEqual(value('birdfeeder_accepted_total', dataset='image_events'), 7)
        self.assertEqual(value('birdfeeder_accepted_total', dataset='llm_events'), 3)
        self.assertEqual(value('birdfeeder_rejected_total', reason='bad_magic'), 1)
        self.assertEqual(value('birdfeeder_rejected_total', reason='empty'), 1)
        self.assertEqual(value('birdfeeder_rows_delivered_total', dataset='image_events'), 7)
        self.assertGreaterEqual(value('birdfeeder_http_requests_total', status='200'), 1)
        self.assertEqual(value('birdfeeder_rows_dropped_total', reason='shutdown'), 0)
        self.assertEqual(fams['birdfeeder_memory_cap_bytes']['type'], 'gauge')
        self.assertEqual(value('birdfeeder_memory_cap_bytes'), 64 * 1024 * 1024)
        self.assertEqual(fams['birdfeeder_spool_bytes']['type'], 'gauge')
        self.assertGreater(value('birdfeeder_last_flush_ok_timestamp_seconds'), 1.6e9)
        # The sums (rejected_total in the JSON) are not exported twice.
        self.assertNotIn('birdfeeder_rejected_total_total', fams)

    def test_line_and_prom_follow_stats_def(self):
        # daemon/stats.def is the one list: the line has its keys in its
        # order, and --prom its names and types, no more and no fewer.
        rows = stats_def_rows()
        _, d = self.daemon_with_events()
        wait_until(lambda: d.stats()['ack_delay_ms']['p50'] is not None,
                   msg='a delay measured')
        self.assertEqual(list(d.stats()), [r['key'] for r in rows])
        p = run_stats('--socket', str(d.stats_path), '--prom')
        self.assertEqual(p.returncode, 0, p.stderr)
        fams = check_prometheus(p.stdout)
        want = {'birdfeeder_' + r['prom']: r['type'] for r in rows if r['prom']}
        self.assertEqual({name: f['type'] for name, f in fams.items()}, want)

    def test_default_socket_from_environment(self):
        _, d = self.daemon_with_events()
        p = run_stats('--json', '--once', env={'BIRDFEEDER_STATS_SOCKET': str(d.stats_path)})
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(json.loads(p.stdout)['received'], 12)


class TestAgainstScriptedSocket(StatsCliTestCase):
    def test_missing_socket_is_exit_1_with_a_hint(self):
        p = run_stats('--socket', '/nonexistent/bf/stats.sock', '--once')
        self.assertEqual(p.returncode, 1)
        self.assertIn('/nonexistent/bf/stats.sock', p.stderr)
        self.assertIn('is birdfeederd running', p.stderr)
        self.assertEqual(p.stdout, '')

    def test_usage_errors(self):
        self.assertEqual(run_stats('--json', '--prom').returncode, 2)
        self.assertEqual(run_stats('extra').returncode, 2)
        self.assertEqual(run_stats('--bogus').returncode, 2)

    def test_json_is_byte_for_byte(self):
        odd = [b'{"ts_ms": 1,  "x" : [1, 2]}\n', b'{"ts_ms":2,"\\u00e9":"\xc3\xa9"}\n',
               b'{"ts_ms":3}\n']
        with FakeStatsSocket([odd]) as fake:
            p = subprocess.run([str(CLI_BIN), 'stats', '--socket', fake.path, '--json'],
                               capture_output=True, timeout=20, env=clean_env())
        self.assertEqual(p.returncode, 0, p.stderr)  # the daemon closed: clean end
        self.assertEqual(p.stdout, b''.join(odd))

    def test_sink_state_in_the_view_and_as_a_state_set(self):
        hint = 'http://127.0.0.1:1 refused the token sent for image_events'
        line = snapshot(1000, 10, sink_state='unauthorized', sink_hint=hint)
        with FakeStatsSocket([[line]], hold=True) as fake:
            p = run_stats('--socket', fake.path, '--prom')
        self.assertEqual(p.returncode, 0, p.stderr)
        fams = check_prometheus(p.stdout)
        self.assertEqual(fams['birdfeeder_sink_state']['type'], 'gauge')
        self.assertEqual(fams['birdfeeder_sink_state']['samples'],
                         {(('state', 'ok'),): 0, (('state', 'retrying'),): 0,
                          (('state', 'not_found'),): 0, (('state', 'unauthorized'),): 1})
        self.assertFalse([n for n in fams if 'hint' in n], fams.keys())
        with FakeStatsSocket([[line]]) as fake:
            p = run_stats('--socket', fake.path, '--once')
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertRegex(p.stdout, re.compile(r'^sink\s+unauthorized: ' + re.escape(hint) + '$',
                                              re.M))

    def test_pacing_in_the_view_and_as_state_sets_by_dataset(self):
        line = snapshot(1000, 10, flush_interval_ms={"image_events": 1000, "llm_events": 3400},
                        pacing={"image_events": "normal", "llm_events": "rate_limited"})
        with FakeStatsSocket([[line]], hold=True) as fake:
            p = run_stats('--socket', fake.path, '--prom')
        self.assertEqual(p.returncode, 0, p.stderr)
        fams = check_prometheus(p.stdout)
        self.assertEqual(fams['birdfeeder_flush_interval_seconds']['samples'],
                         {(('dataset', 'image_events'),): 1.0, (('dataset', 'llm_events'),): 3.4})
        self.assertEqual(fams['birdfeeder_pacing']['type'], 'gauge')
        want = {}
        for ds, cur in (('image_events', 'normal'), ('llm_events', 'rate_limited')):
            for st in ('normal', 'rate_limited', 'off'):
                want[(('dataset', ds), ('state', st))] = int(st == cur)
        self.assertEqual(fams['birdfeeder_pacing']['samples'], want)
        with FakeStatsSocket([[line]]) as fake:
            p = run_stats('--socket', fake.path, '--once')
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertRegex(p.stdout, re.compile(
            r'^pacing\s+image_events 1\.0s normal, llm_events 3\.4s rate_limited$', re.M))

    def test_prom_exports_unknown_keys_as_gauges(self):
        line = snapshot(1000, 10, received=5, new_counter=3,
                        new_map={"a-b": 1, "c": 2},
                        ack_delay_ms={"p50": 12, "p99": 250, "p999": 900, "window_s": 60},
                        queue_delay_ms={"p50": 1.5}, text_key="ignored")
        with FakeStatsSocket([[line]], hold=True) as fake:
            p = run_stats('--socket', fake.path, '--prom')
        self.assertEqual(p.returncode, 0, p.stderr)
        fams = check_prometheus(p.stdout)
        self.assertEqual(fams['birdfeeder_received_total']['samples'][()], 5)
        self.assertEqual(fams['birdfeeder_new_counter']['type'], 'gauge')
        self.assertEqual(fams['birdfeeder_new_map']['samples'],
                         {(('key', 'a-b'),): 1, (('key', 'c'),): 2})
        self.assertEqual(fams['birdfeeder_ack_delay_seconds']['samples'],
                         {(('quantile', '0.5'),): 0.012, (('quantile', '0.99'),): 0.25,
                          (('quantile', '0.999'),): 0.9})
        self.assertEqual(fams['birdfeeder_queue_delay_ms']['samples'],
                         {(('quantile', '0.5'),): 1.5})
        self.assertFalse([n for n in fams if 'ts_ms' in n or 'text_key' in n], fams.keys())

    def test_once_with_one_line_shows_totals(self):
        with FakeStatsSocket([[snapshot(1000, 10, received=42,
                                        accepted={"image_events": 40, "llm_events": 2})]]) as f:
            p = run_stats('--socket', f.path, '--once')
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn('totals only', p.stdout)
        self.assertRegex(p.stdout, re.compile(r'^received\s+42\s+-/s', re.M))
        self.assertRegex(p.stdout, re.compile(r'^accepted\s+42\s+-/s\s+image_events 40, '
                                              r'llm_events 2$', re.M))
        self.assertRegex(p.stdout, re.compile(r'^last flush\s+never$', re.M))

    def test_once_rates_from_two_lines(self):
        script = [snapshot(10_000, 5_000, received=100, rejected={"bad_magic": 0},
                           http={"200": 1}),
                  snapshot(12_000, 7_000, received=2_100, rejected={"bad_magic": 40},
                           http={"200": 5, "503": 2}, last_flush_ok_ms=11_500,
                           ack_delay_ms={"p50": 20, "p99": 700, "window_s": 120})]
        with FakeStatsSocket([script]) as f:
            p = run_stats('--socket', f.path, '--once')
        self.assertEqual(p.returncode, 0, p.stderr)
        out = p.stdout
        self.assertIn('rates over 2.0s', out)
        self.assertRegex(out, re.compile(r'^received\s+2100\s+1000/s', re.M))
        self.assertRegex(out, re.compile(r'^rejected\s+40\s+20\.0/s\s+bad_magic 40 \(20\.0/s\)$',
                                         re.M))
        self.assertRegex(out, re.compile(r'^requests\s+7\s+3\.0/s\s+200 5 \(2\.0/s\), '
                                         r'503 2 \(1\.0/s\)$', re.M))
        self.assertRegex(out, re.compile(r'^last flush\s+0\.5s ago$', re.M))
        self.assertRegex(out, re.compile(r'^latency\s+p50 20 ms, p99 700 ms', re.M))

    def test_live_view_redraws_on_a_terminal_and_reconnects(self):
        first = [snapshot(1000 + 100 * k, 100 * k, received=10 * k) for k in range(3)]
        second = [snapshot(50_000 + 100 * k, 100 * k, received=k) for k in range(3)]
        with FakeStatsSocket([first, second], interval=0.1) as fake:
            master, slave = pty.openpty()
            # stdin is not a terminal: frames redrawn in place, no keys.
            proc = subprocess.Popen([str(CLI_BIN), 'stats', '--socket', fake.path],
                                    stdin=subprocess.DEVNULL, stdout=slave,
                                    stderr=subprocess.DEVNULL, env=clean_env())
            os.close(slave)
            out = b''
            deadline = time.monotonic() + 15
            try:
                # 3 frames, the reconnect notice, 3 frames.
                while out.count(b'\x1b[H') < 7 and time.monotonic() < deadline:
                    r, _, _ = select.select([master], [], [], 0.2)
                    if r:
                        try:
                            out += os.read(master, 65536)
                        except OSError:
                            break
            finally:
                proc.kill()
                proc.wait()
                os.close(master)
        text = out.decode(errors='replace')
        self.assertGreaterEqual(fake.connections, 2, text)
        self.assertIn('\x1b[?1049h', text)               # the alternate screen
        self.assertIn('\x1b[H', text)                    # home, per frame
        self.assertIn('(Ctrl-C quits)', text)            # no keys without a terminal
        self.assertIn('rates over 0.1s', text)
        self.assertRegex(text, r'received\s+20\s+100/s')  # 10 per 100 ms
        self.assertIn('connection closed, reconnecting', text)
        # After the reconnect the first frame has no rates: another daemon.
        after = text.split('reconnecting', 1)[1]
        self.assertIn('totals only', after)

    def test_live_view_on_a_pipe_has_no_escape_codes(self):
        lines = [snapshot(1000 + 100 * k, 100 * k, received=k) for k in range(3)]
        with FakeStatsSocket([lines], interval=0.05, hold=True) as fake:
            proc = subprocess.Popen([str(CLI_BIN), 'stats', '--socket', fake.path],
                                    stdout=subprocess.PIPE, env=clean_env())
            self.addCleanup(lambda: (proc.kill(), proc.wait(), proc.stdout.close()))
            frames = []
            buf = b''
            while len(frames) < 3:
                line = proc.stdout.readline()
                self.assertTrue(line, 'view ended early')
                if line == b'\n':
                    frames.append(buf)
                    buf = b''
                else:
                    buf += line
        self.assertNotIn(b'\x1b', b''.join(frames))
        self.assertIn(b'totals only', frames[0])
        self.assertIn(b'rates over 0.1s', frames[2])



ESC_RE = re.compile(r'\x1b\[[?0-9;]*[A-Za-z]')


def screen_frames(out):
    """The complete frames of a live view's output on a terminal: the text
    from each cursor-home to its clear-below, as lists of lines without
    escape codes."""
    text = out.decode('utf-8', errors='replace')
    frames = []
    for part in text.split('\x1b[H')[1:]:
        if '\x1b[J' not in part:
            continue  # not all read yet
        part = part.split('\x1b[J', 1)[0]
        lines = ESC_RE.sub('', part).replace('\r', '').split('\n')
        frames.append(lines)
    return frames


class LiveTerminal:
    """`birdfeeder stats` on a pseudo-terminal of cols x rows, as a person
    runs it: stdin, stdout and stderr on the terminal, in a session of its
    own (so the terminal is its controlling one)."""

    def __init__(self, path, cols=80, rows=24, env=None):
        self.master, self.slave = pty.openpty()
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack('HHHH', rows, cols, 0, 0))
        self.before = termios.tcgetattr(self.slave)
        self.proc = subprocess.Popen([str(CLI_BIN), 'stats', '--socket', path],
                                     stdin=self.slave, stdout=self.slave, stderr=self.slave,
                                     env=clean_env(env), start_new_session=True)
        self.out = b''

    def read_until(self, pred, timeout=15):
        deadline = time.monotonic() + timeout
        while not pred(self.out) and time.monotonic() < deadline:
            r, _, _ = select.select([self.master], [], [], 0.1)
            if r:
                try:
                    self.out += os.read(self.master, 65536)
                except OSError:
                    break
        return pred(self.out)

    def wait(self, timeout=10):
        """Wait for the exit, reading what it writes; the exit code."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            self.read_until(lambda o: False, timeout=0.1)
        self.read_until(lambda o: False, timeout=0.2)
        return self.proc.wait(timeout=1)

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)
        os.close(self.slave)


class TestLiveTerminal(StatsCliTestCase):
    """The live view on a terminal: q quits, the terminal is given back on
    every way out, a small window keeps the header and cuts lines, and the
    event rate of the last minute is a sparkline."""

    def live(self, path, **kw):
        t = LiveTerminal(path, **kw)
        self.addCleanup(t.close)
        return t

    @staticmethod
    def steady_then_drop(n=40, step_ms=1000, rate=1000, drop_at=30):
        """One line per step_ms of daemon time: rate events/s, then none."""
        lines, received = [], 0
        for k in range(n):
            if k and k < drop_at:
                received += rate * step_ms // 1000
            lines.append(snapshot(1_000_000 + step_ms * k, 60_000 + step_ms * k,
                                  received=received))
        return lines

    def test_q_quits_and_the_terminal_is_as_before(self):
        with FakeStatsSocket([self.steady_then_drop(5)], interval=0.02, hold=True) as fake:
            t = self.live(fake.path)
            self.assertTrue(t.read_until(lambda o: b'(q quits)' in o), t.out)
            self.assertEqual(termios.tcgetattr(t.slave)[3] & (termios.ICANON | termios.ECHO), 0,
                             'cbreak while running')
            os.write(t.master, b'q')
            self.assertEqual(t.wait(timeout=5), 0)
        self.assertEqual(termios.tcgetattr(t.slave), t.before)
        self.assertTrue(t.out.endswith(b'\x1b[?7h\x1b[?25h\x1b[?1049l'), t.out[-60:])

    def test_a_signal_gives_the_terminal_back_first(self):
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            with self.subTest(signal=sig.name), \
                    FakeStatsSocket([self.steady_then_drop(3)], interval=0.02, hold=True) as f:
                t = self.live(f.path)
                self.assertTrue(t.read_until(lambda o: b'(q quits)' in o), t.out)
                t.proc.send_signal(sig)
                self.assertEqual(t.wait(timeout=5), -sig)
                self.assertEqual(termios.tcgetattr(t.slave), t.before)
                self.assertIn(b'\x1b[?1049l', t.out)

    def test_q_while_waiting_to_reconnect(self):
        with FakeStatsSocket([self.steady_then_drop(2)], interval=0.02) as fake:
            t = self.live(fake.path)
            self.assertTrue(t.read_until(lambda o: b'reconnecting' in o), t.out)
            fake.close()  # nobody will answer again
            os.write(t.master, b'q')
            self.assertEqual(t.wait(timeout=5), 0)
        self.assertEqual(termios.tcgetattr(t.slave), t.before)

    def test_small_terminals_keep_the_header_and_cut_lines(self):
        for cols, rows in ((80, 24), (60, 12), (40, 8)):
            with self.subTest(size=f'{cols}x{rows}'), \
                    FakeStatsSocket([self.steady_then_drop(6)], interval=0.02, hold=True) as f:
                t = self.live(f.path, cols=cols, rows=rows, env={'LC_ALL': 'C.UTF-8'})
                self.assertTrue(t.read_until(lambda o: len(screen_frames(o)) >= 6), t.out)
                self.assertIn(b'\x1b[?7l', t.out)  # no autowrap either
                for lines in screen_frames(t.out):
                    self.assertLessEqual(len(lines), rows, lines)
                    self.assertTrue(lines[0].startswith('birdfeederd '), lines)
                    for line in lines:
                        self.assertLessEqual(len(line), cols, line)
                last = screen_frames(t.out)[-1]
                if rows >= 24:  # everything fits: the frame ends with the key
                    self.assertEqual(last[-1], '(q quits)')
                else:           # the bottom is cut, the top kept
                    self.assertEqual(len(last), rows)
                    self.assertEqual(last[1].split(), ['total', 'rate'])

    def sparkline(self, env):
        with FakeStatsSocket([self.steady_then_drop(40)], interval=0.01, hold=True) as f:
            t = self.live(f.path, cols=120, rows=30, env=env)
            self.assertTrue(t.read_until(lambda o: len(screen_frames(o)) >= 40), t.out)
        line = [x for x in screen_frames(t.out)[-1] if x.startswith('rate 1m')][0]
        m = re.fullmatch(r'rate 1m\s{6}(.{60}) (\S+)/s, max (\S+)/s', line)
        self.assertTrue(m, line)
        return m.group(1), m.group(2), m.group(3)

    def test_sparkline_of_the_last_minute_shows_the_drop(self):
        bars, now, top = self.sparkline({'LC_ALL': 'C.UTF-8'})
        # 39 s of lines: the first 20 s empty, 29 s at 1000/s, then none.
        self.assertEqual((now, top), ('0', '1000'))
        self.assertEqual(bars[:21].strip(), '')
        self.assertEqual(set(bars[22:49]), {'\u2588'})
        self.assertEqual(bars[-9:], ' ' * 9)

    def test_sparkline_in_ascii_without_utf8(self):
        bars, _, _ = self.sparkline({'LC_ALL': 'C'})
        self.assertEqual(set(bars[22:49]), {'@'})
        self.assertTrue(all(ord(c) < 128 for c in bars))

if __name__ == '__main__':
    unittest.main()

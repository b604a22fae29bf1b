"""SIGHUP (systemctl reload) applies every option that can change without
rebinding a socket, each observed doing its new job in a running daemon:

  flush-bytes, flush-interval-ms       batch sizes and ages
  max-memory, max-spool-bytes,         the memory cap (new batches spool),
  spool-segment-bytes                  the spool cap (trimmed at once), segments
  max-dead-letter-bytes                the dead-letter file's rotation
  backoff-min-ms, backoff-max-ms       the waits between retries
  http-timeout-ms, max-inflight        a slow Tinybird, requests at once
  token, token-file, tinybird-url      a new token (its file read again), another region host
  out                                  the file sink's file
  log-level, log-format                the log
  stats-interval-ms, stats-socket-group,  the stats socket
  stats-max-clients
  rcvbuf, max-datagram                 the UDP socket, as it is
  shutdown-timeout-ms                  the drain's deadline
  (catalog: test_delivery.py; max-event-age: test_daemon.py; pacing,
  max-flush-interval-ms: test_fleet.py; allow-uid, allow-gid: test_listen.py)

and names those that need a restart (here metrics-listen, which binds).
The options are changed in the --config file: flags and the environment
beat the file, and the harness passes a few as flags (listen, the stats
socket, the spool directory), which is why those stay out of the file.
"""
import json
import os
import signal
import stat
import sys
import time
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from harness import (BirdfeederTestCase, send_json_lines, send_raw,  # noqa: E402
                     stat_at_least, wait_until)

IMAGE = 'image_events'


def images(n, prefix, prompt_words=8):
    return [{"dataset": IMAGE, "model": "flux", "id": f"{prefix}{k}",
             "prompt": "a red bird on a feeder " * prompt_words} for k in range(n)]


class ReloadTestCase(BirdfeederTestCase):

    def start(self, conf, args=(), **kw):
        """A daemon reading conf (a dict) from its --config file."""
        self.conf_path = self.tmpdir() / 'birdfeeder.json'
        self.conf = dict(conf)
        self.write_conf()
        return self.daemon(['--config', str(self.conf_path)] + list(args), **kw)

    def write_conf(self):
        self.conf_path.write_text(json.dumps(self.conf))
        self.conf_path.chmod(0o600)  # it may hold the token

    def reload(self, d, **changes):
        """Change the file, SIGHUP, wait for the reloaded line; it (a dict)."""
        self.conf.update({k.replace('_', '-'): v for k, v in changes.items()})
        self.write_conf()
        n = len(d.log_records('reloaded'))
        d.send_signal(signal.SIGHUP)
        rec = wait_until(lambda: len(d.log_records('reloaded')) > n
                         and d.log_records('reloaded')[-1], msg='reloaded')
        for name in changes:
            self.assertIn(name.replace('_', '-'), rec['changed'].split(','), rec)
        self.assertEqual(rec['restart_needed'], 'none', rec)
        return rec

    def sink_conf(self, tb, **more):
        conf = {'tinybird-url': tb.url, 'token': tb.token}
        conf.update({k.replace('_', '-'): v for k, v in more.items()})
        return conf

    def send(self, events, d):
        p = send_json_lines(events, d.port)
        self.assertEqual(p.returncode, 0, p.stderr)


class TestBatches(ReloadTestCase):

    def test_flush_interval_then_flush_bytes(self):
        tb = self.fake()
        # Pacing off: the interval is the option, not a paced or jittered one.
        d = self.start(self.sink_conf(tb, flush_bytes='1MiB', flush_interval_ms=5000,
                                      pacing='off'))
        # A dataset's first batch closes at a random part of the interval
        # (hosts restarted together do not flush together): get it out.
        self.send(images(1, 'first'), d)
        tb.wait_rows(IMAGE, 1, timeout=10)
        self.send(images(20, 'a'), d)
        wait_until(stat_at_least(d, 'rows_batched.image_events', 21), msg='batched')
        time.sleep(1.0)  # a 5 s batch: nothing goes yet
        self.assertEqual(tb.row_count(IMAGE), 1)

        t0 = time.monotonic()
        self.reload(d, flush_interval_ms=300)  # the open batch is older: goes now
        tb.wait_rows(IMAGE, 21, timeout=5)
        self.assertLess(time.monotonic() - t0, 2.5)  # not at its 5 s

        self.reload(d, flush_interval_ms=60000, flush_bytes=4096)
        since = tb.requests()[-1]['id']
        self.send(images(40, 'b'), d)
        # Closed by size, long before 60 s (the last few wait in an open one).
        tb.wait_rows(IMAGE, 21 + 30, timeout=10)
        sizes = [r['rows_ok'] for r in tb.requests(since=since)]
        self.assertGreaterEqual(len(sizes), 4, sizes)
        self.assertLessEqual(max(sizes), 12, sizes)


class TestDelivery(ReloadTestCase):

    def test_backoff(self):
        tb = self.fake()
        d = self.start(self.sink_conf(tb, backoff_min_ms=3000, backoff_max_ms=3000))
        tb.faults(status=503)
        self.send(images(3, 'r'), d)
        wait_until(lambda: len(tb.requests()) >= 2, timeout=10, msg='a retry')
        t = [r['t'] for r in tb.requests()]
        self.assertGreaterEqual(t[1] - t[0], 1.4)  # uniform in 1.5 to 3 s
        self.reload(d, backoff_min_ms=100, backoff_max_ms=200)
        n = len(tb.requests())
        wait_until(lambda: len(tb.requests()) >= n + 4, timeout=10, msg='fast retries')
        t = [r['t'] for r in tb.requests()][n:]
        gaps = [b - a for a, b in zip(t, t[1:])]
        self.assertLess(max(gaps), 0.5, gaps)
        tb.faults(status=0)
        tb.wait_rows(IMAGE, 3)

    def test_http_timeout(self):
        tb = self.fake()
        d = self.start(self.sink_conf(tb, http_timeout_ms=500, backoff_min_ms=100,
                                      backoff_max_ms=200))
        tb.faults(delay_ms=1500)
        self.send(images(2, 't'), d)
        wait_until(lambda: d.stats()['http'].get('error', 0) >= 2, msg='timeouts')
        self.assertEqual(tb.row_count(IMAGE), 0)
        self.reload(d, http_timeout_ms=5000)
        tb.wait_rows(IMAGE, 2, timeout=10)

    def test_max_inflight(self):
        tb = self.fake()
        d = self.start(self.sink_conf(tb, max_inflight=1, flush_bytes=4096,
                                      flush_interval_ms=20))
        tb.faults(delay_ms=600)

        def starts_within(since, window):
            """Requests after since that start within window s of another."""
            t = sorted(r['t'] for r in tb.requests(since=since))
            return sum(1 for a, b in zip(t, t[1:]) if b - a < window)

        self.send(images(40, 'm'), d)
        wait_until(lambda: len(tb.requests()) >= 3, timeout=15, msg='requests')
        self.assertEqual(starts_within(0, 0.5), 0)  # one at a time
        tb.wait_rows(IMAGE, 40, timeout=30)
        self.reload(d, max_inflight=4)
        since = tb.requests()[-1]['id']
        self.send(images(40, 'n'), d)
        tb.wait_rows(IMAGE, 80, timeout=30)
        self.assertGreaterEqual(starts_within(since, 0.3), 2)  # several at once

    def test_token_then_url(self):
        a = self.fake(token='token-a')
        b = self.fake(token='token-b')
        d = self.start({'tinybird-url': a.url, 'token': 'wrong'})
        self.send(images(3, 'x'), d)
        wait_until(lambda: d.stats()['sink_state'] == 'unauthorized', msg='held')
        rec = self.reload(d, token='token-a')
        self.assertEqual(rec['token'], 'changed')
        a.wait_rows(IMAGE, 3)
        self.reload(d, tinybird_url=b.url, token='token-b')
        self.send(images(4, 'y'), d)
        b.wait_rows(IMAGE, 4)
        self.assertEqual(a.row_count(IMAGE), 3)
        self.assertEqual(sorted(r['id'] for r in b.rows(IMAGE)), ['y0', 'y1', 'y2', 'y3'])

    def test_token_file_read_again(self):
        tb = self.fake()
        tok = self.tmpdir() / 'token'
        tok.write_text('not-the-token\n')
        tok.chmod(0o600)
        d = self.start({'tinybird-url': tb.url, 'token-file': str(tok)})
        self.send(images(2, 'k'), d)
        wait_until(lambda: d.stats()['sink_state'] == 'unauthorized', msg='held')
        tok.write_text(tb.token + '\n')  # the file changes, the config does not
        n = len(d.log_records('reloaded'))
        d.send_signal(signal.SIGHUP)
        rec = wait_until(lambda: len(d.log_records('reloaded')) > n
                         and d.log_records('reloaded')[-1], msg='reloaded')
        self.assertEqual(rec['token'], 'changed')
        self.assertIn('token', rec['changed'].split(','))
        tb.wait_rows(IMAGE, 2)

    def test_out_of_the_file_sink(self):
        tmp = self.tmpdir()
        d = self.start({'out': str(tmp / 'a.ndjson'), 'flush-interval-ms': 50})
        self.send(images(2, 'f'), d)
        wait_until(lambda: (tmp / 'a.ndjson').exists()
                   and len((tmp / 'a.ndjson').read_text().splitlines()) == 2, msg='a')
        rec = self.reload(d, out=str(tmp / 'b.ndjson'))
        self.assertEqual(rec['sink'], 'reconfigured')
        self.send(images(3, 'g'), d)
        wait_until(lambda: (tmp / 'b.ndjson').exists()
                   and len((tmp / 'b.ndjson').read_text().splitlines()) == 3, msg='b')
        self.assertEqual(len((tmp / 'a.ndjson').read_text().splitlines()), 2)


class TestCaps(ReloadTestCase):

    def test_memory_then_spool_caps(self):
        tb = self.fake()
        d = self.start(self.sink_conf(tb, max_memory='64MiB', flush_bytes=4096,
                                      flush_interval_ms=20, backoff_min_ms=100,
                                      backoff_max_ms=200))
        tb.faults(down=True)
        self.send(images(60, 'p'), d)
        s = wait_until(stat_at_least(d, 'rows_batched.image_events', 60), msg='batched')
        self.assertEqual(s['rows_spooled'], 0)  # 64 MiB holds them
        self.assertEqual(s['memory_cap'], 64 << 20)

        self.reload(d, max_memory='64KiB', spool_segment_bytes=4096)
        self.assertEqual(d.stats()['memory_cap'], 65536)
        self.send(images(400, 'q'), d)
        s = wait_until(stat_at_least(d, 'rows_spooled', 100), timeout=20, msg='spooled')
        self.assertGreater(s['spool_segments'], 4)       # 4 KiB segments
        s = wait_until(stat_at_least(d, 'spool_bytes', 100_000), msg='spool written')
        self.assertEqual(s['dropped']['spool_full'], 0)

        self.reload(d, max_spool_bytes='64KiB')
        s = wait_until(lambda: (lambda s: s if s['spool_bytes'] <= 65536 else None)(
            d.stats()), msg='trimmed to the new cap')
        self.assertGreater(s['dropped']['spool_full'], 0)
        self.assertTrue(d.log_records('spool_full'))

    def test_dead_letter_cap(self):
        tb = self.fake()
        d = self.start(self.sink_conf(tb, flush_interval_ms=20,
                                      max_dead_letter_bytes='64MiB'))
        tb.faults(status=400)
        spool = d.dir / 'spool'
        for k in range(4):
            self.send(images(5, f'd{k}-'), d)
            wait_until(stat_at_least(d, 'rows_dead_lettered', 5 * (k + 1)), msg='dead')
        self.assertFalse((spool / 'dead-letter.1.ndjson').exists())
        self.assertGreater((spool / 'dead-letter.ndjson').stat().st_size, 4096)
        self.reload(d, max_dead_letter_bytes=4096)
        self.send(images(5, 'e'), d)
        wait_until(stat_at_least(d, 'rows_dead_lettered', 25), msg='dead after reload')
        wait_until(lambda: (spool / 'dead-letter.1.ndjson').exists(), msg='rotated')


class TestDaemonOptions(ReloadTestCase):

    def test_log_level_and_format(self):
        d = self.start({'log-level': 'info', 'max-memory': '64MiB'})
        # warn: info lines stop (the reloaded line too: it is info), warnings
        # go on. The reload is seen through its other change, in the stats.
        self.conf.update({'log-level': 'warn', 'max-memory': '32MiB'})
        self.write_conf()
        before = len(d.log().splitlines())
        d.send_signal(signal.SIGHUP)
        wait_until(lambda: d.stats()['memory_cap'] == 32 << 20, msg='reloaded')
        send_raw(b'not an event', d.port)
        wait_until(lambda: d.log_records('reject'), msg='reject at warn')
        quiet = [json.dumps(r) for r in d.log_records()[before:]]
        self.assertTrue(all('"level": "warn"' in r or '"level": "error"' in r
                            for r in quiet), quiet)
        # info and json: the reloaded line is the first JSON one.
        rec = self.reload(d, log_level='info', log_format='json')
        self.assertEqual(json.loads(d.log().splitlines()[-1])['event'], 'reloaded')
        self.assertIn('log-level', rec['changed'])

    def test_stats_interval_and_group(self):
        sock = self.tmpdir() / 's.sock'
        d = self.start({'stats-interval-ms': 1000, 'stats-socket-group': ''},
                       args=['--stats-socket', str(sock)], stats_socket=False)
        d.stats_path, d.stats_socket = sock, True

        def gaps(n):
            import socket as so
            with so.socket(so.AF_UNIX, so.SOCK_STREAM) as s:
                s.settimeout(10)
                s.connect(str(sock))
                f = s.makefile('rb')
                ts = [json.loads(f.readline())['ts_ms'] for _ in range(n + 2)][2:]
            return [b - a for a, b in zip(ts, ts[1:])]

        self.assertGreaterEqual(min(gaps(3)), 900)
        self.assertEqual(os.stat(sock).st_gid, os.getegid())
        group = 'nogroup' if os.geteuid() == 0 else str(os.getegid())
        self.reload(d, stats_interval_ms=100, stats_socket_group=group)
        self.assertLess(max(gaps(5)), 500)
        if os.geteuid() == 0:
            self.assertEqual(os.stat(sock).st_gid, 65534)
            self.reload(d, stats_socket_group='')
            self.assertEqual(os.stat(sock).st_gid, os.getegid())
        self.assertEqual(stat.S_IMODE(os.stat(sock).st_mode), 0o660)

    def test_stats_max_clients(self):
        import socket as so
        d = self.start({'stats-max-clients': 1})

        def reader():
            s = so.socket(so.AF_UNIX, so.SOCK_STREAM)
            s.settimeout(5)
            s.connect(str(d.stats_path))
            self.addCleanup(s.close)
            return s

        first = reader()
        self.assertTrue(first.recv(65536))
        second = reader()
        self.assertEqual(second.recv(65536), b'')  # closed as it connects
        self.reload(d, stats_max_clients=4)
        third = reader()
        self.assertTrue(third.recv(65536))

    def test_rcvbuf_and_max_datagram(self):
        d = self.start({'rcvbuf': '256KiB', 'max-datagram': '8KiB'})
        big = json.dumps({"dataset": IMAGE, "model": "flux", "prompt": "x" * 1500}).encode()
        send_raw(big, d.port)
        s = wait_until(stat_at_least(d, 'accepted_total', 1), msg='a 1.5 KB event')
        granted = s['rcvbuf_bytes']
        self.reload(d, rcvbuf='1MiB', max_datagram='1KiB')
        s = d.stats()
        if os.geteuid() == 0:  # SO_RCVBUFFORCE passes net.core.rmem_max
            self.assertEqual((granted, s['rcvbuf_bytes']), (2 * 256 * 1024, 2 * 1024 * 1024))
        else:
            self.assertGreaterEqual(s['rcvbuf_bytes'], granted)
        send_raw(big, d.port)
        s = wait_until(stat_at_least(d, 'rejected.oversize', 1), msg='oversize now')
        self.assertEqual(s['accepted_total'], 1)

    def test_shutdown_timeout(self):
        d = self.start({'shutdown-timeout-ms': 5000})
        self.reload(d, shutdown_timeout_ms=1200)
        self.assertEqual(d.stop(), 0)
        self.assertEqual(d.log_records('stopping')[0]['deadline_ms'], '1200')

    def test_a_listening_address_is_named_for_a_restart(self):
        d = self.start({'metrics-listen': '127.0.0.1:0'})
        addr = d.log_records('metrics_listening')[0]['addr']
        self.conf['metrics-listen'] = '127.0.0.2:0'
        self.write_conf()
        d.send_signal(signal.SIGHUP)
        rec = wait_until(lambda: d.log_records('reloaded'), msg='reloaded')[0]
        self.assertEqual(rec['restart_needed'], 'metrics-listen')
        self.assertEqual(rec['changed'], 'none')
        self.assertEqual(len(d.log_records('metrics_listening')), 1)
        import http.client
        c = http.client.HTTPConnection(*addr.rsplit(':', 1), timeout=5)
        self.addCleanup(c.close)
        c.request('GET', '/health')
        self.assertEqual(c.getresponse().status, 200)  # still the old address


if __name__ == '__main__':
    unittest.main()

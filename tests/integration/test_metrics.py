"""GET /metrics and GET /health (--metrics-listen).

/metrics is the stats line as a Prometheus exposition, the same families as
`birdfeeder stats --prom` (one writer, daemon/stats_prom.c); `promtool check
metrics` (Debian package prometheus, which .ci/run installs) must accept it.
/health is 200, or 503 with a JSON body naming each reason; the reasons at
their edges (60 s of backoff, 90% of the spool) are in tests/unit/test_health.c,
here each is reached through the real daemon.
"""
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from harness import (CLI_BIN, DAEMON_BIN, REPO, BirdfeederTestCase,  # noqa: E402
                     check_prometheus, clean_env, send_json_lines, stat_at_least,
                     wait_until)

METRICS = ['--metrics-listen', '127.0.0.1:0']
PROM_TYPE = 'text/plain; version=0.0.4; charset=utf-8'


def images(n, prefix='i'):
    return [{"dataset": "image_events", "model": "flux", "id": f"{prefix}{k}",
             "prompt": "a red bird on a feeder " * 8} for k in range(n)]


def metrics_port(d):
    rec = wait_until(lambda: d.log_records('metrics_listening'), msg='metrics_listening')[0]
    return int(rec['addr'].rsplit(':', 1)[1])


def get(port, path, method='GET', body=None, conn=None):
    """(status, headers dict with lower-case names, body bytes)."""
    c = conn or http.client.HTTPConnection('127.0.0.1', port, timeout=10)
    try:
        c.request(method, path, body=body)
        r = c.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        if conn is None:
            c.close()


def health(port):
    status, headers, body = get(port, '/health')
    assert headers['content-type'] == 'application/json', headers
    return status, json.loads(body)


def stats_def_families():
    p = subprocess.run([sys.executable, str(REPO / 'docs' / 'gen_stats_doc.py'), '--json'],
                       capture_output=True, text=True, timeout=60, check=True)
    return {'birdfeeder_' + r['prom']: r['type'] for r in json.loads(p.stdout) if r['prom']}


class TestMetrics(BirdfeederTestCase):

    def delivering_daemon(self, n=10):
        tb = self.fake()
        d = self.daemon(METRICS, tinybird=tb)
        p = send_json_lines(images(n), d.port)
        self.assertEqual(p.returncode, 0, p.stderr)
        wait_until(stat_at_least(d, 'rows_delivered_total', n), msg=f'{n} delivered')
        return tb, d

    def test_scrape_is_the_stats_line_with_the_names_of_stats_prom(self):
        _, d = self.delivering_daemon()
        status, headers, body = get(metrics_port(d), '/metrics')
        self.assertEqual(status, 200)
        self.assertEqual(headers['content-type'], PROM_TYPE)
        text = body.decode()
        fams = check_prometheus(text)
        self.assertEqual({n: f['type'] for n, f in fams.items()}, stats_def_families())
        self.assertEqual(fams['birdfeeder_received_total']['samples'][()], 10)
        self.assertEqual(
            fams['birdfeeder_rows_delivered_total']['samples'][(('dataset', 'image_events'),)],
            10)
        self.assertEqual(fams['birdfeeder_http_requests_total']['samples'].keys(),
                         {(('status', '200'),)})
        # The CLI's --prom from the stats socket: the same families and series.
        p = subprocess.run([str(CLI_BIN), 'stats', '--socket', str(d.stats_path), '--prom'],
                           capture_output=True, text=True, timeout=20, env=clean_env())
        self.assertEqual(p.returncode, 0, p.stderr)
        cli = check_prometheus(p.stdout)
        self.assertEqual({n: (f['type'], set(f['samples'])) for n, f in cli.items()},
                         {n: (f['type'], set(f['samples'])) for n, f in fams.items()})
        for name in ('birdfeeder_received_total', 'birdfeeder_accepted_total',
                     'birdfeeder_rows_delivered_total', 'birdfeeder_memory_cap_bytes'):
            self.assertEqual(cli[name]['samples'], fams[name]['samples'], name)

    def test_promtool_check_metrics_accepts_it(self):
        promtool = shutil.which('promtool')
        if not promtool:
            self.skipTest('promtool not installed (Debian package prometheus; '
                          '.ci/run installs it)')
        _, d = self.delivering_daemon()
        _, _, body = get(metrics_port(d), '/metrics')
        p = subprocess.run([promtool, 'check', 'metrics'], input=body, capture_output=True,
                           timeout=60)
        self.assertEqual((p.returncode, p.stdout, p.stderr), (0, b'', b''))
        # And before any request, when the maps hold zeros only.
        d2 = self.daemon(METRICS)
        _, _, body = get(metrics_port(d2), '/metrics')
        p = subprocess.run([promtool, 'check', 'metrics'], input=body, capture_output=True,
                           timeout=60)
        self.assertEqual((p.returncode, p.stdout, p.stderr), (0, b'', b''))

    def test_methods_paths_and_keep_alive(self):
        d = self.daemon(METRICS)
        port = metrics_port(d)
        status, headers, body = get(port, '/metrics', method='POST', body=b'x=1')
        self.assertEqual(status, 405)
        self.assertEqual(headers['allow'], 'GET, HEAD')
        status, headers, body = get(port, '/metrics', method='HEAD')
        self.assertEqual((status, body), (200, b''))
        self.assertEqual(headers['content-type'], PROM_TYPE)
        self.assertEqual(get(port, '/nope')[0], 404)
        self.assertEqual(get(port, '/metrics?x=1')[0], 200)  # a query is not a path
        # Prometheus keeps its connection: several scrapes on one.
        c = http.client.HTTPConnection('127.0.0.1', port, timeout=10)
        c.connect()
        local = c.sock.getsockname()
        for _ in range(3):
            self.assertEqual(get(port, '/metrics', conn=c)[0], 200)
            self.assertEqual(c.sock.getsockname(), local)
        c.close()

    def test_idle_connections_never_stall_the_pipeline(self):
        tb = self.fake()
        d = self.daemon(METRICS, tinybird=tb)
        port = metrics_port(d)
        idle = []
        for _ in range(40):  # past the connection limit (16)
            s = socket.socket()
            s.settimeout(5)
            try:
                s.connect(('127.0.0.1', port))
            except OSError:
                s.close()
                continue
            s.sendall(b'GET /metr')  # a request that never ends
            idle.append(s)
        self.addCleanup(lambda: [s.close() for s in idle])
        p = send_json_lines(images(20), d.port)
        self.assertEqual(p.returncode, 0, p.stderr)
        wait_until(lambda: tb.row_count('image_events') >= 20, msg='delivered meanwhile')
        for s in idle:
            s.close()
        wait_until(lambda: get(port, '/health')[0] == 200, timeout=15,
                   ignore=(OSError, http.client.HTTPException), msg='served again')

    def test_off_by_default(self):
        d = self.daemon()
        self.assertFalse(d.log_records('metrics_listening'))

    def test_non_loopback_address_is_a_config_error(self):
        for addr in ('0.0.0.0:9190', '[::]:9190', '192.0.2.7:9190'):
            p = subprocess.run([str(DAEMON_BIN), '--metrics-listen', addr, '--check-config'],
                               capture_output=True, text=True, timeout=10, env=clean_env())
            self.assertEqual(p.returncode, 2, p.stdout)
            self.assertIn(f"option 'metrics-listen': '{addr}' is not a loopback address",
                          p.stderr)

    def test_port_in_use_is_logged_and_the_daemon_runs(self):
        holder = socket.socket()
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(('127.0.0.1', 0))
        holder.listen(1)
        self.addCleanup(holder.close)
        port = holder.getsockname()[1]
        tb = self.fake()
        d = self.daemon(['--metrics-listen', f'127.0.0.1:{port}'], tinybird=tb)
        failed = wait_until(lambda: d.log_records('metrics_failed'), msg='metrics_failed')
        self.assertEqual(failed[0]['level'], 'error')
        self.assertIn(f'127.0.0.1:{port}', failed[0]['error'])
        send_json_lines(images(3), d.port)
        tb.wait_rows('image_events', 3)


class TestHealth(BirdfeederTestCase):

    def test_healthy_then_not_receiving_while_stopping(self):
        tb = self.fake()
        d = self.daemon(METRICS + ['--shutdown-timeout-ms', '4000'], tinybird=tb)
        port = metrics_port(d)
        self.assertEqual(health(port), (200, {'status': 'ok'}))
        tb.faults(down=True)  # the drain then lasts until its deadline
        send_json_lines(images(5), d.port)
        wait_until(lambda: d.stats()['retries'] >= 1, msg='retrying')
        self.assertEqual(health(port)[0], 200)  # failing, but not for a minute
        d.send_signal(signal.SIGTERM)
        status, body = wait_until(lambda: (lambda h: h if h[0] == 503 else None)(health(port)),
                                  msg='503 while stopping')
        self.assertEqual(body, {'status': 'unhealthy', 'reasons': [{'reason': 'not_receiving'}]})
        self.assertEqual(d.proc.wait(timeout=15), 0)

    def test_sink_unauthorized_until_a_reload_brings_the_right_token(self):
        tb = self.fake()
        conf = self.tmpdir() / 'birdfeeder.json'
        conf.write_text(json.dumps({'token': 'not-the-token'}))
        conf.chmod(0o600)
        d = self.daemon(METRICS + ['--config', str(conf), '--tinybird-url', tb.url])
        port = metrics_port(d)
        send_json_lines(images(3), d.port)

        def unauthorized():
            status, body = health(port)
            return body if status == 503 else None

        body = wait_until(unauthorized, msg='503 for the refused token')
        self.assertEqual([r['reason'] for r in body['reasons']], ['sink_unauthorized'])
        self.assertIn('token', body['reasons'][0]['hint'])
        conf.write_text(json.dumps({'token': tb.token}))
        d.send_signal(signal.SIGHUP)
        tb.wait_rows('image_events', 3)
        wait_until(lambda: health(port) == (200, {'status': 'ok'}), msg='healthy again')

    def test_memory_at_cap_and_spool_nearly_full_then_recovered(self):
        tb = self.fake()
        d = self.daemon(METRICS + ['--max-memory', '64KiB', '--flush-bytes', '4096',
                                   '--flush-interval-ms', '20', '--max-spool-bytes', '64KiB',
                                   '--spool-segment-bytes', '4096', '--backoff-min-ms', '50',
                                   '--backoff-max-ms', '200'], tinybird=tb)
        port = metrics_port(d)
        tb.faults(down=True)

        def unhealthy_with_both():
            send_json_lines(images(50, prefix=f'x{time.monotonic_ns()}-'), d.port)
            status, body = health(port)
            names = {r['reason'] for r in body.get('reasons', [])}
            return body if {'memory_at_cap', 'spool_nearly_full'} <= names else None

        body = wait_until(unhealthy_with_both, timeout=30, interval=0.1,
                          msg='memory at its cap and the spool past 90%')
        self.assertEqual(body['status'], 'unhealthy')
        reasons = {r['reason']: r for r in body['reasons']}
        self.assertEqual(reasons['memory_at_cap']['max_memory'], 65536)
        # The bound is hard (memory.h): full means no room beside the open
        # batches' headroom, at most half the cap, not memory_bytes at it.
        self.assertGreater(reasons['memory_at_cap']['memory_bytes'], 65536 // 2)
        self.assertLessEqual(reasons['memory_at_cap']['memory_bytes'], 65536)
        self.assertEqual(reasons['spool_nearly_full']['max_spool_bytes'], 65536)
        self.assertGreater(reasons['spool_nearly_full']['spool_bytes'], 65536 * 0.9)
        self.assertNotIn('not_receiving', reasons)
        self.assertEqual(get(port, '/health', method='HEAD')[0], 503)

        tb.faults(down=False)
        wait_until(lambda: health(port) == (200, {'status': 'ok'}), timeout=60,
                   msg='healthy again once Tinybird answers')


if __name__ == '__main__':
    unittest.main()

"""A small fleet sharing one rate limit: `make fleet-sim` at the scale of `make test`.

Eight daemons, each with its own sender (unique ids), all starting together,
against the fake Events API enforcing 10 requests/s per datasource for all of
them, with X-RateLimit-* headers and Retry-After on 429 (tests/bench/fleet.py
does the run). Their flushes start at every 250 ms, 32 requests/s per
datasource, three times the limit: pacing must bring the fleet under it.
Every event arrives (checked by id) and from 5 s after the first request on,
fewer than 5% of the requests are refused (with --pacing off about 30% are;
docs/scale.md has both, and the 30-host run).

Run from the repo root:
    BIRDFEEDER_BUILD_DIR=build python3 -m unittest tests.integration.test_fleet -v
"""

import json
import signal
import sys
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))          # tests/
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'bench'))

import fleet  # noqa: E402
import harness  # noqa: E402
from harness import BUILD  # noqa: E402


class TestFleet(unittest.TestCase):

    def test_eight_hosts_paced_under_a_shared_limit(self):
        if not (BUILD / 'bench-sender').is_file():
            raise unittest.SkipTest(f"{BUILD / 'bench-sender'} not built (make test builds it)")
        r = fleet.run_fleet(hosts=8, seconds=15, rate=20, limit=10, window_ms=1000,
                            flush_ms=250, max_flush_ms=2500, pacing=True, deliver_timeout=60)
        sys.stderr.write('\n[figures] fleet_8: ' + ', '.join(
            f'{k}={r[k]}' for k in ('sent', 'delivered_ids', 'missing', 'duplicates',
                                    'requests', 'requests_429', 'counted', 'counted_429',
                                    'deliver_s_after_send', 'interval_ms_median')) +
            f", pct_429_after_5s={r['pct_429_after_settle']:.1f}\n")
        self.assertEqual(r['missing'], 0, r)
        self.assertEqual(r['stray'], 0, r)
        self.assertEqual(r['delivered_ids'], r['sent'], r)
        self.assertIsNotNone(r['deliver_s_after_send'], r)
        self.assertLess(r['pct_429_after_settle'], 5.0, r)
        # Pacing did the work: the intervals stretched past the base.
        for ds, ms in r['interval_ms_median'].items():
            self.assertGreater(ms, 250, f"{ds}: {r}")
        self.assertEqual(r['daemon_exits'], [0], r)


if __name__ == '__main__':
    unittest.main()


class TestPacingReload(harness.BirdfeederTestCase):

    def test_sighup_moves_the_ceiling_and_pacing_off_holds_the_base(self):
        """--max-flush-interval-ms and --pacing reload: a stretched interval
        is held to a lower ceiling at once, and --pacing off brings it back
        to --flush-interval-ms; the stats say so."""
        tb = self.fake()
        tb.faults(status=429, retry_after=0)
        conf = self.tmpdir() / 'birdfeeder.json'
        conf.write_text(json.dumps({'max-flush-interval-ms': 8000}))
        d = self.daemon(['--config', str(conf), '--flush-interval-ms', '200'], tinybird=tb)
        harness.send_json_lines([{'dataset': 'llm_events', 'model': 'gpt-5-nano', 'id': 'r-1'}],
                                d.port)
        s = harness.wait_until(
            lambda: (lambda s: s if s['flush_interval_ms']['llm_events'] > 2000 else None)(
                d.stats()), timeout=20, msg='llm_events stretched by the 429s')
        self.assertEqual(s['pacing']['llm_events'], 'rate_limited')
        self.assertEqual(s['pacing']['image_events'], 'normal')
        conf.write_text(json.dumps({'max-flush-interval-ms': 1000}))
        d.send_signal(signal.SIGHUP)
        s = harness.wait_until(
            lambda: (lambda s: s if s['flush_interval_ms']['llm_events'] == 1000 else None)(
                d.stats()), timeout=10, msg='the new ceiling')
        conf.write_text(json.dumps({'max-flush-interval-ms': 1000, 'pacing': 'off'}))
        d.send_signal(signal.SIGHUP)
        s = harness.wait_until(
            lambda: (lambda s: s if s['pacing']['llm_events'] == 'off' else None)(d.stats()),
            timeout=10, msg='pacing off')
        self.assertEqual(s['flush_interval_ms']['llm_events'], 200)
        self.assertIn('restart_needed=none', [line for line in d.log().splitlines()
                                              if 'event=reloaded' in line][-1])
        tb.faults(status=0)
        harness.wait_until(lambda: tb.rows('llm_events'), timeout=20, msg='delivered')
        self.assertEqual(d.stop(), 0)

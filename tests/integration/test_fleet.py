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

import sys
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))          # tests/
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'bench'))

import fleet  # noqa: E402
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

"""`birdfeeder dead-letter list|replay` (issue 9).

Batches whose rows Tinybird refuses (400, 422) go to
<spool-dir>/dead-letter.ndjson; list shows them, and replay sends them again
straight to the Events API with the daemon's configuration once the schema
is fixed, removing only what Tinybird accepted. Against the fake Events API,
with the daemon running (it keeps writing its dead-letter file meanwhile).
"""

import json
import os
import subprocess
import sys
import time
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # tests/

import harness  # noqa: E402
from harness import (BirdfeederTestCase, CLI_BIN, clean_env, send_json_lines,  # noqa: E402
                     stat_at_least, wait_until, IMAGE, LLM)

FAST = ['--flush-interval-ms', '100']


def events(n, tag):
    now = int(time.time() * 1000)
    return [{'dataset': IMAGE if i % 2 else LLM, 'id': f'{tag}-{i}',
             'model': 'flux' if i % 2 else 'gpt-5-nano', 'start_time': now - 1000}
            for i in range(n)]


def dead_letter(args, env=None):
    harness._require(CLI_BIN)
    return subprocess.run([str(CLI_BIN), 'dead-letter', *args], capture_output=True,
                          text=True, timeout=60, env=clean_env(env),
                          stdin=subprocess.DEVNULL)


class TestDeadLetter(BirdfeederTestCase):

    def refused(self, tb, n, status=400):
        """A daemon whose batches the fake refuses with status: returns it
        with every row dead-lettered, one batch at a time."""
        tb.faults(status=status)
        d = self.daemon(FAST + ['--flush-bytes', '4KiB'], tinybird=tb)
        evs = events(n, f'dl{status}')
        for k in range(0, n, 4):   # several batches
            send_json_lines(evs[k:k + 4], d.port)
            wait_until(stat_at_least(d, 'rows_dead_lettered', min(k + 4, n)),
                       msg='dead-lettered')
        tb.reset()
        return d, evs

    def batches(self, path):
        lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()] \
            if path.exists() else []
        return [x['dead_letter'] for x in lines if 'dead_letter' in x]

    def test_list_then_replay_everything(self):
        tb = self.fake()
        d, evs = self.refused(tb, 12)
        spool = d.dir / 'spool'
        n = len(self.batches(spool / 'dead-letter.ndjson'))
        self.assertGreaterEqual(n, 3)
        p = dead_letter(['list', '--spool-dir', str(spool)])
        self.assertEqual(p.returncode, 0, p.stderr)
        lines = p.stdout.splitlines()
        self.assertEqual(len(lines), n)
        self.assertRegex(lines[0], r'^\s+1  \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ  '
                                   r'(image|llm)_events\s+400\s+\d+ rows  \{"error":')
        self.assertIn(f'{n} batches, 12 rows in {spool}', p.stderr)

        p = dead_letter(['replay', '--spool-dir', str(spool), '--tinybird-url', tb.url],
                        env={'TINYBIRD_API_KEY': tb.token})
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn(f'accepted {n} batches (12 rows, 0 quarantined), kept 0 batches',
                      p.stderr)
        got = sorted(r['id'] for ds in (IMAGE, LLM) for r in tb.rows(ds))
        self.assertEqual(got, sorted(e['id'] for e in evs))
        self.assertEqual(self.batches(spool / 'dead-letter.ndjson'), [])
        self.assertEqual(sorted(x.name for x in spool.glob('dead-letter*')), [])
        p = dead_letter(['list', '--spool-dir', str(spool)])
        self.assertEqual(p.stdout, '')
        self.assertIn('0 batches, 0 rows', p.stderr)
        self.assertEqual(d.stop(), 0)

    def test_replay_keeps_what_is_refused_again(self):
        """Every second request is refused again (422): exactly those
        batches stay, with their new answer; a second replay delivers them."""
        tb = self.fake()
        d, evs = self.refused(tb, 16)
        spool = d.dir / 'spool'
        before = self.batches(spool / 'dead-letter.ndjson')
        tb.faults(status_every=[2, 422])
        # The daemon's configuration: its file (token, URL) as the daemon reads it.
        cfg = self.tmpdir() / 'bf.json'
        cfg.write_text(json.dumps({'token': tb.token, 'tinybird-url': tb.url,
                                   'spool-dir': str(spool)}))
        cfg.chmod(0o600)  # a config file holding a token must be private
        p = dead_letter(['replay', '--config', str(cfg)])
        self.assertEqual(p.returncode, 1, p.stderr)
        kept = self.batches(spool / 'dead-letter.ndjson')
        self.assertEqual(len(kept), len(before) // 2)
        self.assertTrue(all(k['status'] == 422 for k in kept), kept)
        self.assertIn(f'kept {len(kept)} batches', p.stderr)
        accepted = sorted(r['id'] for ds in (IMAGE, LLM) for r in tb.rows(ds))
        self.assertEqual(len(accepted) + sum(k['rows'] for k in kept), len(evs))

        tb.faults(status_every=None)
        p = dead_letter(['replay', '--config', str(cfg)])
        self.assertEqual(p.returncode, 0, p.stderr)
        got = sorted(r['id'] for ds in (IMAGE, LLM) for r in tb.rows(ds))
        self.assertEqual(got, sorted(e['id'] for e in evs))
        self.assertFalse((spool / 'dead-letter.ndjson').exists())
        self.assertEqual(d.stop(), 0)

    def test_replay_with_a_refused_token_stops_and_keeps_everything(self):
        tb = self.fake()
        d, evs = self.refused(tb, 8)
        spool = d.dir / 'spool'
        before = self.batches(spool / 'dead-letter.ndjson')
        p = dead_letter(['replay', '--spool-dir', str(spool), '--tinybird-url', tb.url],
                        env={'TINYBIRD_API_KEY': 'not-the-token'})
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn('stopped at the first refusal', p.stderr)
        self.assertEqual(len(tb.requests()), 1)
        kept = self.batches(spool / 'dead-letter.ndjson')
        self.assertEqual(sorted(k['rows'] for k in kept), sorted(b['rows'] for b in before))
        self.assertNotIn('not-the-token', p.stderr + p.stdout)
        p = dead_letter(['replay', '--spool-dir', str(spool)])
        self.assertEqual(p.returncode, 2)
        self.assertIn('no token', p.stderr)
        self.assertEqual(d.stop(), 0)

    def test_a_replay_cut_short_is_finished_by_the_next(self):
        """The file a replay took (dead-letter.replay-PID-N.ndjson) and did
        not finish is read first by the next replay."""
        tb = self.fake()
        d, evs = self.refused(tb, 4)
        spool = d.dir / 'spool'
        os.rename(spool / 'dead-letter.ndjson', spool / 'dead-letter.replay-1-0.ndjson')
        p = dead_letter(['list', '--spool-dir', str(spool)])
        self.assertIn('4 rows', p.stderr)
        p = dead_letter(['replay', '--spool-dir', str(spool), '--tinybird-url', tb.url],
                        env={'TINYBIRD_API_KEY': tb.token})
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(tb.row_count(IMAGE) + tb.row_count(LLM), 4)
        self.assertEqual(list(spool.glob('dead-letter*')), [])
        self.assertEqual(d.stop(), 0)


if __name__ == '__main__':
    unittest.main()

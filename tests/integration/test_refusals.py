"""A token or region mistake holds data; it does not dead-letter it (issue 9).

Against tests/fake_tinybird.py: a wrong token (403) or a datasource the host
does not have (404) puts the dataset on hold: its batches wait in memory and
then in the spool, one probe goes out per backoff ceiling, the stats, the
log and systemd's STATUS= say sink_state=unauthorized (or not_found) with a
hint that matches what was sent. A new token from the config file reaches
the running daemon on SIGHUP; one from the environment needs a restart, and
the log says so. Either way every event arrives exactly once by id and
nothing goes to the dead-letter file.
"""

import json
import shutil
import signal
import sys
import time
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # tests/
sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (BirdfeederTestCase, DATASOURCES, send_json_lines,  # noqa: E402
                     stat_at_least, wait_until, IMAGE, LLM)
from test_systemd import NotifyListener  # noqa: E402

FAST = ['--flush-interval-ms', '100']


def events(n, tag, start=0):
    now = int(time.time() * 1000)
    out = []
    for i in range(start, start + n):
        ds = IMAGE if i % 2 else LLM
        out.append({'dataset': ds, 'id': f'{tag}-{i}', 'user_id': f'u{i % 7}',
                    'model': 'flux' if ds == IMAGE else 'gpt-5-nano',
                    'prompt': f'a prompt long enough to fill batches, number {i} ' * 4,
                    'start_time': now - 1000})
    return out


def send(evs, port):
    for k in range(0, len(evs), 200):
        p = send_json_lines(evs[k:k + 200], port)
        assert p.returncode == 0, p.stderr


class RefusalCase(BirdfeederTestCase):

    def config(self, d, token, **more):
        path = d / 'birdfeeder.json'
        path.write_text(json.dumps({'token': token, **more}))
        path.chmod(0o600)  # a config file holding a token must be private
        return path

    def assert_exactly(self, tb, evs):
        for ds in (IMAGE, LLM):
            want = sorted(e['id'] for e in evs if e['dataset'] == ds)
            wait_until(lambda: tb.row_count(ds) >= len(want), timeout=20,
                       msg=f'{len(want)} rows in {ds} (have {tb.row_count(ds)})')
            got = sorted(r['id'] for r in tb.rows(ds))
            self.assertEqual(got, want, f'rows of {ds}: each id exactly once')

    def assert_no_dead_letters(self, spool):
        self.assertFalse((spool / 'dead-letter.ndjson').exists(),
                         (spool / 'dead-letter.ndjson').read_text()
                         if (spool / 'dead-letter.ndjson').exists() else '')


class TestWrongToken(RefusalCase):

    def test_wrong_token_then_sighup_with_the_right_one(self):
        """The token in the config file is wrong: everything is held (in
        memory past the cap, then in the spool); the file gets the right one,
        SIGHUP, and every event arrives, exactly once, none dead-lettered.
        The backoff ceiling is a minute: the reload itself probes."""
        tb = self.fake(token='right-token')
        tmp = self.tmpdir()
        cfg = self.config(tmp, 'wrong-token-of-28-characters')
        d = self.daemon(FAST + ['--tinybird-url', tb.url, '--config', str(cfg),
                                '--max-memory', '64KiB', '--backoff-max-ms', '60000'])
        evs = events(400, 'tok')
        send(evs, d.port)
        s = wait_until(stat_at_least(d, 'holds', 2), msg='both datasets held')
        s = wait_until(stat_at_least(d, 'rows_spooled', 1), timeout=15,
                       msg='held batches past the memory cap go to the spool')
        self.assertEqual(s['sink_state'], 'unauthorized')
        hint = s['sink_hint']
        self.assertIn(f'{tb.url} refused the token sent for', hint)
        self.assertIn('(a token of 28 characters)', hint)
        self.assertIn('DATASOURCE:APPEND', hint)
        self.assertEqual(s['dropped_total'], 0)
        self.assertEqual(s['rows_dead_lettered'], 0)
        self.assertEqual(s['retries'], 0)
        held = d.log_records('sink_held')
        self.assertTrue(held, d.log())
        self.assertEqual(held[0]['sink_state'], 'unauthorized')
        self.assertEqual(held[0]['level'], 'error')
        self.assertIn(tb.url, held[0]['hint'])
        self.assertNotIn('wrong-token', d.log())
        self.assertEqual(tb.row_count(IMAGE) + tb.row_count(LLM), 0)
        # One probe per dataset per minute: no storm while held.
        n = tb.summary()['requests']
        time.sleep(1.0)   # a negative check: nothing may be sent meanwhile
        self.assertEqual(tb.summary()['requests'], n)

        self.config(tmp, 'right-token')
        d.send_signal(signal.SIGHUP)
        rec = wait_until(lambda: d.log_records('reloaded'), msg='reloaded')[0]
        self.assertEqual(rec['token'], 'changed')
        self.assertEqual(rec['token_from'], 'file')
        self.assertEqual(rec['sink'], 'reconfigured')
        self.assertEqual(rec['restart_needed'], 'none')
        self.assert_exactly(tb, evs)
        s = wait_until(lambda: (lambda s: s if s['sink_state'] == 'ok' and
                                s['spool_bytes'] == 0 else None)(d.stats()),
                       timeout=15, msg='ok and the spool replayed')
        self.assertIsNone(s['sink_hint'])
        self.assertEqual(s['rows_delivered_total'], len(evs))
        self.assertEqual(s['dropped_total'], 0)
        self.assertTrue(d.log_records('sink_resumed'), d.log())
        self.assertEqual(d.stop(), 0)
        self.assert_no_dead_letters(d.dir / 'spool')

    def test_wrong_token_then_restart_with_the_right_one(self):
        """Held batches are spooled at SIGTERM; the next daemon on the same
        spool, with the right token in its environment, delivers them."""
        tb = self.fake(token='right-token')
        spool = self.tmpdir() / 'spool'
        d = self.daemon(FAST + ['--spool-dir', str(spool)], tinybird=tb,
                        env={'TINYBIRD_API_KEY': 'wrong-token'})
        evs = events(50, 'rs')
        send(evs, d.port)
        wait_until(stat_at_least(d, 'holds', 2), msg='both datasets held')
        # SIGHUP cannot help: the token comes from the environment.
        d.send_signal(signal.SIGHUP)
        rec = wait_until(lambda: d.log_records('reloaded'), msg='reloaded')[0]
        self.assertEqual(rec['token_from'], 'environment')
        self.assertIn('restart the daemon with the new token', rec['token'])
        t0 = time.monotonic()
        self.assertEqual(d.stop(), 0)
        self.assertLess(time.monotonic() - t0, 4, 'held batches spool at once')
        stopped = d.log_records('stopped')[0]
        self.assertEqual(stopped['dropped'], '0')
        self.assertEqual(stopped['spooled'], str(len(evs)))
        self.assertEqual(tb.row_count(IMAGE) + tb.row_count(LLM), 0)

        d2 = self.daemon(FAST + ['--spool-dir', str(spool)], tinybird=tb)
        self.assert_exactly(tb, evs)
        self.assertEqual(d2.stats()['sink_state'], 'ok')
        self.assertEqual(d2.stop(), 0)
        self.assert_no_dead_letters(spool)

    def test_status_line_says_unauthorized(self):
        tb = self.fake(token='right-token')
        n = NotifyListener(self)
        d = self.daemon(FAST, tinybird=tb,
                        env={'TINYBIRD_API_KEY': 'nope', 'NOTIFY_SOCKET': n.path,
                             'WATCHDOG_USEC': None, 'WATCHDOG_PID': None})
        send(events(2, 'st'), d.port)
        status = n.wait_for('STATUS=', timeout=15)
        status = wait_until(lambda: [a for a in n.assignments()
                                     if 'sink_state=unauthorized' in a], timeout=15,
                            msg='STATUS= with sink_state=unauthorized')[0]
        self.assertIn(f'{d.port}', n.messages[0])
        self.assertIn(f'{tb.url} refused the token sent for', status)
        self.assertIn('(a token of 4 characters)', status)
        self.assertNotIn('nope', status.replace('a token of', ''))
        self.assertEqual(d.stop(), 0)


class TestWrongRegion(RefusalCase):

    def test_missing_datasource_holds_that_dataset_only(self):
        """The host does not know llm_events (wrong region, or not pushed):
        llm_events is held (not_found, the hint names it and the host),
        image_events is delivered; nothing is dropped."""
        only_image = self.tmpdir()
        shutil.copy(DATASOURCES / 'image_events.datasource', only_image)
        tb = self.fake(extra_args=['--datasources', str(only_image)])
        d = self.daemon(FAST + ['--backoff-min-ms', '50', '--backoff-max-ms', '300'], tinybird=tb)
        evs = events(20, 'nf')
        send(evs, d.port)
        s = wait_until(stat_at_least(d, 'holds', 2), msg='llm_events probed twice')
        tb.wait_rows(IMAGE, 10)
        self.assertEqual(s['sink_state'], 'not_found')
        self.assertIn(f'datasource llm_events was not found at {tb.url}', s['sink_hint'])
        self.assertIn('tinybird/datasources/llm_events.datasource', s['sink_hint'])
        self.assertEqual(s['rows_delivered'][LLM], 0)
        self.assertEqual(s['dropped_total'], 0)
        statuses = [r['status'] for r in tb.requests() if r['datasource'] == LLM]
        self.assertGreaterEqual(len(statuses), 2)
        self.assertEqual(set(statuses), {404})
        self.assertEqual(d.stop(), 0)
        stopped = d.log_records('stopped')[0]
        self.assertEqual(stopped['dropped'], '0')
        self.assertEqual(stopped['spooled'], '10')
        self.assert_no_dead_letters(d.dir / 'spool')


if __name__ == '__main__':
    unittest.main()

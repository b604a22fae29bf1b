"""End-to-end tests: real binaries over loopback.

    birdfeeder send (C client shim) / raw UDP datagrams
        -> build/birdfeederd -> tests/fake_tinybird.py (or the --out file sink)

Every test starts its own fake and daemon on ephemeral ports with a short
--flush-interval-ms, and asserts exact results (row ids, counters).  Nothing
sleeps for a fixed time except where a test must show that something does NOT
happen (no retry of a 400), and that wait is bounded and commented.

Run from the repo root (after `make`):
    python3 -m unittest discover -s tests/integration -p 'test_daemon.py' -v

On failure the daemon's stderr is printed (kept log lines are logfmt).
"""

import datetime
import json
import math
import re
import shutil
import os
import signal
import socket
import subprocess
import sys
import time
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # tests/

import harness  # noqa: E402
from harness import (BirdfeederTestCase, send_json_lines, send_raw,  # noqa: E402
                     stat_at_least, wait_until, validate_row_columns, REPO_CATALOG,
                     IMAGE, LLM, DATASETS)

FAST = ['--flush-interval-ms', '100']
MAX_DATAGRAM = 8192           # the daemon's default --max-datagram (8KiB)
TS_RE = re.compile(r'\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3}')
HASH_RE = re.compile(r'[0-9a-f]{32}')
GEN_ID_RE = re.compile(r'pllns_[0-9a-f]{16,}')

with open(REPO_CATALOG, encoding='utf-8') as _f:
    CATALOG = json.load(_f)['models']


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

def fmt_ms(ms):
    """Epoch milliseconds -> 'YYYY-MM-DD HH:MM:SS.mmm' (UTC), exactly."""
    dt = datetime.datetime(1970, 1, 1) + datetime.timedelta(milliseconds=ms // 1000 * 1000)
    return dt.strftime('%Y-%m-%d %H:%M:%S') + f'.{ms % 1000:03d}'


def token_cost(model, prompt=0, completion=0, cached=0):
    """cost_usd of a token-priced model, from daemon/catalog.json."""
    m = CATALOG[model]
    p = m['prompt_per_mtok']
    c = m.get('cached_prompt_per_mtok', p)
    return ((prompt - cached) * p + cached * c + completion * m['completion_per_mtok']) / 1e6


def encode(events):
    """`birdfeeder encode` -> one binary datagram (bytes) per event."""
    harness._require(harness.CLI_BIN)
    data = b''.join(json.dumps(e).encode() + b'\n' for e in events)
    p = subprocess.run([str(harness.CLI_BIN), 'encode'], input=data, capture_output=True,
                       timeout=10, env=harness.clean_env())
    if p.returncode != 0:
        raise AssertionError(f"birdfeeder encode failed ({p.returncode}): {p.stderr!r}")
    out = [bytes.fromhex(line) for line in p.stdout.decode().split()]
    assert len(out) == len(events), (out, events)
    return out


def send(events, port):
    """Send events via `birdfeeder send`; asserts all were sent."""
    p = send_json_lines(events, port)
    if p.returncode != 0 or f'sent {len(events)}, invalid 0, dropped 0' not in p.stderr.decode():
        raise AssertionError(f"birdfeeder send: rc={p.returncode} stderr={p.stderr!r}")
    return p


def send_json_raw(obj, port, trailing=b''):
    """One JSON datagram, as `echo '{...}' | socat - UDP:...` would send it."""
    send_raw(json.dumps(obj, ensure_ascii=False).encode() + trailing, port)


# Recent start times: the daemon rejects those older than --max-event-age
# (7 days) as stale_time. An hour ago, on a whole second.
RECENT = (int(time.time()) - 3600) * 1000


def image(i, **kw):
    ev = {'dataset': IMAGE, 'id': f'img-{i}', 'model': 'flux', 'user_id': f'user-{i % 7}',
          'width': 1024, 'height': 768, 'steps': 4, 'prompt': f'a bird number {i}',
          'start_time': RECENT + i, 'end_time': RECENT + 1000 + i}
    ev.update(kw)
    return ev


def llm(i, **kw):
    ev = {'dataset': LLM, 'id': f'llm-{i}', 'model': 'gpt-5-nano', 'user_id': f'user-{i % 5}',
          'prompt_tokens': 100 + i, 'completion_tokens': 50 + i, 'cached_tokens': i % 100,
          'stream': bool(i % 2), 'start_time': RECENT + i,
          'end_time': RECENT + 500 + i}
    ev.update(kw)
    return ev


_supported = {}


def daemon_supports(option):
    """True when `birdfeederd --help` lists option (features land over time)."""
    if option not in _supported:
        harness._require(harness.DAEMON_BIN)
        p = subprocess.run([str(harness.DAEMON_BIN), '--help'], capture_output=True,
                           timeout=10, env=harness.clean_env())
        _supported[option] = option.encode() in p.stdout
    return _supported[option]


def ids_by_ds(events):
    out = {ds: set() for ds in DATASETS}
    for e in events:
        out[e['dataset']].add(e['id'])
    return out


class DaemonTestCase(BirdfeederTestCase):
    """fake(), daemon(), tmpdir(), assert_no_quarantine() and the logs of a
    failed test come from harness.BirdfeederTestCase."""

    def wait_ids(self, tb, ds, ids, timeout=10):
        """Wait until fake holds at least len(ids) rows of ds, then assert the
        id set is exactly ids (no row missing, none extra, no duplicate)."""
        wait_until(lambda: tb.row_count(ds) >= len(ids), timeout=timeout,
                   msg=f"{len(ids)} rows in {ds} (have {tb.row_count(ds)})")
        rows = tb.rows(ds)
        got = [r['id'] for r in rows]
        self.assertEqual(len(got), len(set(got)), f"duplicate rows in {ds}")
        self.assertEqual(set(got), set(ids), f"row ids in {ds}")
        return rows


# ---------------------------------------------------------------------------
# 1. bulk delivery through the C client
# ---------------------------------------------------------------------------

class TestDelivery(DaemonTestCase):

    def test_500_mixed_events_via_birdfeeder_send(self):
        tb = self.fake()
        # Small batches so there are many requests and keep-alive shows.
        d = self.daemon(FAST + ['--flush-bytes', '8KiB'], tinybird=tb)
        events = []
        for i in range(500):
            events.append(image(i) if i % 2 else llm(i))
        send(events, d.port)
        want = ids_by_ds(events)
        rows = {ds: self.wait_ids(tb, ds, want[ds]) for ds in DATASETS}
        self.assertEqual(sum(len(r) for r in rows.values()), 500)
        self.assert_no_quarantine(tb)
        for ds in DATASETS:
            for row in rows[ds]:
                validate_row_columns(row, ds)

        reqs = tb.requests()
        self.assertGreater(len(reqs), 2, "expected several batches")
        for r in reqs:
            # wait=true, gzip, NDJSON, accepted with the bearer token
            self.assertEqual(r['status'], 200, r)
            self.assertEqual(r['content_encoding'], 'gzip', r)
            self.assertTrue(r['wait'], r)
            self.assertEqual(r['method'], 'POST')
            self.assertEqual(r['rows_quarantined'], 0, r)
        self.assertEqual(sum(r['rows_ok'] for r in reqs), 500)
        summary = tb.summary()
        self.assertLess(summary['connections'], summary['requests'],
                        f"no keep-alive reuse: {summary}")

        s = wait_until(stat_at_least(d, 'rows_delivered_total', 500), msg="delivered stat")
        self.assertEqual(s['received'], 500)
        self.assertEqual(s['accepted_total'], 500)
        self.assertEqual(s['accepted'], {IMAGE: 250, LLM: 250})
        self.assertEqual(s['rejected_total'], 0)
        self.assertEqual(s['rows_delivered'], {IMAGE: 250, LLM: 250})
        self.assertEqual(s['dropped_total'], 0)
        self.assertEqual(s['retries'], 0)
        self.assertEqual(s['http'], {'200': len(reqs)})
        self.assertEqual(d.stop(), 0)

    def test_wrong_token_is_held_not_dropped(self):
        """A 403 is our mistake, not the rows': the batch is held (probed
        again at the backoff ceiling), never dropped (test_refusals.py has
        the rest)."""
        tb = self.fake(token='right-token')
        d = self.daemon(FAST + ['--backoff-min-ms', '50', '--backoff-max-ms', '200'], tinybird=tb,
                        env={'TINYBIRD_API_KEY': 'wrong-token'})
        events = [image(i) for i in range(5)]
        send(events, d.port)
        s = wait_until(stat_at_least(d, 'holds', 2), msg="held and probed again")
        self.assertEqual(s['dropped_total'], 0)
        self.assertEqual(s['sink_state'], 'unauthorized')
        self.assertEqual(s['retries'], 0)
        self.assertEqual(tb.row_count(IMAGE), 0)
        self.assertTrue(all(r['status'] == 403 for r in tb.requests()))
        self.assertTrue(d.log_records('sink_held'), d.log())
        self.assertFalse(d.log_records('send_rejected'), d.log())


# ---------------------------------------------------------------------------
# 2. enrichment
# ---------------------------------------------------------------------------

T0 = (int(time.time()) // 86400 - 1) * 86400000 + 123   # yesterday 00:00:00.123 UTC
LONG_PROMPT = 'aé中🐦' * 40    # 160 characters of 1, 2, 3 and 4 UTF-8 bytes
IP4, IP4_OTHER = '198.51.100.23', '203.0.113.9'
IP6 = '2001:db8:abcd:12:3456::7'


class TestEnrichment(DaemonTestCase):

    def enrichment_events(self):
        return [
            {'dataset': IMAGE, 'id': 'en-flux', 'model': 'flux', 'width': 1024, 'height': 1024,
             'steps': 4, 'start_time': T0, 'end_time': T0 + 1500, 'user_id': 'u-42',
             'username': 'alice', 'tier': 'seed', 'ip': IP4,
             'referrer': 'https://user:s3cr3t@Example.COM:8443/path/to?token=abc#frag'},
            {'dataset': IMAGE, 'id': 'en-cached', 'model': 'flux', 'cached': True, 'ip': IP4,
             'referrer': 'http://example.org/x?y=1'},
            {'dataset': IMAGE, 'id': 'en-error', 'model': 'flux', 'status': 'error',
             'error_message': 'boom', 'referrer': 'not a url'},
            {'dataset': IMAGE, 'id': 'en-gptimage', 'model': 'gptimage',
             'prompt_tokens': 1000, 'completion_tokens': 4000},
            {'dataset': LLM, 'id': 'en-gpt5', 'model': 'gpt-5-nano', 'prompt_tokens': 12000,
             'cached_tokens': 3000, 'completion_tokens': 2500, 'stream': True, 'ip': IP6},
            {'dataset': LLM, 'id': 'en-gpt5-same-ip', 'model': 'gpt-5-nano',
             'prompt_tokens': 1, 'ip': IP6},
            {'dataset': LLM, 'id': 'en-unknown', 'model': 'mystery-model-9000',
             'prompt_tokens': 10, 'completion_tokens': 10},
            {'dataset': IMAGE, 'model': 'turbo', 'end_time': T0 + 10000, 'duration_ms': 750},
            {'dataset': LLM, 'model': 'deepseek-r1', 'start_time': T0 + 20000,
             'duration_ms': 2000, 'ip': IP4_OTHER},
            {'dataset': IMAGE, 'id': 'en-prompt', 'model': 'kontext', 'prompt': LONG_PROMPT},
            {'dataset': IMAGE, 'id': 'en-mapped', 'model': 'flux', 'ip': '::ffff:' + IP4},
            # Issue 11, findings 1 and 7: IP4 inside 6to4 and NAT64 is IP4;
            # userinfo ends at the authority's last '@'; only http(s).
            {'dataset': IMAGE, 'id': 'en-6to4', 'model': 'flux', 'ip': '2002:c633:6417::1',
             'referrer': 'https://user:pa?ss@host/'},
            {'dataset': IMAGE, 'id': 'en-nat64', 'model': 'flux', 'ip': '64:ff9b::c633:6417',
             'referrer': 'javascript://example.com/%0Aalert(1)'},
        ]

    def test_enriched_values(self):
        keydir = self.tmpdir()
        key = keydir / 'ip-hash.key'
        tb = self.fake()
        d = self.daemon(FAST + ['--ip-hash-key-file', str(key)], tinybird=tb)
        events = self.enrichment_events()
        send(events, d.port)
        # The client cuts the prompt too: send it raw as JSON so the daemon's
        # own cut is what is tested.
        send_json_raw({'dataset': IMAGE, 'id': 'en-prompt-raw', 'model': 'kontext',
                       'prompt': LONG_PROMPT}, d.port)
        tb.wait_rows(IMAGE, 10)
        tb.wait_rows(LLM, 4)
        self.assert_no_quarantine(tb)
        rows = {}
        gen = {}
        for ds in DATASETS:
            for r in tb.rows(ds):
                validate_row_columns(r, ds)
                if r['id'].startswith('pllns_'):
                    gen[r['model']] = r
                else:
                    rows[r['id']] = r
        self.assertEqual(len(rows) + len(gen), 14, (sorted(rows), sorted(gen)))

        with self.subTest('flux: provider, per-image cost, timestamps, duration'):
            r = rows['en-flux']
            self.assertEqual(r['provider'], 'Black Forest Labs')
            self.assertAlmostEqual(r['cost_usd'], 0.0025, places=12)
            self.assertEqual(r['start_time'], fmt_ms(T0))
            self.assertRegex(r['start_time'], r' 00:00:00\.123$')
            self.assertEqual(r['end_time'], fmt_ms(T0 + 1500))
            self.assertEqual(r['duration_ms'], 1500)
            self.assertEqual((r['user_id'], r['username'], r['tier']), ('u-42', 'alice', 'seed'))
            self.assertEqual((r['width'], r['height'], r['steps']), (1024, 1024, 4))
            self.assertEqual(r['status'], 'success')
            self.assertIs(r['cached'], False)
        with self.subTest('referrer reduced to origin'):
            self.assertEqual(rows['en-flux']['referrer'], 'https://example.com:8443')
            self.assertEqual(rows['en-cached']['referrer'], 'http://example.org')
            self.assertEqual(rows['en-error']['referrer'], '')
            self.assertEqual(rows['en-gptimage']['referrer'], '')
        with self.subTest('cache hit costs 0'):
            self.assertIs(rows['en-cached']['cached'], True)
            self.assertEqual(rows['en-cached']['cost_usd'], 0)
            self.assertEqual(rows['en-cached']['provider'], 'Black Forest Labs')
        with self.subTest('failed image costs 0'):
            self.assertEqual(rows['en-error']['status'], 'error')
            self.assertEqual(rows['en-error']['error_message'], 'boom')
            self.assertEqual(rows['en-error']['cost_usd'], 0)
        with self.subTest('gptimage is token-priced'):
            r = rows['en-gptimage']
            self.assertEqual(r['provider'], 'OpenAI (Azure)')
            self.assertAlmostEqual(r['cost_usd'], token_cost('gptimage', 1000, 4000), places=12)
            self.assertAlmostEqual(r['cost_usd'], (1000 * 2.00 + 4000 * 8.00) / 1e6, places=12)
            self.assertNotIn('prompt_tokens', r)     # image rows carry no token columns
        with self.subTest('gpt-5-nano with cached tokens'):
            r = rows['en-gpt5']
            want = (12000 - 3000) * 0.05e-6 + 3000 * 0.01e-6 + 2500 * 0.35e-6
            self.assertAlmostEqual(want, token_cost('gpt-5-nano', 12000, 2500, 3000), places=15)
            self.assertTrue(math.isclose(r['cost_usd'], want, rel_tol=1e-9), (r['cost_usd'], want))
            self.assertEqual(r['provider'], 'OpenAI (Azure)')
            self.assertEqual((r['prompt_tokens'], r['completion_tokens'], r['cached_tokens'],
                              r['total_tokens']), (12000, 2500, 3000, 14500))
            self.assertIs(r['stream'], True)
        with self.subTest('unknown model'):
            r = rows['en-unknown']
            self.assertEqual(r['provider'], 'unknown')
            self.assertEqual(r['cost_usd'], 0)
            s = d.stats()
            self.assertEqual(s['unknown_model'], 1)
        with self.subTest('timestamps derived from end+duration and start+duration'):
            r = gen['turbo']
            self.assertEqual(r['end_time'], fmt_ms(T0 + 10000))
            self.assertEqual(r['start_time'], fmt_ms(T0 + 10000 - 750))
            self.assertEqual(r['duration_ms'], 750)
            self.assertAlmostEqual(r['cost_usd'], CATALOG['turbo']['per_image'], places=12)
            r = gen['deepseek-r1']
            self.assertEqual(r['start_time'], fmt_ms(T0 + 20000))
            self.assertEqual(r['end_time'], fmt_ms(T0 + 22000))
            self.assertEqual(r['duration_ms'], 2000)
        with self.subTest('timestamps default to receipt time'):
            r = rows['en-unknown']
            self.assertRegex(r['start_time'], TS_RE)
            self.assertEqual(r['start_time'], r['end_time'])
            self.assertEqual(r['duration_ms'], 0)
            got = datetime.datetime.strptime(r['end_time'], '%Y-%m-%d %H:%M:%S.%f')
            now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
            self.assertLess(abs((now - got).total_seconds()), 60, (r['end_time'], now))
        with self.subTest('generated ids and default user'):
            for r in gen.values():
                self.assertRegex(r['id'], GEN_ID_RE)
                self.assertEqual(r['user_id'], 'anonymous')
            self.assertNotEqual(gen['turbo']['id'], gen['deepseek-r1']['id'])
            self.assertEqual(rows['en-unknown']['user_id'], 'anonymous')
        with self.subTest('prompt cut to 120 characters, never inside a character'):
            want = LONG_PROMPT[:120]
            self.assertEqual(len(want), 120)
            self.assertEqual(rows['en-prompt-raw']['prompt'], want)   # cut by the daemon
            self.assertEqual(rows['en-prompt']['prompt'], want)       # cut by the client
            self.assertEqual(d.stats()['utf8_replaced'], 0)
        h4 = rows['en-flux']['ip_hash']
        h6 = rows['en-gpt5']['ip_hash']
        h4o = gen['deepseek-r1']['ip_hash']
        with self.subTest('ip anonymised, hashed'):
            self.assertEqual(rows['en-flux']['ip'], '198.51.100.0')
            self.assertEqual(rows['en-cached']['ip'], '198.51.100.0')
            self.assertEqual(rows['en-mapped']['ip'], '198.51.100.0')
            self.assertEqual(rows['en-gpt5']['ip'], '2001:db8:abcd::')
            self.assertEqual(gen['deepseek-r1']['ip'], '203.0.113.0')
            self.assertEqual(rows['en-error']['ip'], '')
            self.assertEqual(rows['en-error']['ip_hash'], '')
            for h in (h4, h6, h4o):
                self.assertRegex(h, HASH_RE)
            self.assertEqual(rows['en-cached']['ip_hash'], h4)
            self.assertEqual(rows['en-mapped']['ip_hash'], h4)
            for i in ('en-6to4', 'en-nat64'):
                self.assertEqual((rows[i]['ip'], rows[i]['ip_hash']), ('198.51.100.0', h4), i)
                self.assertEqual(rows[i]['referrer'], '', i)
            self.assertEqual(rows['en-gpt5-same-ip']['ip_hash'], h6)
            self.assertEqual(len({h4, h6, h4o}), 3)
            self.assertEqual(d.stats()['ip_invalid'], 0)
        self.assertEqual(d.stop(), 0)

        # Restart with the same key file: same hashes.  Another key: others.
        tb.reset()
        d2 = self.daemon(FAST + ['--ip-hash-key-file', str(key)], tinybird=tb)
        send([{'dataset': IMAGE, 'id': 'r-4', 'model': 'flux', 'ip': IP4},
              {'dataset': LLM, 'id': 'r-6', 'model': 'gpt-5-nano', 'ip': IP6}], d2.port)
        r4 = self.wait_ids(tb, IMAGE, {'r-4'})[0]
        r6 = self.wait_ids(tb, LLM, {'r-6'})[0]
        self.assertEqual(r4['ip_hash'], h4, "ip_hash changed across a restart with the same key")
        self.assertEqual(r6['ip_hash'], h6, "ip_hash changed across a restart with the same key")
        self.assertEqual(d2.stop(), 0)

        tb.reset()
        d3 = self.daemon(FAST + ['--ip-hash-key-file', str(keydir / 'other.key')], tinybird=tb)
        send([{'dataset': IMAGE, 'id': 'k-4', 'model': 'flux', 'ip': IP4}], d3.port)
        r = self.wait_ids(tb, IMAGE, {'k-4'})[0]
        self.assertRegex(r['ip_hash'], HASH_RE)
        self.assertNotEqual(r['ip_hash'], h4, "ip_hash does not depend on the key")
        self.assertEqual(d3.stop(), 0)

    def test_image_error_message_without_status_costs_nothing(self):
        # An image event with only error_message gets status "error" in its
        # row; it must then cost 0 like an event that sends status "error".
        tb = self.fake()
        d = self.daemon(FAST, tinybird=tb)
        send([{'dataset': IMAGE, 'id': 'err-msg-only', 'model': 'flux',
               'error_message': 'content policy'}], d.port)
        r = self.wait_ids(tb, IMAGE, {'err-msg-only'})[0]
        self.assertEqual(r['status'], 'error')
        self.assertEqual(r['cost_usd'], 0, "a row with status=error is charged per image")


# ---------------------------------------------------------------------------
# 3. privacy: no raw IP leaves the daemon
# ---------------------------------------------------------------------------

RAW_IPS = ['203.0.113.197', '198.51.100.234', '192.0.2.141',
           '2001:db8:85a3:8d3:1319:8a2e:370:7348', '2001:0db8:85a3:08d3:1319:8a2e:0370:7348',
           '[2001:db8:1:2:3:4:5:6]', 'fe80::1234:5678:9abc:def0%eth0',
           '::ffff:192.0.2.141']
# Strings that would show the host part of those addresses survived.
LEAKS = ['203.0.113.197', '198.51.100.234', '192.0.2.141', '1319:8a2e', '8a2e:370:7348',
         '8a2e:0370:7348', ':3:4:5:6', '1234:5678', '9abc:def0', 'eth0', '.197', '.234', '.141']


class TestPrivacy(DaemonTestCase):

    def privacy_events(self):
        evs = []
        for i, ip in enumerate(RAW_IPS):
            evs.append(image(i, id=f'p-img-{i}', ip=ip))
            evs.append(llm(i, id=f'p-llm-{i}', ip=ip))
        return evs

    def assert_no_leak(self, text, where):
        for s in LEAKS:
            at = text.find(s)
            if at >= 0:
                self.fail(f"raw IP fragment {s!r} found in {where}: "
                          f"...{text[max(0, at - 120):at + 60]}...")

    def test_no_raw_ip_reaches_tinybird(self):
        rows_dir = self.tmpdir()
        tb = self.fake(rows_dir=rows_dir)
        d = self.daemon(FAST, tinybird=tb)
        events = self.privacy_events()
        send(events[:len(events) // 2], d.port)
        for e in events[len(events) // 2:]:              # half as raw JSON datagrams
            send_json_raw(e, d.port)
        want = ids_by_ds(events)
        for ds in DATASETS:
            rows = self.wait_ids(tb, ds, want[ds])
            for r in rows:
                validate_row_columns(r, ds)
                self.assertRegex(r['ip_hash'], HASH_RE)
                self.assertTrue(r['ip'].endswith('.0') or r['ip'].endswith('::'), r['ip'])
            self.assert_no_leak(json.dumps(rows), f'/_fake/rows?name={ds}')
            self.assert_no_leak(json.dumps(tb.quarantine(ds)), f'quarantine {ds}')
            self.assert_no_leak((rows_dir / f'{ds}.ndjson').read_text(), f'rows-dir {ds}')
        self.assertEqual(d.stats()['ip_invalid'], 0)
        self.assertEqual(d.stop(), 0)
        self.assert_no_leak(d.log(), 'daemon log')

    def test_no_raw_ip_in_ndjson_bytes(self):
        # The fake does not keep request bodies; the file sink writes the very
        # NDJSON bytes the HTTP sink gzips, so check those byte for byte.
        out = self.tmpdir() / 'rows.ndjson'
        d = self.daemon(FAST + ['--out', str(out)])
        events = self.privacy_events()
        send(events, d.port)
        send_json_raw(image(99, id='p-bad-ip', ip='999.1.2.3'), d.port)   # not an address
        s = wait_until(stat_at_least(d, 'rows_delivered_total', len(events) + 1),
                       msg="rows written")
        self.assertEqual(s['ip_invalid'], 1)
        self.assertEqual(d.stop(), 0)
        data = out.read_bytes()
        self.assert_no_leak(data.decode(), str(out))
        self.assertNotIn(b'999.1.2.3', data)
        rows = [json.loads(line) for line in data.splitlines()]
        self.assertEqual(len(rows), len(events) + 1)
        bad = [r for r in rows if r['id'] == 'p-bad-ip'][0]
        self.assertEqual((bad['ip'], bad['ip_hash']), ('', ''))


# ---------------------------------------------------------------------------
# 4/5. bad input, JSON datagrams
# ---------------------------------------------------------------------------

class TestInput(DaemonTestCase):

    def test_bad_input_is_counted_and_daemon_survives(self):
        tb = self.fake()
        d = self.daemon(FAST, tinybird=tb)
        trunc_src = encode([{'dataset': IMAGE, 'model': 'flux', 'id': 'trunc-1',
                             'prompt': 'a long prompt here'}])[0]
        bad_dataset_bin = bytearray(encode([{'dataset': IMAGE, 'model': 'flux'}])[0])
        bad_dataset_bin[3] = 9                                  # no dataset 9
        oversize = json.dumps(image(0, id='too-big', prompt='x' * (MAX_DATAGRAM + 100))).encode()
        self.assertGreater(len(oversize), MAX_DATAGRAM)
        bad = [
            ('bad_magic', b'\x00\x01\x02garbage\xff\xfe'),
            ('bad_magic', b'hello, world'),
            ('bad_magic', bytes(range(1, 200))),
            ('truncated', trunc_src[:-3]),                      # cut inside the prompt
            ('truncated', trunc_src[:3]),                       # cut inside the header
            ('oversize', oversize),
            ('oversize', b'\xbf' * (MAX_DATAGRAM + 1)),
            ('bad_json', b'{"dataset": "llm_events", "model": '),
            ('bad_json', b'{not json at all}'),
            ('unknown_dataset', json.dumps({'dataset': 'video_events', 'model': 'x'}).encode()),
            ('unknown_dataset', bytes(bad_dataset_bin)),
            ('missing_field', json.dumps({'dataset': LLM, 'id': 'no-model'}).encode()),
            ('missing_field', json.dumps({'dataset': IMAGE, 'model': ''}).encode()),
            ('empty', b''),
        ]
        # One good event before each bad one, alternately binary and JSON.
        good = [image(i, id=f'good-img-{i}') if i % 2 else llm(i, id=f'good-llm-{i}')
                for i in range(len(bad))]
        good_bin = encode(good)
        expected = {}
        for i, (reason, dgram) in enumerate(bad):
            expected[reason] = expected.get(reason, 0) + 1
            send_raw(good_bin[i] if i % 4 < 2 else json.dumps(good[i]).encode(), d.port)
            send_raw(dgram, d.port)
        # One more good event after all the garbage: the daemon is alive.
        last = image(100, id='after-garbage')
        send([last], d.port)
        good.append(last)
        total = len(good) + len(bad)

        want = ids_by_ds(good)
        for ds in DATASETS:
            self.wait_ids(tb, ds, want[ds])
        self.assert_no_quarantine(tb)
        s = wait_until(stat_at_least(d, 'rows_delivered_total', len(good)),
                       msg="all good rows delivered")
        self.assertEqual(s['received'], total)
        self.assertEqual(s['accepted_total'], len(good))
        self.assertEqual(s['accepted'], {ds: len(want[ds]) for ds in DATASETS})
        self.assertEqual(s['rejected_total'], len(bad))
        want_rej = {r: 0 for r in s['rejected']}
        want_rej.update(expected)
        self.assertEqual(s['rejected'], want_rej)
        self.assertIsNone(d.proc.poll(), "daemon died")
        self.assertTrue(d.log_records('reject'), "no event=reject log lines")
        self.assertEqual(d.stop(), 0)

    def test_kernel_drops_are_counted_exactly(self):
        """A stopped daemon with a small receive buffer: every datagram the
        kernel accepted from the sender was either read by the daemon or
        counted in kernel_drops, which matches /proc/net/udp."""
        tb = self.fake()
        d = self.daemon(FAST + ['--rcvbuf', '65536'], tinybird=tb)
        dgram = encode([image(0, id='flood')])[0]
        os.kill(d.proc.pid, signal.SIGSTOP)
        sent = 0
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                for _ in range(5000):
                    s.sendto(dgram, ('127.0.0.1', d.port))
                    sent += 1
            port_hex = f'{d.port:04X}'
            with open('/proc/net/udp') as f:
                rows = [l.split() for l in f.read().splitlines()[1:]]
            proc_drops = [int(r[-1]) for r in rows if r[1].endswith(':' + port_hex)]
        finally:
            os.kill(d.proc.pid, signal.SIGCONT)
        self.assertEqual(len(proc_drops), 1, "the daemon's socket in /proc/net/udp")
        self.assertGreater(proc_drops[0], 0, "a 64 KiB buffer must overflow")
        s = wait_until(lambda: (lambda st: st if st['received'] + st['kernel_drops'] >= sent
                                else None)(d.stats()), msg="received + drops == sent")
        self.assertEqual(s['kernel_drops'], proc_drops[0])
        self.assertEqual(s['received'] + s['kernel_drops'], sent)
        self.assertEqual(d.stop(), 0)

    def test_json_datagrams_equal_binary_ones(self):
        tb = self.fake()
        d = self.daemon(FAST, tinybird=tb)
        base = [
            image(1, user_id='u1', username='bob', tier='flower', status='success',
                  referrer='https://pollinations.ai/p/x', ip='198.51.100.7', cached=False,
                  prompt='ünïcödé prompt 🐦'),
            image(2, model='gptimage', prompt_tokens=10, completion_tokens=20,
                  status='error', error_message='bad\nthing "quoted"', ip=IP6),
            llm(3, model='gpt-4.1-nano', stream=True, cached=True, tier='nectar',
                referrer='http://localhost:3000/chat', ip='203.0.113.50'),
            llm(4, model='deepseek-r1', cached_tokens=0, duration_ms=42),
            {'dataset': LLM, 'model': 'unknown-one', 'start_time': T0, 'end_time': T0 + 5},
        ]
        bin_events, json_events = [], []
        for i, e in enumerate(base):
            bin_events.append(dict(e, id=f'bin-{i}'))
            json_events.append(dict(e, id=f'json-{i}'))
        send(bin_events, d.port)
        for i, e in enumerate(json_events):
            # Like `echo '{...}' | socat - UDP:...`: a trailing newline on some.
            send_json_raw(e, d.port, trailing=b'\n' if i % 2 else b'')
        want = ids_by_ds(bin_events + json_events)
        rows = {}
        for ds in DATASETS:
            for r in self.wait_ids(tb, ds, want[ds]):
                validate_row_columns(r, ds)
                rows[r['id']] = r
        self.assert_no_quarantine(tb)
        for i in range(len(base)):
            b = dict(rows[f'bin-{i}'], id=None)
            j = dict(rows[f'json-{i}'], id=None)
            self.assertEqual(j, b, f"event {i}: JSON datagram row differs from binary")
        s = d.stats()
        self.assertEqual(s['rejected_total'], 0)
        self.assertEqual(s['accepted_total'], 2 * len(base))
        self.assertEqual(d.stop(), 0)

    @unittest.skipUnless(shutil.which('socat'), 'socat not installed')
    def test_socat_json_datagram(self):
        tb = self.fake()
        d = self.daemon(FAST, tinybird=tb)
        line = json.dumps({'dataset': IMAGE, 'id': 'via-socat', 'model': 'flux',
                           'width': 512, 'height': 512})
        p = subprocess.run(['socat', '-u', '-', f'UDP-SENDTO:127.0.0.1:{d.port}'],
                           input=(line + '\n').encode(), capture_output=True, timeout=10)
        self.assertEqual(p.returncode, 0, p.stderr)
        r = self.wait_ids(tb, IMAGE, {'via-socat'})[0]
        validate_row_columns(r, IMAGE)
        self.assertEqual((r['width'], r['height'], r['provider']), (512, 512, 'Black Forest Labs'))
        self.assertEqual(d.stats()['rejected_total'], 0)


# ---------------------------------------------------------------------------
# 6/7. file sink and shutdown
# ---------------------------------------------------------------------------

class TestShutdown(DaemonTestCase):

    def test_file_sink_and_sigterm_flush(self):
        out = self.tmpdir() / 'events.ndjson'
        d = self.daemon(['--out', str(out), '--flush-interval-ms', '60000'])
        sink = d.log_records('sink')
        self.assertEqual(len(sink), 1, d.log())
        self.assertEqual(sink[0].get('mode'), 'file')
        self.assertEqual(sink[0].get('out'), str(out))
        events = [image(i) for i in range(20)] + [llm(i) for i in range(30)]
        send(events, d.port)
        wait_until(stat_at_least(d, 'accepted_total', 50), msg="50 accepted")
        self.assertEqual(out.read_bytes(), b'', "rows written before the flush interval")
        self.assertEqual(d.stop(signal.SIGTERM), 0)
        lines = out.read_text().splitlines()
        rows = [json.loads(line) for line in lines]
        self.assertEqual(len(rows), 50)
        by_ds = {IMAGE: set(), LLM: set()}
        for r in rows:
            ds = IMAGE if 'prompt' in r else LLM
            validate_row_columns(r, ds)
            by_ds[ds].add(r['id'])
        self.assertEqual(by_ds, ids_by_ds(events))
        stopped = d.log_records('stopped')
        self.assertEqual(len(stopped), 1, d.log())
        self.assertEqual((stopped[0]['accepted'], stopped[0]['delivered'], stopped[0]['dropped']),
                         ('50', '50', '0'))

    def test_sigterm_delivers_pending_rows_to_tinybird(self):
        tb = self.fake()
        d = self.daemon(['--flush-interval-ms', '60000'], tinybird=tb)
        events = [image(i) for i in range(40)] + [llm(i) for i in range(60)]
        send(events, d.port)
        wait_until(stat_at_least(d, 'accepted_total', 100), msg="100 accepted")
        self.assertEqual(tb.summary()['requests'], 0, "sent before the flush interval")
        self.assertEqual(d.stop(signal.SIGTERM), 0)
        # Delivered before exit: no waiting here.
        want = ids_by_ds(events)
        for ds in DATASETS:
            got = [r['id'] for r in tb.rows(ds)]
            self.assertEqual(len(got), len(want[ds]))
            self.assertEqual(set(got), want[ds])
        self.assert_no_quarantine(tb)
        stopped = d.log_records('stopped')
        self.assertEqual(len(stopped), 1, d.log())
        self.assertEqual((stopped[0]['delivered'], stopped[0]['dropped']), ('100', '0'))


    def test_sigterm_gives_up_at_the_shutdown_deadline(self):
        # Tinybird keeps failing: the daemon must still exit soon after
        # --shutdown-timeout-ms, and lose nothing silently.  With a spool
        # (--spool-dir) the rows wait on disk and the next start delivers
        # them; without one they are counted as dropped.shutdown.
        spool = daemon_supports('--spool-dir')
        spool_args = ['--spool-dir', str(self.tmpdir() / 'spool')] if spool else []
        key_args = ['--ip-hash-key-file', str(self.tmpdir() / 'ip.key')]
        tb = self.fake()
        tb.faults(status=503)
        d = self.daemon(FAST + spool_args + key_args + ['--shutdown-timeout-ms', '500'],
                        tinybird=tb)
        events = [image(i) for i in range(10)]
        send(events, d.port)
        wait_until(lambda: tb.summary()['requests'] >= 1, msg="a first (failed) request")
        t0 = time.monotonic()
        self.assertEqual(d.stop(signal.SIGTERM, timeout=5), 0)
        self.assertLess(time.monotonic() - t0, 3.0)
        self.assertEqual(tb.row_count(IMAGE), 0)
        stopped = d.log_records('stopped')
        self.assertEqual(len(stopped), 1, d.log())
        self.assertEqual((stopped[0]['accepted'], stopped[0]['delivered']), ('10', '0'))
        if not spool:
            self.assertEqual(stopped[0]['dropped'], '10')
            drops = d.log_records('drop')
            self.assertEqual(sum(int(r['rows']) for r in drops
                                 if r.get('reason') == 'shutdown'), 10)
            return
        # Spooled, not dropped: a restart against a healthy Tinybird delivers
        # every row exactly once.
        self.assertEqual(stopped[0]['dropped'], '0')
        tb.faults(status=0)
        d2 = self.daemon(FAST + spool_args + key_args, tinybird=tb)
        self.wait_ids(tb, IMAGE, ids_by_ds(events)[IMAGE])
        s = wait_until(stat_at_least(d2, 'rows_replayed', 10), msg="rows_replayed")
        self.assertEqual(s['rows_replayed'], 10)
        self.assertEqual(s['dropped_total'], 0)
        self.assertEqual(d2.stop(), 0)
        self.assertEqual(tb.row_count(IMAGE), 10)


# ---------------------------------------------------------------------------
# 8. retries
# ---------------------------------------------------------------------------

class TestRetry(DaemonTestCase):

    def test_503_is_retried_until_delivered(self):
        tb = self.fake()
        tb.faults(status=503)
        d = self.daemon(FAST, tinybird=tb)
        events = [image(i) for i in range(10)] + [llm(i) for i in range(10)]
        send(events, d.port)
        # Let at least two requests fail, then heal the service.
        wait_until(lambda: sum(1 for r in tb.requests() if r['status'] == 503) >= 2,
                   msg="two 503 answers")
        tb.faults(status=0)
        want = ids_by_ds(events)
        for ds in DATASETS:
            self.wait_ids(tb, ds, want[ds], timeout=15)
        self.assert_no_quarantine(tb)
        n503 = sum(1 for r in tb.requests() if r['status'] == 503)
        s = wait_until(stat_at_least(d, 'rows_delivered_total', 20), msg="delivered stat")
        self.assertGreaterEqual(s['retries'], 1)
        self.assertEqual(s['retries'], n503)
        self.assertEqual(s['http'].get('503'), n503)
        self.assertEqual(s['dropped_total'], 0)
        self.assertTrue(d.log_records('send_retry'), d.log())
        self.assertEqual(d.stop(), 0)

    def test_400_is_not_retried(self):
        tb = self.fake()
        tb.faults(status=400)
        d = self.daemon(FAST, tinybird=tb)
        events = [image(i) for i in range(7)] + [llm(i) for i in range(5)]
        send(events, d.port)
        s = wait_until(stat_at_least(d, 'dropped.http_rejected', 12), msg="12 rows rejected")
        n_req = tb.summary()['requests']
        # Negative check: give a (wrong) retry time to happen; the shortest
        # backoff is 250 ms.
        time.sleep(1.0)
        s = d.stats()
        self.assertEqual(tb.summary()['requests'], n_req, "a 400 was retried")
        self.assertEqual(s['dropped']['http_rejected'], 12)
        self.assertEqual(s['dropped_total'], 12)
        self.assertEqual(s['retries'], 0)
        self.assertEqual(s['http'], {'400': n_req})
        self.assertEqual(n_req, sum(s['batches'].values()))
        self.assertEqual(s['rows_delivered_total'], 0)
        self.assertEqual(tb.row_count(IMAGE) + tb.row_count(LLM), 0)
        self.assertTrue(d.log_records('send_rejected'), d.log())
        self.assertEqual(d.stop(), 0)
        if daemon_supports('--spool-dir'):
            # Refused rows are kept in the dead-letter file, not retried.
            dl = d.dir / 'spool' / 'dead-letter.ndjson'
            lines = [json.loads(x) for x in dl.read_text().splitlines() if x.strip()]
            heads = [x for x in lines if 'dead_letter' in x]
            rows = [x for x in lines if 'dead_letter' not in x]
            self.assertEqual(len(heads), n_req)
            self.assertEqual(sorted(r['id'] for r in rows), sorted(e['id'] for e in events))


# ---------------------------------------------------------------------------
# start times outside the window: rejected by name, not lost to the TTL
# ---------------------------------------------------------------------------

class TestEventTimes(DaemonTestCase):

    def test_stale_and_future_start_times_are_rejected(self):
        tb = self.fake()
        d = self.daemon(FAST, tinybird=tb)
        now = int(time.time() * 1000)
        day = 86400000
        good = [image(0, id='t-now', start_time=now, end_time=now + 10),
                image(1, id='t-6d', start_time=now - 6 * day, end_time=now - 6 * day + 10),
                image(2, id='t-4min', start_time=now + 4 * 60000, end_time=now + 4 * 60000),
                llm(3, id='t-end-only', start_time=None, end_time=now - 1000),
                llm(4, id='t-none', start_time=None, end_time=None)]
        good = [{k: v for k, v in e.items() if v is not None} for e in good]
        stale = [image(5, id='t-seconds', start_time=now // 1000, end_time=now // 1000 + 2),
                 llm(6, id='t-8d', start_time=now - 8 * day, end_time=now - 8 * day + 5),
                 {'dataset': LLM, 'id': 't-end-sec', 'model': 'gpt-5-nano',
                  'end_time': now // 1000}]
        future = [image(7, id='t-1h-ahead', start_time=now + 3600000,
                        end_time=now + 3600000 + 5)]
        send(good + stale + future, d.port)
        s = wait_until(stat_at_least(d, 'rows_delivered_total', len(good)), msg='delivered')
        s = wait_until(stat_at_least(d, 'rejected_total', len(stale) + len(future)),
                       msg='rejected')
        self.assertEqual(s['rejected']['stale_time'], len(stale))
        self.assertEqual(s['rejected']['future_time'], len(future))
        self.assertEqual(s['accepted_total'], len(good))
        self.assertEqual(s['unknown_model'], 0)
        got = sorted(r['id'] for ds in DATASETS for r in tb.rows(ds))
        self.assertEqual(got, sorted(e['id'] for e in good))
        recs = d.log_records('reject')
        by_reason = {r['reason']: r for r in recs}
        self.assertEqual(by_reason['stale_time']['field'], 'start_time')
        secs = [r for r in recs if r['reason'] == 'stale_time' and 'hint' in r]
        self.assertTrue(secs and 'seconds' in secs[0]['hint'], recs)
        self.assertTrue(3500 <= int(by_reason['future_time']['offset_s']) <= 3600, recs)
        self.assertEqual(d.stop(), 0)

    def test_window_off_and_reloaded(self):
        """--max-event-age 0 lets a backfill through; SIGHUP applies a new
        window from the file."""
        tb = self.fake()
        cfg = self.tmpdir() / 'bf.json'
        cfg.write_text(json.dumps({'max-event-age': 0}))
        d = self.daemon(FAST + ['--config', str(cfg)], tinybird=tb)
        old = int(time.time() * 1000) - 30 * 86400000
        send([image(0, id='backfill', start_time=old, end_time=old + 1)], d.port)
        tb.wait_rows(IMAGE, 1)
        cfg.write_text(json.dumps({'max-event-age': '1d'}))
        d.send_signal(signal.SIGHUP)
        wait_until(lambda: d.log_records('reloaded'), msg='reloaded')
        send([image(1, id='too-old', start_time=old, end_time=old + 1)], d.port)
        s = wait_until(stat_at_least(d, 'rejected.stale_time', 1), msg='stale after reload')
        self.assertEqual(s['accepted_total'], 1)
        self.assertEqual(d.log_records('reloaded')[0]['restart_needed'], 'none')
        self.assertEqual(d.stop(), 0)


# ---------------------------------------------------------------------------
# 9. --check-config
# ---------------------------------------------------------------------------

class TestCheckConfig(DaemonTestCase):

    def run_daemon(self, *args):
        harness._require(harness.DAEMON_BIN)
        return subprocess.run([str(harness.DAEMON_BIN), *args], capture_output=True,
                              timeout=10, env=harness.clean_env(), stdin=subprocess.DEVNULL)

    def write(self, obj, name='birdfeeder.json'):
        p = self.tmpdir() / name
        p.write_text(obj if isinstance(obj, str) else json.dumps(obj))
        return p

    def test_good_config(self):
        cfg = self.write({'listen': '127.0.0.1:0', 'flush_interval_ms': 250,
                          'flush-bytes': '1MiB', 'catalog': str(REPO_CATALOG),
                          'stats_socket': ''})
        p = self.run_daemon('--config', str(cfg), '--check-config')
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn(b'configuration OK', p.stdout)
        self.assertIn(str(cfg).encode(), p.stdout)

    def test_bad_config_key_is_named(self):
        cfg = self.write({'listen': '127.0.0.1:0', 'flush_intervl_ms': 250,
                          'catalog': str(REPO_CATALOG)})
        p = self.run_daemon('--config', str(cfg), '--check-config')
        self.assertNotEqual(p.returncode, 0)
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn(b'flush_intervl_ms', p.stderr)
        self.assertNotIn(b'configuration OK', p.stdout)

    def test_bad_config_value_and_syntax(self):
        cfg = self.write({'max_datagram': 'huge', 'catalog': str(REPO_CATALOG)})
        p = self.run_daemon('--config', str(cfg), '--check-config')
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn(b'max-datagram', p.stderr)
        cfg = self.write('{"listen": "127.0.0.1:0",', name='broken.json')
        p = self.run_daemon('--config', str(cfg), '--check-config')
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn(str(cfg).encode(), p.stderr)


if __name__ == '__main__':
    unittest.main()


# ---------------------------------------------------------------------------
# the stats socket and a client that never reads
# ---------------------------------------------------------------------------

class TestStatsSocket(DaemonTestCase):

    def test_stuck_client_is_dropped_and_never_slows_the_pipeline(self):
        tb = self.fake()
        d = self.daemon(FAST + ['--stats-interval-ms', '10'], tinybird=tb)
        stuck = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.connect(str(d.stats_path))
        self.addCleanup(stuck.close)
        # Events keep flowing while the stuck client's lines pile up.
        sent = []
        t_end = time.monotonic() + 8
        i = 0
        while time.monotonic() < t_end and not d.log_records('stats_client_closed'):
            batch = [llm(i + k, id=f'stuck-{i + k}') for k in range(50)]
            send(batch, d.port)
            sent += batch
            i += 50
            time.sleep(0.05)
        closed = d.log_records('stats_client_closed')
        self.assertTrue(closed, "a client that never reads is closed")
        self.assertEqual(closed[0].get('reason'), 'not_reading')
        self.wait_ids(tb, LLM, {e['id'] for e in sent})
        # Other clients still get their lines.
        self.assertGreaterEqual(d.stats()['accepted_total'], len(sent))
        # The stuck one reads what was queued, then EOF.
        stuck.settimeout(5)
        while stuck.recv(65536):
            pass
        self.assertEqual(d.stop(), 0)

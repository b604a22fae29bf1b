"""Tests of tests/fake_tinybird.py and tests/harness.py themselves (no daemon).

Run from the repo root:
    python3 -m unittest discover -s tests/integration -p 'test_fake*.py'
"""

import gzip
import http.client
import json
import os
import signal
import socket
import stat
import sys
import tempfile
import textwrap
import time
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # tests/

import fake_tinybird  # noqa: E402
import harness  # noqa: E402
from harness import FakeTinybird, make_row, wait_until  # noqa: E402

TOKEN = 'test-token'
DS = 'llm_events'


def post(port, body, ds=DS, token=TOKEN, wait=True, gz=False, conn=None, headers=None,
         timeout=5):
    """POST body (bytes, or list of rows) to /v0/events; returns (status, headers, json)."""
    if isinstance(body, list):
        body = b''.join(json.dumps(r).encode() + b'\n' for r in body)
    hdrs = {'Content-Type': 'application/x-ndjson'}
    if token is not None:
        hdrs['Authorization'] = f'Bearer {token}'
    if gz:
        body = gzip.compress(body)
        hdrs['Content-Encoding'] = 'gzip'
    hdrs.update(headers or {})
    path = f'/v0/events?name={ds}' + ('&wait=true' if wait else '')
    own = conn is None
    conn = conn or http.client.HTTPConnection('127.0.0.1', port, timeout=timeout)
    try:
        conn.request('POST', path, body=body, headers=hdrs)
        resp = conn.getresponse()
        data = resp.read()
    finally:
        if own:
            conn.close()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, (json.loads(data) if data else None)


class FakeTestCase(unittest.TestCase):
    """One fake per class; reset before each test."""
    fake_kwargs = {}

    @classmethod
    def setUpClass(cls):
        cls.tb = FakeTinybird(token=TOKEN, **cls.fake_kwargs)

    @classmethod
    def tearDownClass(cls):
        cls.tb.stop()

    def setUp(self):
        self.tb.reset()

    def post(self, body, **kw):
        return post(self.tb.port, body, **kw)


class TestEventsAPI(FakeTestCase):

    def test_auth_missing_and_wrong_token_403(self):
        row = make_row(DS)
        for token in (None, 'wrong-token'):
            status, hdrs, body = self.post([row], token=token)
            self.assertEqual(status, 403)
            self.assertIn('error', body)
            self.assertIn('x-ratelimit-limit', hdrs)
        status, _, _ = self.post([row], headers={'Authorization': f'Basic {TOKEN}'})
        self.assertEqual(status, 403)
        self.assertEqual(self.tb.rows(DS), [])
        self.assertEqual(self.tb.summary()['requests_by_status'], {'403': 3})

    def test_unknown_datasource_404_mentions_region(self):
        status, _, body = self.post([make_row(DS)], ds='nope_events')
        self.assertEqual(status, 404)
        self.assertIn('region', body['error'])
        self.assertIn('workspace', body['error'])

    def test_plain_body_wait_200(self):
        rows = [make_row(DS, id=f'r{i}') for i in range(3)]
        status, hdrs, body = self.post(rows, wait=True)
        self.assertEqual(status, 200)
        self.assertEqual(body, {'successful_rows': 3, 'quarantined_rows': 0})
        for h in ('x-ratelimit-limit', 'x-ratelimit-remaining', 'x-ratelimit-reset'):
            self.assertIn(h, hdrs)
        self.assertNotIn('retry-after', hdrs)
        self.assertEqual([r['id'] for r in self.tb.rows(DS)], ['r0', 'r1', 'r2'])
        self.assertEqual(self.tb.rows(DS)[0], rows[0])

    def test_no_wait_202(self):
        status, _, body = self.post([make_row(DS)], wait=False)
        self.assertEqual(status, 202)
        self.assertEqual(body['successful_rows'], 1)
        req = self.tb.requests()[-1]
        self.assertFalse(req['wait'])

    def test_gzip_body(self):
        rows = [make_row(DS, id=f'g{i}', prompt='hello ' * 50) for i in range(20)]
        status, _, body = self.post(rows, gz=True)
        self.assertEqual(status, 200)
        self.assertEqual(body['successful_rows'], 20)
        req = self.tb.requests()[-1]
        self.assertEqual(req['content_encoding'], 'gzip')
        self.assertEqual(req['content_type'], 'application/x-ndjson')
        self.assertLess(req['bytes'], req['body_bytes'])      # compressed < decompressed
        self.assertEqual(len(self.tb.rows(DS)), 20)

    def test_multi_member_gzip(self):
        a = gzip.compress(json.dumps(make_row(DS, id='m1')).encode() + b'\n')
        b = gzip.compress(json.dumps(make_row(DS, id='m2')).encode() + b'\n')
        status, _, body = self.post(a + b, headers={'Content-Encoding': 'gzip'})
        self.assertEqual((status, body['successful_rows']), (200, 2))

    def test_corrupt_gzip_400(self):
        good = gzip.compress(json.dumps(make_row(DS)).encode())
        for bad in (b'not gzip at all', good[:-6], good[:10] + b'\xff' * 20 + good[30:]):
            status, _, body = self.post(bad, headers={'Content-Encoding': 'gzip'})
            self.assertEqual(status, 400, bad)
            self.assertIn('gzip', body['error'])
        self.assertEqual(self.tb.rows(DS), [])

    def test_unsupported_encoding_400(self):
        status, _, _ = self.post(b'{}', headers={'Content-Encoding': 'zstd'})
        self.assertEqual(status, 400)

    def test_empty_and_trailing_lines(self):
        body = (json.dumps(make_row(DS, id='a')) + '\n\n' +
                json.dumps(make_row(DS, id='b')) + '\r\n').encode()
        status, _, res = self.post(body)
        self.assertEqual(res, {'successful_rows': 2, 'quarantined_rows': 0})

    def test_chunked_body(self):
        conn = http.client.HTTPConnection('127.0.0.1', self.tb.port, timeout=5)
        chunks = [json.dumps(make_row(DS, id=f'c{i}')).encode() + b'\n' for i in range(3)]
        conn.request('POST', f'/v0/events?name={DS}&wait=true', body=iter(chunks),
                     headers={'Authorization': f'Bearer {TOKEN}'}, encode_chunked=True)
        resp = conn.getresponse()
        self.assertEqual((resp.status, json.loads(resp.read())['successful_rows']), (200, 3))
        conn.close()

    def test_quarantine(self):
        good = make_row(DS, id='ok')
        missing = make_row(DS, id='missing')
        del missing['model']
        iso_ts = make_row(DS, id='iso', start_time='2026-11-29T18:33:25.123Z')
        bad_date = make_row(DS, id='baddate', end_time='2026-02-30 10:00:00.000')
        no_ms = make_row(DS, id='noms', start_time='2026-11-29 18:33:25')
        bool_uint = make_row(DS, id='bool', duration_ms=True)
        neg_uint = make_row(DS, id='neg', prompt_tokens=-1)
        big_uint = make_row(DS, id='big', total_tokens=2 ** 32)
        float_uint = make_row(DS, id='flt', cached_tokens=1.5)
        str_float = make_row(DS, id='sf', cost_usd='0.1')
        bool_float = make_row(DS, id='bf', cost_usd=False)
        int_bool = make_row(DS, id='ib', stream=1)
        null_str = make_row(DS, id='ns', username=None)
        num_str = make_row(DS, id='nums', user_id=42)
        int_float_ok = make_row(DS, id='intfloat', cost_usd=0)
        extra_ok = make_row(DS, id='extra', unknown_field='ignored')
        lines = [json.dumps(r) for r in (good, missing, iso_ts, bad_date, no_ms, bool_uint,
                                         neg_uint, big_uint, float_uint, str_float, bool_float,
                                         int_bool, null_str, num_str, int_float_ok, extra_ok)]
        lines += ['{"id": "broken json', '[1, 2]', '"just a string"',
                  json.dumps(good).replace('0.5', 'NaN')]
        status, _, res = self.post(('\n'.join(lines) + '\n').encode())
        self.assertEqual(status, 200)
        self.assertEqual(res, {'successful_rows': 3, 'quarantined_rows': 17})
        self.assertEqual(sorted(r['id'] for r in self.tb.rows(DS)), ['extra', 'intfloat', 'ok'])

        q = self.tb.quarantine(DS)
        self.assertEqual(len(q), 17)
        by_id = {e['row']['id']: e['error'] for e in q if isinstance(e['row'], dict)}
        self.assertIn('`model`', by_id['missing'])
        self.assertIn('missing', by_id['missing'])
        self.assertIn('`start_time`', by_id['iso'])
        self.assertIn('`end_time`', by_id['baddate'])
        self.assertIn('invalid date', by_id['baddate'])
        self.assertIn('`start_time`', by_id['noms'])
        self.assertIn('`duration_ms`', by_id['bool'])
        self.assertIn('expected integer, got bool', by_id['bool'])
        self.assertIn('out of range', by_id['neg'])
        self.assertIn('out of range', by_id['big'])
        self.assertIn('got float', by_id['flt'])
        self.assertIn('`cost_usd`', by_id['sf'])
        self.assertIn('`cost_usd`', by_id['bf'])
        self.assertIn('`stream`', by_id['ib'])
        self.assertIn('null', by_id['ns'])
        self.assertIn('`user_id`', by_id['nums'])
        raw = [e for e in q if not isinstance(e['row'], dict)]
        self.assertEqual(len(raw), 4)      # broken JSON, array, string, NaN
        self.assertTrue(any('invalid JSON' in e['error'] for e in raw))
        self.assertTrue(any('not a JSON object' in e['error'] for e in raw))
        summ = self.tb.summary()
        self.assertEqual(summ['quarantined'][DS], 17)
        self.assertEqual(summ['rows'][DS], 3)

    def test_other_path_and_method(self):
        conn = http.client.HTTPConnection('127.0.0.1', self.tb.port, timeout=5)
        conn.request('GET', f'/v0/events?name={DS}', headers={'Authorization': f'Bearer {TOKEN}'})
        r = conn.getresponse()
        r.read()
        self.assertEqual(r.status, 405)
        conn.request('POST', '/v0/other', body=b'x')
        r = conn.getresponse()
        r.read()
        self.assertEqual(r.status, 404)
        conn.close()

    def test_max_body_413_on_decompressed_size(self):
        self.tb.faults(max_body=50_000)
        row = make_row(DS, prompt='a' * 1000)
        rows = [row] * 60                       # ~75 kB plain, tiny gzipped
        status, _, body = self.post(rows)
        self.assertEqual(status, 413)
        self.assertIn('error', body)
        status, _, _ = self.post(rows, gz=True)
        self.assertEqual(status, 413)
        req = self.tb.requests()[-1]
        self.assertLess(req['bytes'], 50_000)   # compressed was under the limit
        status, _, _ = self.post(rows[:30], gz=True)
        self.assertEqual(status, 200)
        self.assertEqual(len(self.tb.rows(DS)), 30)
        self.tb.faults(max_body=None)           # back to the CLI default (10 MB)
        self.assertEqual(self.post(rows)[0], 200)


class TestFaults(FakeTestCase):

    def test_status_fault_stores_nothing(self):
        self.tb.faults(status=503)
        for _ in range(2):
            status, hdrs, body = self.post([make_row(DS)])
            self.assertEqual(status, 503)
            self.assertIn('error', body)
            self.assertIn('x-ratelimit-reset', hdrs)
        self.assertEqual(self.tb.rows(DS), [])
        self.tb.faults(status=0)
        self.assertEqual(self.post([make_row(DS)])[0], 200)
        self.assertEqual(self.tb.summary()['requests_by_status'], {'503': 2, '200': 1})

    def test_status_every_with_retry_after(self):
        self.tb.faults(status_every=[3, 429], retry_after=1, ratelimit_reset=2)
        results = [self.post([make_row(DS, id=str(i))]) for i in range(6)]
        self.assertEqual([r[0] for r in results], [200, 200, 429, 200, 200, 429])
        s429, h429, b429 = results[2]
        self.assertEqual(h429['retry-after'], '1')
        self.assertEqual(h429['x-ratelimit-reset'], '2')
        self.assertIn('error', b429)
        self.assertNotIn('retry-after', results[0][1])     # only sent with 429
        self.assertEqual(len(self.tb.rows(DS)), 4)
        # retry_after null: 429 without Retry-After, clients fall back to X-RateLimit-Reset
        self.tb.faults(status_every=[1, 429], retry_after=None)
        status, hdrs, _ = self.post([make_row(DS)])
        self.assertEqual(status, 429)
        self.assertNotIn('retry-after', hdrs)
        self.assertEqual(hdrs['x-ratelimit-reset'], '2')

    def test_rate_limit_enforced(self):
        self.tb.faults(rate_limit=2, retry_after=1)
        statuses = [self.post([make_row(DS)])[0] for _ in range(3)]
        self.assertEqual(statuses, [200, 200, 429])
        status, hdrs, _ = self.post([make_row(DS)])
        self.assertEqual(hdrs['x-ratelimit-limit'], '2')
        self.assertEqual(hdrs['x-ratelimit-remaining'], '0')

    def test_rate_limit_window_shared_with_headers(self):
        """The limit is per datasource, shared by every connection, over a
        fixed window; every answer says Limit, Remaining and Reset, and the
        limiter's 429 says Retry-After (the seconds to the window's end)."""
        self.tb.faults(rate_limit=3, rate_window_ms=3000)
        # Windows are aligned to the fake's start (CLOCK_MONOTONIC, shared by
        # the processes): begin in the first second of one, so that all
        # five requests land in it.
        t0 = self.tb.summary()['t_start_mono']
        wait_until(lambda: (time.monotonic() - t0) % 3.0 < 1.0, timeout=5, interval=0.01)
        conns = [http.client.HTTPConnection('127.0.0.1', self.tb.port, timeout=5)
                 for _ in range(2)]
        try:
            results = [self.post([make_row(DS)], conn=conns[i % 2]) for i in range(5)]
            other = self.post([make_row('image_events')], ds='image_events')
        finally:
            for c in conns:
                c.close()
        self.assertEqual([r[0] for r in results], [200, 200, 200, 429, 429])
        self.assertEqual([r[1]['x-ratelimit-remaining'] for r in results],
                         ['2', '1', '0', '0', '0'])
        for status, hdrs, _ in results:
            self.assertEqual(hdrs['x-ratelimit-limit'], '3')
            self.assertIn(hdrs['x-ratelimit-reset'], ('2', '3'))
            self.assertEqual('retry-after' in hdrs, status == 429)
        self.assertEqual(results[3][1]['retry-after'], results[3][1]['x-ratelimit-reset'])
        self.assertEqual(other[0], 200)                  # another datasource's window
        self.assertEqual(other[1]['x-ratelimit-remaining'], '2')
        recs = [r for r in self.tb.requests() if r['datasource'] == DS]
        self.assertEqual([r['fault'] for r in recs], [None] * 3 + ['rate_limit'] * 2)
        self.assertEqual(recs[0]['rl'][:2], [3, 2])
        self.assertEqual(len(self.tb.rows(DS)), 3)
        # The next window takes requests again.
        wait_until(lambda: self.post([make_row(DS)])[0] == 200, timeout=5, interval=0.2)
        with self.assertRaises(AssertionError):
            self.tb.faults(rate_window_ms=0)

    def test_delay(self):
        self.tb.faults(delay_ms=300)
        t0 = time.monotonic()
        status, _, _ = self.post([make_row(DS)])
        self.assertEqual(status, 200)
        self.assertGreaterEqual(time.monotonic() - t0, 0.3)
        # A client with a shorter timeout gives up.
        with self.assertRaises((TimeoutError, socket.timeout)):
            post(self.tb.port, [make_row(DS)], timeout=0.1)

    def test_down_resets_connection(self):
        self.tb.faults(down=True)
        with self.assertRaises((ConnectionError, http.client.HTTPException)):
            self.post([make_row(DS)])
        self.assertEqual(self.tb.rows(DS), [])
        self.assertEqual(self.tb.summary()['requests_by_status'], {'0': 1})
        self.assertEqual(self.tb.requests()[-1]['fault'], 'down')
        self.tb.faults(down=False)
        self.assertEqual(self.post([make_row(DS)])[0], 200)

    def test_refuse_really_refuses(self):
        ka = http.client.HTTPConnection('127.0.0.1', self.tb.port, timeout=5)
        self.assertEqual(post(self.tb.port, [make_row(DS)], conn=ka)[0], 200)
        self.tb.faults(refuse=True)
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection(('127.0.0.1', self.tb.port), timeout=2).close()
        # An already-open keep-alive connection is cut too.
        with self.assertRaises((ConnectionError, http.client.HTTPException)):
            post(self.tb.port, [make_row(DS)], conn=ka)
        ka.close()
        self.assertTrue(self.tb.summary())       # control port still answers
        self.tb.faults(refuse=False)
        self.assertEqual(self.post([make_row(DS)])[0], 200)   # same port again

    def test_refuse_ms_auto_reopens(self):
        self.tb.faults(refuse=True, refuse_ms=200)
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection(('127.0.0.1', self.tb.port), timeout=2).close()
        wait_until(lambda: self.post([make_row(DS)])[0] == 200, timeout=5,
                   ignore=(ConnectionRefusedError,))
        self.assertFalse(self.tb.faults()['refuse'])

    def test_reset_clears_faults_and_reopens(self):
        self.tb.faults(status=500, refuse=True)
        self.tb.reset()
        self.assertEqual(self.post([make_row(DS)])[0], 200)
        self.assertEqual(self.tb.faults(), fake_tinybird.FAULT_DEFAULTS)

    def test_keepalive_false_closes(self):
        self.tb.faults(keepalive=False)
        status, hdrs, _ = self.post([make_row(DS)])
        self.assertEqual(status, 200)
        self.assertEqual(hdrs.get('connection'), 'close')


class TestConnectionsAndControl(FakeTestCase):

    def test_keepalive_reuse_counted(self):
        conn = http.client.HTTPConnection('127.0.0.1', self.tb.port, timeout=5)
        self.assertEqual(post(self.tb.port, [make_row(DS)], conn=conn)[0], 200)
        self.assertEqual(post(self.tb.port, [make_row(DS)], conn=conn, gz=True)[0], 200)
        conn.close()
        self.assertEqual(self.tb.summary()['connections'], 1)
        reqs = self.tb.requests()
        self.assertEqual(len({r['conn_id'] for r in reqs}), 1)
        self.post([make_row(DS)])              # a fresh connection
        self.assertEqual(self.tb.summary()['connections'], 2)

    def test_summary_requests_and_reset(self):
        self.post([make_row(DS), make_row(DS)])
        self.post([make_row('image_events')], ds='image_events', wait=False)
        self.post([make_row(DS)], token='bad')
        s = self.tb.summary()
        self.assertEqual(s['rows'], {DS: 2, 'image_events': 1})
        self.assertEqual(s['requests_by_status'], {'200': 1, '202': 1, '403': 1})
        self.assertGreater(s['bytes_in'], 0)
        for key in ('quarantined', 'connections'):
            self.assertIn(key, s)
        reqs = self.tb.requests()
        self.assertEqual([r['status'] for r in reqs], [200, 202, 403])
        r0 = reqs[0]
        for key in ('t_mono', 't_wall', 'datasource', 'content_encoding', 'content_type',
                    'bytes', 'body_bytes', 'rows_ok', 'rows_quarantined', 'conn_id'):
            self.assertIn(key, r0)
        self.assertEqual((r0['datasource'], r0['rows_ok']), (DS, 2))
        self.assertEqual(len(self.tb.requests(since=reqs[1]['id'])), 1)
        self.tb.reset()
        s = self.tb.summary()
        self.assertEqual((s['rows'], s['requests_by_status'], s['connections'], s['bytes_in']),
                         ({}, {}, 0, 0))
        self.assertEqual(self.tb.rows(DS), [])
        self.assertEqual(self.tb.requests(), [])

    def test_control_errors(self):
        with self.assertRaisesRegex(AssertionError, '400'):
            self.tb.faults(nonsense=1)
        with self.assertRaisesRegex(AssertionError, '400'):
            self.tb.faults(status_every=[0, 429])
        with self.assertRaisesRegex(AssertionError, '400'):
            self.tb._call('GET', '/_fake/rows')
        with self.assertRaisesRegex(AssertionError, '404'):
            self.tb._call('GET', '/_fake/nothing')

    def test_control_on_main_port_and_events_not_on_control_port(self):
        info = self.tb._call('GET', '/_fake/summary', port=self.tb.port)
        self.assertIn('rows', info)
        status, _, _ = post(self.tb.control_port, [make_row(DS)])
        self.assertEqual(status, 404)
        self.assertEqual(self.tb.summary()['connections'], 0)


class TestCountOnly(FakeTestCase):
    fake_kwargs = {'count_only': True}

    def test_counts_without_storing(self):
        body = b'{"not": "validated"}\n' * 5 + b'{"last": "no newline"}'
        status, _, res = self.post(body)
        self.assertEqual((status, res['successful_rows']), (200, 6))
        status, _, res = self.post(body, gz=True, wait=False)
        self.assertEqual((status, res['successful_rows']), (202, 6))
        self.assertEqual(self.tb.row_count(DS), 12)
        self.assertEqual(self.tb.rows(DS), [])
        self.assertEqual(self.post(body, token='bad')[0], 403)
        self.assertEqual(self.post(b'garbage', headers={'Content-Encoding': 'gzip'})[0], 400)
        self.assertEqual(self.post(body, ds='unknown')[0], 404)


class TestProcess(unittest.TestCase):

    def test_rows_dir_port_file_and_sigterm(self):
        with tempfile.TemporaryDirectory() as d:
            port_file = os.path.join(d, 'port')
            tb = FakeTinybird(token=TOKEN, rows_dir=os.path.join(d, 'rows'),
                              extra_args=['--port-file', port_file])
            try:
                self.assertEqual(int(Path(port_file).read_text()), tb.port)
                rows = [make_row(DS, id='f1'), make_row(DS, id='f2')]
                self.assertEqual(post(tb.port, rows)[0], 200)
                bad = make_row(DS, id='bad', cached='yes')
                self.assertEqual(post(tb.port, [bad])[2]['quarantined_rows'], 1)
                lines = Path(d, 'rows', f'{DS}.ndjson').read_text().splitlines()
                self.assertEqual([json.loads(x)['id'] for x in lines], ['f1', 'f2'])
            finally:
                self.assertEqual(tb.stop(), 0)            # clean exit on SIGTERM

    def test_sigint_clean_exit(self):
        tb = FakeTinybird(token=TOKEN)
        tb.proc.send_signal(signal.SIGINT)
        self.assertEqual(tb.proc.wait(timeout=5), 0)
        tb.stop()

    def test_gzip_bomb_is_bounded(self):
        bomb = gzip.compress(b'\n' * 50_000_000)   # 50 MB of newlines, ~50 kB gzipped
        with FakeTinybird(token=TOKEN) as tb:
            status, _, _ = post(tb.port, bomb, headers={'Content-Encoding': 'gzip'})
            self.assertEqual(status, 413)


class TestSchema(unittest.TestCase):
    TEXT = textwrap.dedent("""\
        DESCRIPTION >
            test

        SCHEMA >
            `a` UInt8 `json:$.a`,
            `b` Nullable(Int32) `json:$.b`,
            `c` DateTime `json:$.c` DEFAULT now(),
            `d` LowCardinality(Nullable(String)) `json:$.nested.d`,
            `e` Int64 DEFAULT -1 `json:$.e`,
            `f` UInt16 `json:$.f`,
            `g` DateTime64(3, 'UTC') `json:$.g`,
            `h` Array(String) `json:$.h`,
            `i` Float32 `json:$.i`,
            `j` UInt64 `json:$.j`

        ENGINE "MergeTree"
        ENGINE_SORTING_KEY "a"
        """)

    def setUp(self):
        self.cols = fake_tinybird.parse_datasource(self.TEXT)

    def errs(self, **kw):
        row = {'a': 1, 'f': 2, 'g': '2026-01-01 00:00:00.000', 'h': [], 'i': 1.5, 'j': 2 ** 64 - 1}
        row.update(kw)
        return fake_tinybird.validate_row({k: v for k, v in row.items() if v != '<del>'},
                                          self.cols)

    def test_parse(self):
        by = {c.name: c for c in self.cols}
        self.assertEqual(list(by), list('abcdefghij'))
        self.assertTrue(by['b'].nullable)
        self.assertEqual(by['c'].default, 'now()')
        self.assertEqual(by['d'].path_parts, ['nested', 'd'])
        self.assertTrue(by['d'].nullable)
        self.assertEqual((by['e'].type_str, by['e'].default), ('Int64', '-1'))
        self.assertEqual(by['g'].type.args, ['3', "'UTC'"])
        self.assertEqual([c.required for c in self.cols],
                         [True, False, False, False, False, True, True, True, True, True])

    def test_validate(self):
        self.assertEqual(self.errs(), [])
        self.assertEqual(self.errs(b=None, c=None, e=None), [])       # nullable / DEFAULT
        self.assertEqual(self.errs(b=-5, c='2026-01-01 00:00:00', nested={'d': 'x'}), [])
        self.assertTrue(self.errs(a=256))
        self.assertTrue(self.errs(a=-1))
        self.assertTrue(self.errs(a='<del>'))
        self.assertTrue(self.errs(b=2 ** 31))
        self.assertTrue(self.errs(c='2026-01-01 00:00:00.000'))        # DateTime: no fraction
        self.assertTrue(self.errs(nested={'d': 5}))
        self.assertTrue(self.errs(g='2026-01-01 00:00:00.00'))
        self.assertTrue(self.errs(g='2026-13-01 00:00:00.000'))
        self.assertTrue(self.errs(h=[1]))
        self.assertTrue(self.errs(i=True))
        self.assertTrue(self.errs(j=2 ** 64))
        self.assertEqual(self.errs(i=3), [])
        self.assertTrue(fake_tinybird.validate_row(
            {'a': 1, 'f': 2, 'g': '2026-01-01 00:00:00.000', 'h': [], 'i': 1, 'j': 1},
            self.cols, require_all=True))                                 # b..e absent

    def test_repo_datasources_parse(self):
        ds = fake_tinybird.load_datasources(str(harness.DATASOURCES))
        self.assertEqual(set(ds), {'llm_events', 'image_events'})
        self.assertTrue(all(c.required for c in ds['llm_events']))


# A stand-in for birdfeederd, to test the harness's Daemon class before the real
# binary exists: logs the listening line, serves JSON stats on the Unix socket,
# exits 0 on SIGTERM.
STUB_DAEMON = textwrap.dedent('''\
    #!/usr/bin/env python3
    import json, os, signal, socket, sys, threading, time
    args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
    host, port = args["--listen"].rsplit(":", 1)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((host, int(port)))
    assert args["--ip-hash-key-file"].startswith(os.getcwd()), args
    received = 0
    def recv():
        global received
        while True:
            udp.recv(65536); received += 1
    threading.Thread(target=recv, daemon=True).start()
    def stats():
        srv = socket.socket(socket.AF_UNIX); srv.bind(args["--stats-socket"]); srv.listen()
        while True:
            c, _ = srv.accept()
            def feed(c=c):
                try:
                    while True:
                        c.sendall((json.dumps({"received": received,
                                   "env_key": os.environ.get("TINYBIRD_API_KEY")}) + "\\n").encode())
                        time.sleep(int(args["--stats-interval-ms"]) / 1000)
                except OSError:
                    c.close()
            threading.Thread(target=feed, daemon=True).start()
    if "--stats-socket" in args:
        threading.Thread(target=stats, daemon=True).start()
        time.sleep(0.05)
    print("ts=2026-01-01T00:00:00Z level=info event=starting msg=\\"hello world\\"",
          file=sys.stderr, flush=True)
    print(f"ts=2026-01-01T00:00:00Z level=info event=listening addr=127.0.0.1:{udp.getsockname()[1]} proto=udp",
          file=sys.stderr, flush=True)
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    while True:
        time.sleep(1)
''')


class TestHarness(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.stub = Path(cls.tmp.name, 'stub_daemon')
        cls.stub.write_text(STUB_DAEMON)
        cls.stub.chmod(cls.stub.stat().st_mode | stat.S_IXUSR)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_daemon_class_with_stub(self):
        os.environ['TINYBIRD_API_KEY'] = 'developer-real-key'
        try:
            with harness.Daemon(binary=self.stub) as d:
                self.assertGreater(d.port, 0)
                harness.send_raw(b'{"x": 1}', d.port)
                harness.send_raw('{"x": 2}', d.port)
                st = wait_until(lambda: (s := d.stats())['received'] == 2 and s, timeout=5)
                self.assertIn('--catalog', d.cmd)
                self.assertIsNone(st['env_key'])          # TINYBIRD_* stripped
                self.assertEqual(d.log_records('starting')[0]['msg'], 'hello world')
                self.assertEqual(d.stop(), 0)
                tmpdir = d.dir
            self.assertFalse(tmpdir.exists())
            self.assertIn('event=listening', d.log())
            with harness.Daemon(binary=self.stub, env={'TINYBIRD_API_KEY': 'k'}) as d:
                self.assertEqual(d.stats()['env_key'], 'k')
            with FakeTinybird(token='tok') as tb, \
                    harness.Daemon(binary=self.stub, tinybird=tb) as d:
                self.assertEqual(d.stats()['env_key'], 'tok')
                self.assertIn(tb.url, d.cmd)
        finally:
            del os.environ['TINYBIRD_API_KEY']

    def test_daemon_exit_before_listening_is_reported(self):
        bad = Path(self.tmp.name, 'bad_daemon')
        bad.write_text('#!/bin/sh\necho "level=error event=config_error" >&2\nexit 2\n')
        bad.chmod(0o755)
        with self.assertRaisesRegex(AssertionError, '(?s)exited with 2.*config_error'):
            harness.Daemon(binary=bad)

    def test_missing_binary_skips(self):
        old = os.environ.pop('BIRDFEEDER_REQUIRE_BINARIES', None)
        try:
            with self.assertRaises(unittest.SkipTest):
                harness.Daemon(binary='/nonexistent/birdfeederd')
        finally:
            if old is not None:
                os.environ['BIRDFEEDER_REQUIRE_BINARIES'] = old

    def test_wait_until_and_helpers(self):
        self.assertEqual(wait_until(lambda: 5), 5)
        with self.assertRaisesRegex(AssertionError, 'never.*last value 0'):
            wait_until(lambda: 0, timeout=0.2, msg='never')
        harness.validate_row_columns(make_row('image_events'), 'image_events')
        row = make_row(DS)
        del row['ip_hash']
        with self.assertRaisesRegex(AssertionError, 'ip_hash'):
            harness.validate_row_columns(row, DS)
        self.assertRegex(harness.ts_ms(), r'^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}$')
        self.assertEqual(harness.parse_logfmt('a=1 b="x \\"y\\" \\\\ \\x1f" c= d="trunc'),
                         {'a': '1', 'b': 'x "y" \\ \x1f', 'c': '', 'd': 'trunc'})


if __name__ == '__main__':
    unittest.main()

"""End-to-end tests of the Node.js shim (client-shim/node) and the example
services (examples/image-service, examples/text-service):

    node script / example HTTP service -> @birdfeeder/client (UDP, protocol v1)
        -> build/birdfeederd -> tests/fake_tinybird.py

Each test starts its own fake, daemon and node processes on ephemeral
loopback ports and asserts exact results: exactly one row per event or HTTP
request, matched by id, with the right values. Needs `node` (18.8 or later)
on PATH; without it the tests skip, unless BIRDFEEDER_REQUIRE_BINARIES=1.

    python3 -m unittest discover -s tests/integration -p 'test_node.py' -v
"""

import datetime
import json
import os
import re
import select
import shutil
import subprocess
import sys
import threading
import time
import unittest
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # tests/

from harness import (BirdfeederTestCase, REPO, REPO_CATALOG, IMAGE, LLM,  # noqa: E402
                     clean_env, stop_process, validate_row_columns, wait_until)

FAST = ['--flush-interval-ms', '100']
SHIM_ESM = REPO / 'client-shim' / 'node' / 'index.js'
SHIM_CJS = REPO / 'client-shim' / 'node' / 'index.cjs'
IMAGE_SERVICE = REPO / 'examples' / 'image-service' / 'server.mjs'
TEXT_SERVICE = REPO / 'examples' / 'text-service' / 'server.mjs'
TS_RE = re.compile(r'\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3}')
HASH_RE = re.compile(r'[0-9a-f]{32}')

with open(REPO_CATALOG, encoding='utf-8') as _f:
    CATALOG = json.load(_f)['models']


def node_bin():
    node = shutil.which('node')
    if not node:
        if os.environ.get('BIRDFEEDER_REQUIRE_BINARIES') == '1':
            raise AssertionError('node is not on PATH')
        raise unittest.SkipTest('node is not on PATH')
    return node


def fmt_ms(ms):
    """Epoch milliseconds -> 'YYYY-MM-DD HH:MM:SS.mmm' (UTC)."""
    dt = datetime.datetime(1970, 1, 1) + datetime.timedelta(milliseconds=ms)
    return dt.strftime('%Y-%m-%d %H:%M:%S.') + f'{dt.microsecond // 1000:03d}'


def parse_ts(text):
    dt = datetime.datetime.strptime(text, '%Y-%m-%d %H:%M:%S.%f')
    return int((dt - datetime.datetime(1970, 1, 1)).total_seconds() * 1000 + 0.5)


def image_cost(model, status='success', cached=False, prompt_tokens=0, completion_tokens=0):
    """cost_usd the daemon computes (daemon/enrich.c row_cost) from the catalog."""
    m = CATALOG.get(model)
    if m is None or cached:
        return 0.0
    if m.get('per_image'):
        return 0.0 if status == 'error' else m['per_image']
    return (prompt_tokens * m['prompt_per_mtok'] + completion_tokens * m['completion_per_mtok']) / 1e6


def llm_cost(model, prompt=0, completion=0, cached_tokens=0, cached=False):
    m = CATALOG.get(model)
    if m is None or cached:
        return 0.0
    p = m['prompt_per_mtok']
    c = m.get('cached_prompt_per_mtok', p)
    cached_tokens = min(cached_tokens, prompt)
    return ((prompt - cached_tokens) * p + cached_tokens * c + completion * m['completion_per_mtok']) / 1e6


def provider(model):
    return CATALOG[model]['provider'] if model in CATALOG else 'unknown'


class NodeTestCase(BirdfeederTestCase):
    """Every test gets self.tb (a FakeTinybird) and self.d (a daemon delivering
    to it); harness.BirdfeederTestCase stops them and prints their logs when
    the test fails."""

    def setUp(self):
        self.node = node_bin()
        super().setUp()
        self._procs = []
        self.tb = self.fake()
        self.d = self.daemon(FAST, tinybird=self.tb)

    def run_node(self, args, stdin='', env=None, timeout=30):
        p = subprocess.run([self.node, *args], input=stdin, capture_output=True, text=True,
                           timeout=timeout, cwd=REPO, env=clean_env(env))
        self.assertEqual(p.returncode, 0, f'node {args[:2]} failed:\n{p.stderr}')
        return p

    def wait_rows_exactly(self, counts, timeout=15):
        """Wait until the daemon has delivered every event it accepted and the
        fake holds counts[ds] rows for each ds; then assert nothing more came
        (the daemon received and accepted exactly that many)."""
        total = sum(counts.values())
        wait_until(lambda: all(self.tb.row_count(ds) >= n for ds, n in counts.items()),
                   timeout=timeout, msg=f'rows {counts} (have '
                   f'{ {ds: self.tb.row_count(ds) for ds in counts} })')

        def settled():
            s = self.d.stats()
            return s if s['rows_delivered_total'] >= s['accepted_total'] >= total else None
        s = wait_until(settled, timeout=timeout, msg='daemon settled')
        self.assertEqual(s['received'], total, s)
        self.assertEqual(s['accepted_total'], total, s)
        self.assertEqual(s['rejected_total'], 0, s['rejected'])
        self.assertEqual(s['kernel_drops'], 0)
        rows = {}
        for ds, n in counts.items():
            rs = self.tb.rows(ds)
            self.assertEqual(len(rs), n, f'{ds}: {len(rs)} rows, want {n}')
            by_id = {r['id']: r for r in rs}
            self.assertEqual(len(by_id), n, f'duplicate ids in {ds}')
            for r in rs:
                validate_row_columns(r, ds)
            rows[ds] = by_id
            self.assertEqual(self.tb.quarantine(ds), [])
        return rows

    def assert_times(self, row, t_before, t_after):
        self.assertRegex(row['start_time'], TS_RE)
        self.assertRegex(row['end_time'], TS_RE)
        start, end = parse_ts(row['start_time']), parse_ts(row['end_time'])
        self.assertGreaterEqual(start, t_before - 5, row)
        self.assertLessEqual(end, t_after + 5, row)
        self.assertEqual(end - start, row['duration_ms'], row)


# ---------------------------------------------------------------------------
# 1. the shim alone: N events from a node script
# ---------------------------------------------------------------------------

SEND_SCRIPT = r'''
import { readFileSync } from 'node:fs';
import { createClient } from %(shim)s;
const events = JSON.parse(readFileSync(0, 'utf8'));
const client = createClient();   // from $BIRDFEEDER_ADDR
let i = 0;
for (const [ds, ev] of events) {
  if (ds === 'image_events') client.image(ev); else client.llm(ev);
  if (++i %% 100 === 0) await new Promise((r) => setImmediate(r));
}
setTimeout(() => process.stdout.write(JSON.stringify(client.stats())), 50);
'''

SEND_SCRIPT_CJS = r'''
const { createClient } = require(%(shim)s);
const client = createClient({ host: '127.0.0.1', port: Number(process.env.PORT) });
for (let i = 0; i < 10; i++) {
  client.send('llm_events', { id: `cjs-${i}`, model: 'deepseek-r1', promptTokens: 1000 + i,
                              completionTokens: 10, error: i === 9 ? new Error('last one failed') : null });
}
setTimeout(() => process.stdout.write(JSON.stringify(client.stats())), 50);
'''


class TestShimToDaemon(NodeTestCase):

    def test_n_events_from_node_arrive_as_n_rows(self):
        base = (int(time.time()) - 3600) * 1000   # inside --max-event-age
        cat = '\U0001F408'
        events = []
        for i in range(150):
            ev = {'id': f'img-{i}', 'model': ['flux', 'turbo', 'kontext', 'gptimage'][i % 4],
                  'startTime': base + i * 1000, 'endTime': base + i * 1000 + 100 + i,
                  'prompt': f'a bird number {i} ' + ('x' * 200 if i % 10 == 0 else ''),
                  'width': 512 + i, 'height': 768, 'steps': i % 50, 'cached': i % 3 == 0,
                  'referrer': f'https://Site{i % 4}.example.org/path?q={i}', 'ip': f'192.0.2.{i % 250}'}
            if i % 5:
                ev.update({'user': f'u_{i % 7}', 'username': f'name{i % 7}', 'tier': 'seed'})
            if i % 11 == 0:
                ev['error'] = f'failure {i}'
            if ev['model'] == 'gptimage':
                ev['usage'] = {'prompt_tokens': 40 + i, 'completion_tokens': 4096}
            if i == 149:
                ev['prompt'] = 'é' * 119 + cat + 'tail'
            events.append(['image_events', ev])
        for i in range(100):
            ev = {'id': f'llm-{i}', 'model': ['gpt-5-nano', 'gpt-4.1-nano', 'deepseek-r1', 'mystery'][i % 4],
                  'start_time': base + i, 'duration': 250.4, 'user_id': f'u_{i % 5}', 'tier': 'flower',
                  'usage': {'prompt_tokens': 100 + i, 'completion_tokens': 50 + i,
                            'prompt_tokens_details': {'cached_tokens': i % 64}},
                  'stream': i % 2 == 1, 'cached': i % 9 == 0, 'status': 'error' if i % 13 == 0 else 'success'}
            events.append(['llm_events', ev])
        script = SEND_SCRIPT % {'shim': json.dumps(str(SHIM_ESM))}
        p = self.run_node(['--input-type=module', '-e', script], stdin=json.dumps(events),
                          env={'BIRDFEEDER_ADDR': self.d.addr})
        self.assertEqual(json.loads(p.stdout), {'sent': 250, 'dropped': 0, 'oversize': 0, 'failed': 0})

        rows = self.wait_rows_exactly({IMAGE: 150, LLM: 100})
        for ds, ev in events:
            row = rows[ds][ev['id']]
            with self.subTest(id=ev['id']):
                self.assertEqual(row['model'], ev['model'])
                self.assertEqual(row['provider'], provider(ev['model']))
                self.assertEqual(row['cached'], ev['cached'])
                if ds == IMAGE:
                    self.check_image_row(row, ev)
                else:
                    self.check_llm_row(row, ev)

    def check_image_row(self, row, ev):
        self.assertEqual(row['start_time'], fmt_ms(ev['startTime']))
        self.assertEqual(row['end_time'], fmt_ms(ev['endTime']))
        self.assertEqual(row['duration_ms'], ev['endTime'] - ev['startTime'])
        self.assertEqual(row['user_id'], ev.get('user', 'anonymous'))
        self.assertEqual(row['username'], ev.get('username', ''))
        self.assertEqual(row['tier'], ev.get('tier', 'anonymous'))
        status = 'error' if 'error' in ev else 'success'
        self.assertEqual(row['status'], status)
        self.assertEqual(row['error_message'], ev.get('error', ''))
        # Cut to 120 characters by the shim (never inside the cat).
        self.assertEqual(row['prompt'], ev['prompt'][:120])
        self.assertEqual((row['width'], row['height'], row['steps']),
                         (ev['width'], ev['height'], ev['steps']))
        site = int(ev['id'].split('-')[1]) % 4
        self.assertEqual(row['referrer'], f'https://site{site}.example.org')
        self.assertEqual(row['ip'], '192.0.2.0')
        self.assertRegex(row['ip_hash'], HASH_RE)
        usage = ev.get('usage', {})
        self.assertAlmostEqual(row['cost_usd'], image_cost(
            ev['model'], status, ev['cached'], usage.get('prompt_tokens', 0),
            usage.get('completion_tokens', 0)), places=9)

    def check_llm_row(self, row, ev):
        u = ev['usage']
        self.assertEqual(row['start_time'], fmt_ms(ev['start_time']))
        self.assertEqual(row['duration_ms'], 250)   # 250.4 rounded
        self.assertEqual(row['end_time'], fmt_ms(ev['start_time'] + 250))
        self.assertEqual(row['user_id'], ev['user_id'])
        self.assertEqual(row['tier'], 'flower')
        self.assertEqual(row['status'], ev['status'])
        self.assertEqual((row['prompt_tokens'], row['completion_tokens'], row['cached_tokens'],
                          row['total_tokens']),
                         (u['prompt_tokens'], u['completion_tokens'],
                          u['prompt_tokens_details']['cached_tokens'],
                          u['prompt_tokens'] + u['completion_tokens']))
        self.assertEqual(row['stream'], ev['stream'])
        self.assertEqual((row['ip'], row['ip_hash'], row['referrer']), ('', '', ''))
        self.assertAlmostEqual(row['cost_usd'], llm_cost(
            ev['model'], u['prompt_tokens'], u['completion_tokens'],
            u['prompt_tokens_details']['cached_tokens'], ev['cached']), places=9)

    def test_commonjs_require(self):
        script = SEND_SCRIPT_CJS % {'shim': json.dumps(str(SHIM_CJS))}
        p = self.run_node(['-e', script], env={'PORT': self.d.port})
        self.assertEqual(json.loads(p.stdout), {'sent': 10, 'dropped': 0, 'oversize': 0, 'failed': 0})
        rows = self.wait_rows_exactly({LLM: 10})[LLM]
        for i in range(10):
            row = rows[f'cjs-{i}']
            self.assertEqual(row['prompt_tokens'], 1000 + i)
            self.assertEqual(row['status'], 'error' if i == 9 else 'success')
            self.assertEqual(row['error_message'], 'last one failed' if i == 9 else '')
            self.assertAlmostEqual(row['cost_usd'], llm_cost('deepseek-r1', 1000 + i, 10), places=9)


# ---------------------------------------------------------------------------
# 2. the example services: N HTTP requests -> N rows
# ---------------------------------------------------------------------------

class Service:
    """A node example server on an ephemeral port."""

    def __init__(self, node, script, env):
        self.proc = subprocess.Popen([node, str(script)], cwd=REPO, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                     env=clean_env({'PORT': '0', **env}))
        ready, _, _ = select.select([self.proc.stdout], [], [], 10)
        line = self.proc.stdout.readline().decode() if ready else ''
        m = re.fullmatch(r'listening (http://127\.0\.0\.1:\d+)\n', line)
        if not m:
            self.stop()
            raise AssertionError(f'{script} did not start: {line!r} {self.stderr()}')
        self.url = m.group(1)

    def request(self, path, method='GET', body=None, headers=None):
        """(status, headers, body bytes) of one request."""
        data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers=dict(headers or {}))
        if data is not None:
            req.add_header('Content-Type', 'application/json')
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read()

    def stats(self):
        return json.loads(self.request('/_stats')[2])

    def stderr(self):
        try:
            return self.proc.stderr.read().decode(errors='replace') if self.proc.poll() is not None else ''
        except ValueError:
            return ''

    def stop(self):
        stop_process(self.proc)
        for f in (self.proc.stdout, self.proc.stderr):
            if f and not f.closed:
                f.close()
        return self.proc.returncode


USERS = {  # the examples' fake auth
    'tok-ada': ('u_ada', 'ada', 'flower'),
    'tok-bob': ('u_bob', 'bob', 'nectar'),
    'tok-sam': ('u_sam', '', 'seed'),
    None: ('anonymous', '', 'anonymous'),
}
IMAGE_STEPS = {'flux': 4, 'turbo': 2, 'kontext': 28, 'seedream': 20, 'nanobanana': 1, 'gptimage': 1}


class TestExampleServices(NodeTestCase):

    def service(self, script, **env):
        s = Service(self.node, script, {'BIRDFEEDER_ADDR': self.d.addr, **env})
        self.addCleanup(s.stop)
        return s

    def test_image_and_text_services(self):
        img = self.service(IMAGE_SERVICE)
        txt = self.service(TEXT_SERVICE, TRUST_PROXY='1')
        expect = {IMAGE: {}, LLM: {}}   # id -> expected row values
        counter = iter(range(10 ** 6))
        t_before = int(time.time() * 1000)

        def headers(token, rid, **extra):
            h = {'X-Request-Id': rid, **extra}
            if token:
                h['Authorization'] = f'Bearer {token}'
            return h

        # -- image service ---------------------------------------------------
        def image_req(prompt, token=None, referer=None, **q):
            rid = f'img-{next(counter)}'
            qs = urllib.parse.urlencode(q)
            extra = {'Referer': referer} if referer else {}
            # Not trusted by this service: the socket's address is used.
            extra['X-Forwarded-For'] = '198.51.100.1'
            status, h, body = img.request(f'/prompt/{urllib.parse.quote(prompt)}?{qs}',
                                          headers=headers(token, rid, **extra))
            user_id, username, tier = USERS[token]
            model = q.get('model', 'flux')
            # Parameters that parse are known on the error path too.
            validated = all(q[k].isdigit() for k in ('width', 'height', 'steps') if k in q)
            width = int(q.get('width', 1024)) if validated else 0
            height = int(q.get('height', 1024)) if validated else 0
            row = {'model': model, 'provider': provider(model), 'user_id': user_id,
                   'username': username, 'tier': tier, 'ip': '127.0.0.0',
                   'referrer': referer.split('/')[0] + '//' + referer.split('/')[2] if referer else ''}
            if status == 200:
                cached = h['X-Cache'] == 'HIT'
                self.assertTrue(body.startswith(b'P6\n16 16\n255\n'))
                pt, ct = int(h.get('X-Prompt-Tokens', 0)), int(h.get('X-Completion-Tokens', 0))
                row.update(status='success', error_message='', cached=cached, prompt=prompt,
                           width=width, height=height, steps=int(q.get('steps', IMAGE_STEPS[model])),
                           cost_usd=image_cost(model, 'success', cached, pt, ct))
            else:
                err = json.loads(body)['error']
                row.update(status='error', error_message=err, cached=False,
                           prompt=prompt if validated else '', width=width, height=height,
                           steps=int(q.get('steps', IMAGE_STEPS.get(model, 4))) if validated else 0,
                           cost_usd=0.0)
            expect[IMAGE][rid] = (row, int(q.get('delay', 5)))
            return status, h

        for i, model in enumerate(IMAGE_STEPS):
            token = [None, 'tok-ada', 'tok-bob', 'tok-sam'][i % 4]
            self.assertEqual(image_req(f'a lighthouse {i}', token, 'https://gallery.example.org/p?x=1',
                                       model=model, width='512', height='768', delay='20')[0], 200)
        for i in range(10):
            self.assertEqual(image_req(f'bird {i}', 'tok-ada', model='flux', seed=str(i))[0], 200)
        # Cache hits: the same requests again.
        for i in range(4):
            status, h = image_req(f'bird {i}', 'tok-ada', model='flux', seed=str(i))
            self.assertEqual((status, h['X-Cache']), (200, 'HIT'))
        status, h = image_req('a lighthouse 5', 'tok-bob', model='gptimage', width='512',
                              height='768', delay='20')
        self.assertEqual((status, h['X-Cache']), (200, 'HIT'))
        # Errors: the backend fails; bad parameters; an unknown model.
        for i in range(3):
            self.assertEqual(image_req(f'doomed {i}', 'tok-sam', model='kontext', fail='1')[0], 500)
        self.assertEqual(image_req('bad width', None, model='turbo', width='abc')[0], 400)
        self.assertEqual(image_req('who', 'tok-ada', model='nope')[0], 400)
        # Concurrent requests.
        threads = [threading.Thread(target=image_req, args=(f'parallel {i}',),
                                    kwargs={'model': 'seedream', 'delay': '10'}) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

        # -- text service ------------------------------------------------------
        def chat(messages, token=None, model='gpt-5-nano', stream=False, fail=False,
                 raw=None, xff=None):
            rid = f'txt-{next(counter)}'
            body = raw if raw is not None else {'model': model, 'messages': messages,
                                                'stream': stream, 'fail': fail}
            extra = {'X-Forwarded-For': xff} if xff else {}
            status, h, out = txt.request('/v1/chat/completions?delay=10', 'POST', body,
                                         headers(token, rid, **extra))
            user_id, username, tier = USERS[token]
            row = {'model': model, 'provider': provider(model), 'user_id': user_id,
                   'username': username, 'tier': tier, 'stream': stream,
                   'ip': '203.0.113.0' if xff else '127.0.0.0', 'referrer': ''}
            if status == 200:
                if stream:
                    chunks = [json.loads(line[6:]) for line in out.decode().split('\n\n')
                              if line.startswith('data: {')]
                    usage = chunks[-1]['usage']
                else:
                    usage = json.loads(out)['usage']
                pt, ct = usage['prompt_tokens'], usage['completion_tokens']
                cached_tokens = usage['prompt_tokens_details']['cached_tokens']
                self.assertEqual(int(h['X-Prompt-Tokens']), pt)
                cached = h['X-Cache'] == 'HIT'
                row.update(status='success', error_message='', cached=cached, prompt_tokens=pt,
                           completion_tokens=ct, cached_tokens=cached_tokens,
                           total_tokens=pt + ct,
                           cost_usd=llm_cost(model, pt, ct, cached_tokens, cached))
            else:
                err = json.loads(out)['error']['message']
                row.update(status='error', error_message=err, cached=False, prompt_tokens=0,
                           completion_tokens=0, cached_tokens=0, total_tokens=0, cost_usd=0.0)
            expect[LLM][rid] = (row, 10)
            return status, h

        convo = [{'role': 'system', 'content': 'You are terse.' * 20},
                 {'role': 'user', 'content': 'hello'},
                 {'role': 'assistant', 'content': 'hi'},
                 {'role': 'user', 'content': 'what is a birdfeeder?'}]
        for i, model in enumerate(['gpt-5-nano', 'gpt-4.1-nano', 'deepseek-r1'] * 3):
            token = [None, 'tok-ada', 'tok-bob', 'tok-sam'][i % 4]
            msgs = [{'role': 'user', 'content': f'question {i} ' * (i + 1)}]
            self.assertEqual(chat(msgs, token, model)[0], 200)
        self.assertEqual(chat(convo, 'tok-bob', 'gpt-4.1-nano')[0], 200)       # cached_tokens > 0
        self.assertEqual(chat(convo, 'tok-bob', 'gpt-4.1-nano')[1]['X-Cache'], 'HIT')
        self.assertEqual(chat([{'role': 'user', 'content': 'question 0 '}], None)[1]['X-Cache'], 'HIT')
        self.assertEqual(chat([{'role': 'user', 'content': 'stream it'}], 'tok-ada', stream=True)[0], 200)
        self.assertEqual(chat([{'role': 'user', 'content': 'via proxy'}], xff='203.0.113.77, 10.0.0.1')[0], 200)
        for i in range(3):
            self.assertEqual(chat([{'role': 'user', 'content': f'x{i}'}], 'tok-sam', 'deepseek-r1',
                                  fail=True)[0], 502)
        self.assertEqual(chat(None, 'tok-ada', raw=b'{not json')[0], 400)
        self.assertEqual(chat([{'role': 'user', 'content': 'hi'}], model='gpt-99')[0], 400)

        # GET /<prompt>: plain text, same instrumentation.
        for q, want in (('?model=gpt-4.1-nano', 200), ('?fail=1', 502)):
            rid = f'txt-{next(counter)}'
            status, h, out = txt.request('/tell%20me%20a%20joke' + q, headers=headers('tok-ada', rid))
            self.assertEqual(status, want)
            model = 'gpt-4.1-nano' if 'model' in q else 'gpt-5-nano'
            row = {'model': model, 'user_id': 'u_ada', 'stream': False, 'cached': False}
            if status == 200:
                self.assertTrue(out.startswith(b'You said: tell me a joke'))
                pt, ct = int(h['X-Prompt-Tokens']), int(h['X-Completion-Tokens'])
                row.update(status='success', prompt_tokens=pt, completion_tokens=ct,
                           cost_usd=llm_cost(model, pt, ct, int(h['X-Cached-Tokens'])))
            else:
                row.update(status='error', error_message=json.loads(out)['error']['message'],
                           cost_usd=0.0)
            expect[LLM][rid] = (row, 5)

        t_after = int(time.time() * 1000)
        n_img, n_txt = len(expect[IMAGE]), len(expect[LLM])
        self.assertEqual(img.stats(), {'sent': n_img, 'dropped': 0, 'oversize': 0, 'failed': 0})
        self.assertEqual(txt.stats(), {'sent': n_txt, 'dropped': 0, 'oversize': 0, 'failed': 0})

        rows = self.wait_rows_exactly({IMAGE: n_img, LLM: n_txt})
        for ds in (IMAGE, LLM):
            self.assertEqual(set(rows[ds]), set(expect[ds]), ds)
            for rid, (want, delay) in expect[ds].items():
                row = rows[ds][rid]
                with self.subTest(id=rid):
                    got = {k: row[k] for k in want if k != 'cost_usd'}
                    self.assertEqual(got, {k: v for k, v in want.items() if k != 'cost_usd'})
                    self.assertAlmostEqual(row['cost_usd'], want['cost_usd'], places=9)
                    self.assert_times(row, t_before, t_after)
                    if want['status'] == 'success' and not want['cached']:
                        self.assertGreaterEqual(row['duration_ms'], delay - 1, row)
                    self.assertRegex(row['ip_hash'], HASH_RE)

        # What the operators will look at: per-kind counts.
        img_rows = rows[IMAGE].values()
        self.assertEqual(sum(r['cached'] for r in img_rows), 5)
        self.assertEqual(sum(r['status'] == 'error' for r in img_rows), 5)
        self.assertTrue(all(r['cost_usd'] == 0 for r in img_rows if r['cached']))
        txt_rows = rows[LLM].values()
        self.assertEqual(sum(r['cached'] for r in txt_rows), 2)
        self.assertEqual(sum(r['status'] == 'error' for r in txt_rows), 6)
        self.assertTrue(any(r['cached_tokens'] > 0 for r in txt_rows))


if __name__ == '__main__':
    unittest.main()

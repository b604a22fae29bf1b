"""Integration tests of the `birdfeeder` CLI and the protocol files.

Drives the real binary ($BIRDFEEDER_BUILD_DIR/birdfeeder, default
build/birdfeeder) over pipes and loopback UDP only. Like tests/harness.py, a
missing binary skips the CLI tests unless BIRDFEEDER_REQUIRE_BINARIES=1.
Standard library only; run from anywhere:

    python3 -m unittest discover -s tests/integration -p 'test_cli.py'
"""
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get('BIRDFEEDER_BUILD_DIR', REPO / 'build'))
CLI = BUILD / 'birdfeeder'
VECTORS = REPO / 'proto' / 'vectors' / 'vectors.json'
PROTOCOL_MD = REPO / 'proto' / 'PROTOCOL.md'

sys.path.insert(0, str(REPO / 'proto' / 'vectors'))
import gen_vectors  # noqa: E402  (the independent Python encoder)

SAMPLES = [
    {"dataset": "image_events", "model": "flux"},
    {"dataset": "image_events", "id": "req-1", "user_id": "u1", "username": "ada",
     "tier": "seed", "model": "kontext", "start_time": 1764441205123,
     "end_time": 1764441207000, "duration_ms": 1877, "status": "success",
     "prompt": "a red fox in the snow, 35mm", "width": 1024, "height": 1024,
     "steps": 4, "cached": False, "referrer": "https://example.org/x",
     "ip": "192.0.2.1"},
    {"dataset": "llm_events", "model": "gpt-5-nano", "status": "error",
     "error_message": "upstream 503", "prompt_tokens": 12, "completion_tokens": 0,
     "cached_tokens": 0, "stream": True, "cached": True},
    # Unknown keys and nulls are dropped; keys in any order.
    {"stream": None, "provider": "openai", "model": "m", "dataset": "llm_events",
     "cost_usd": 0.25},
    {"dataset": "image_events", "model": "flux",
     "prompt": "un chat qui lit « Le Monde » ☕ 🐈"},
]


def require_cli():
    if not CLI.exists():
        if os.environ.get('BIRDFEEDER_REQUIRE_BINARIES') == '1':
            raise AssertionError(f'{CLI} is missing: run make first')
        raise unittest.SkipTest(f'{CLI} not built')


def run_cli(args, stdin='', timeout=30):
    """Run the CLI; returns the CompletedProcess with text output."""
    env = {k: v for k, v in os.environ.items() if k != 'BIRDFEEDER_ADDR'}
    return subprocess.run([str(CLI), *args], input=stdin, capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=REPO)


def ndjson(events):
    return ''.join(json.dumps(e, ensure_ascii=False) + '\n' for e in events)


def load_vectors():
    with open(VECTORS, encoding='utf-8') as f:
        return json.load(f)


def canonical(event):
    """What decode prints for an input event: known fields only, tag order."""
    known = {name for name, _ in gen_vectors.FIELDS.values()}
    return gen_vectors.canonical_event(
        {k: v for k, v in event.items() if k == 'dataset' or k in known})


def ordered(obj):
    """A JSON object as a list of pairs, so key order is compared too."""
    return list(obj.items())


class UdpReceiver:
    """A UDP socket on 127.0.0.1 with an ephemeral port."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(('127.0.0.1', 0))
        self.sock.settimeout(5)
        self.addr = '127.0.0.1:%d' % self.sock.getsockname()[1]

    def recv_all(self, count):
        got = []
        while len(got) < count:
            got.append(self.sock.recv(65536))
        return got

    def nothing_more(self):
        self.sock.settimeout(0.2)
        try:
            extra = self.sock.recv(65536)
        except socket.timeout:
            return True
        raise AssertionError('unexpected datagram %s' % extra.hex())

    def close(self):
        self.sock.close()


class TestProtocolFiles(unittest.TestCase):
    """The generated files are up to date and agree with each other."""

    def test_gen_doc_check(self):
        # PROTOCOL.md from proto/*.def, docs/operations.md from daemon/stats.def.
        for script in (REPO / 'proto' / 'gen_doc.py', REPO / 'docs' / 'gen_stats_doc.py'):
            with self.subTest(script=script.name):
                p = subprocess.run([sys.executable, str(script), '--check'],
                                   capture_output=True, text=True, timeout=60)
                self.assertEqual(p.returncode, 0, p.stderr)

    def test_vectors_up_to_date(self):
        p = subprocess.run([sys.executable, str(REPO / 'proto' / 'vectors' / 'gen_vectors.py'),
                            '--check'], capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)

    def test_vector_encoder_matches_fields_def(self):
        # gen_vectors.py types its field table by hand on purpose; it must
        # say what fields.def says.
        p = subprocess.run([sys.executable, str(REPO / 'proto' / 'gen_doc.py'), '--json'],
                           capture_output=True, text=True, timeout=60, check=True)
        spec = json.loads(p.stdout)
        types = {'string': 'S', 'uint64': 'U', 'bool': 'B'}
        from_def = {f['tag']: (f['name'], types[f['type']]) for f in spec['fields']}
        self.assertEqual(from_def, gen_vectors.FIELDS)
        self.assertEqual({d['name']: d['id'] for d in spec['datasets']},
                         gen_vectors.DATASETS)
        self.assertEqual(spec['magic'], gen_vectors.MAGIC.hex())
        self.assertEqual(spec['protocol_version'], gen_vectors.VERSION)

    def test_worked_example_in_protocol_md(self):
        text = PROTOCOL_MD.read_text(encoding='utf-8')
        v = next(v for v in load_vectors() if v['name'] == 'worked example (PROTOCOL.md)')
        spaced = ' '.join(v['hex'][i:i + 2] for i in range(0, len(v['hex']), 2))
        self.assertIn(spaced, text)
        self.assertIn(json.dumps(v['event'], separators=(',', ':')), text)


class TestEncodeDecode(unittest.TestCase):
    def setUp(self):
        require_cli()

    def test_help_and_version(self):
        p = run_cli(['--version'])
        self.assertEqual(p.returncode, 0)
        self.assertIn('(protocol v1)', p.stdout)
        for args in (['help'], ['--help']):
            p = run_cli(args)
            self.assertEqual(p.returncode, 0)
            for word in ('send', 'encode', 'decode', '--to', '--rate', '--repeat'):
                self.assertIn(word, p.stdout)
        self.assertEqual(run_cli([]).returncode, 2)
        p = run_cli(['frobnicate'])
        self.assertEqual(p.returncode, 2)
        self.assertIn("unknown command 'frobnicate'", p.stderr)

    def test_encode_equals_vectors(self):
        vs = [v for v in load_vectors()
              if 'hex' in v and 'event' in v and not v.get('decode_only')
              # encode cuts the prompt as send does; longer ones differ
              and len(v['event'].get('prompt', '')) <= 120]
        self.assertGreater(len(vs), 10)
        p = run_cli(['encode'], ndjson(v['event'] for v in vs))
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stderr, '')
        got = p.stdout.splitlines()
        self.assertEqual(len(got), len(vs))
        for v, line in zip(vs, got):
            self.assertEqual(line, v['hex'], v['name'])

    def test_decode_vectors(self):
        vs = [v for v in load_vectors() if v.get('hex') or v.get('json', '').strip()]
        lines = [v['hex'] if 'hex' in v else v['json'].encode('utf-8').hex() for v in vs]
        p = run_cli(['decode'], ''.join(line + '\n' for line in lines))
        self.assertEqual(p.returncode, 1)  # some vectors are rejects
        got = p.stdout.splitlines()
        self.assertEqual(len(got), len(vs))
        for v, line in zip(vs, got):
            if 'reject' in v:
                self.assertEqual(line, 'error: ' + v['reject'], v['name'])
            else:
                self.assertEqual(ordered(json.loads(line)), ordered(v['event']), v['name'])

    def test_encode_decode_roundtrip(self):
        p = run_cli(['encode'], ndjson(SAMPLES))
        self.assertEqual(p.returncode, 0, p.stderr)
        hexes = p.stdout.splitlines()
        self.assertEqual(len(hexes), len(SAMPLES))
        # The Python encoder agrees byte for byte.
        for e, h in zip(SAMPLES, hexes):
            self.assertEqual(h, gen_vectors.encode_event(canonical(e)).hex())
        p = run_cli(['decode'], p.stdout)
        self.assertEqual(p.returncode, 0, p.stdout)
        for e, line in zip(SAMPLES, p.stdout.splitlines()):
            self.assertEqual(ordered(json.loads(line)), ordered(canonical(e)))

    def test_encode_cuts_prompt_to_120_characters(self):
        prompt = 'é€🐈x' * 50
        p = run_cli(['encode'], ndjson([{"dataset": "image_events", "model": "flux",
                                         "prompt": prompt}]))
        self.assertEqual(p.returncode, 0, p.stderr)
        p = run_cli(['decode'], p.stdout)
        self.assertEqual(json.loads(p.stdout)['prompt'], prompt[:120])

    def test_encode_reports_bad_lines(self):
        lines = [
            '{"dataset":"image_events","model":"flux"}',
            '{"dataset":"image_events","model":"flux","width":70000}',
            'not json',
            '',
            '{"dataset":"llm_events"}',
            '{"dataset":"llm_events","model":"m","end_time":1,"start_time":2}',
            '{"dataset":"image_events","model":"flux","error_message":"%s"}' % ('e' * 9000),
            '{"dataset":"nope","model":"m"}',
            '{"dataset":"llm_events","model":"m","stream":"yes"}',
        ]
        p = run_cli(['encode'], ''.join(x + '\n' for x in lines))
        self.assertEqual(p.returncode, 1)
        self.assertEqual(p.stdout.splitlines(), ['bffd01012a04666c7578'])
        self.assertEqual(p.stderr.splitlines(), [
            'birdfeeder: line 2: out_of_range: width',
            'birdfeeder: line 3: bad_json: (root)',
            'birdfeeder: line 5: missing_field: model',
            'birdfeeder: line 6: bad_value: end_time',
            'birdfeeder: line 7: oversize: (root)',
            'birdfeeder: line 8: unknown_dataset: dataset',
            'birdfeeder: line 9: bad_type: stream',
        ])

    def test_decode_input_forms(self):
        example = 'bf fd 01 01 0a 02 72 31 2a 04 66 6c 75 78 30 83 d3 90 87 ad 33 60 80 08 78 01'
        lines = [example, example.replace(' ', '').upper() + '\r', '  ', 'zz', 'bffd0',
                 json.dumps({"dataset": "llm_events", "model": "m"}).encode().hex(),
                 'bffd0101' + '5a8041' + '00' * 8189]
        p = run_cli(['decode'], ''.join(x + '\n' for x in lines))
        self.assertEqual(p.returncode, 1)
        out = p.stdout.splitlines()
        want = ('{"dataset":"image_events","id":"r1","model":"flux",'
                '"start_time":1764441205123,"width":1024,"cached":true}')
        self.assertEqual(out, [want, want, 'error: not hex', 'error: not hex',
                               '{"dataset":"llm_events","model":"m"}', 'error: oversize'])


class TestSend(unittest.TestCase):
    def setUp(self):
        require_cli()
        self.rx = UdpReceiver()

    def tearDown(self):
        self.rx.close()

    def test_send_datagrams_decode_back(self):
        p = run_cli(['send', '--to', self.rx.addr], ndjson(SAMPLES))
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stderr.splitlines()[-1],
                         'sent %d, invalid 0, dropped 0 to %s' % (len(SAMPLES), self.rx.addr))
        got = self.rx.recv_all(len(SAMPLES))
        self.rx.nothing_more()
        for e, d in zip(SAMPLES, got):
            self.assertEqual(d, gen_vectors.encode_event(canonical(e)))
        p = run_cli(['decode'], ''.join(d.hex() + '\n' for d in got))
        self.assertEqual(p.returncode, 0)
        for e, line in zip(SAMPLES, p.stdout.splitlines()):
            self.assertEqual(ordered(json.loads(line)), ordered(canonical(e)))

    def test_send_counts_invalid_lines(self):
        lines = [json.dumps(SAMPLES[0]), '{"dataset":"image_events","width":5}',
                 json.dumps(SAMPLES[2]), '{"dataset":"image_events","model":"f","width":-1}',
                 '[]']
        p = run_cli(['send', '--to', self.rx.addr], ''.join(x + '\n' for x in lines))
        self.assertEqual(p.returncode, 1)
        err = p.stderr.splitlines()
        self.assertEqual(err, ['birdfeeder: line 2: missing_field: model',
                               'birdfeeder: line 4: out_of_range: width',
                               'birdfeeder: line 5: bad_json: (root)',
                               'sent 2, invalid 3, dropped 0 to ' + self.rx.addr])
        self.assertEqual(len(self.rx.recv_all(2)), 2)
        self.rx.nothing_more()

    def test_send_repeat_and_rate(self):
        t0 = time.monotonic()
        p = run_cli(['send', '--to', self.rx.addr, '--repeat', '5', '--rate', '100'],
                    ndjson(SAMPLES[:2]))
        elapsed = time.monotonic() - t0
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stderr.strip(), 'sent 10, invalid 0, dropped 0 to ' + self.rx.addr)
        got = self.rx.recv_all(10)
        self.assertEqual(got[:5], [gen_vectors.encode_event(canonical(SAMPLES[0]))] * 5)
        # 10 datagrams at 100/s: the last leaves 90 ms after the first.
        self.assertGreaterEqual(elapsed, 0.085)

    def test_send_env_address(self):
        env = dict(os.environ, BIRDFEEDER_ADDR=self.rx.addr)
        p = subprocess.run([str(CLI), 'send'], input=ndjson(SAMPLES[:1]),
                           capture_output=True, text=True, timeout=30, env=env)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(len(self.rx.recv_all(1)), 1)

    def test_send_without_daemon_fails_naming_the_address(self):
        addr = self.rx.addr
        self.rx.close()  # nobody listens there now
        self.rx = UdpReceiver()
        p = run_cli(['send', '--to', addr, '--repeat', '50'], ndjson(SAMPLES[:2]),
                    timeout=10)
        self.assertEqual(p.returncode, 1, p.stderr)
        last = [x for x in p.stderr.splitlines() if x.startswith('sent ')][0]
        m = re.fullmatch(r'sent (\d+), invalid (\d+), dropped (\d+) to (\S+)', last)
        self.assertTrue(m, last)
        sent, invalid, dropped = map(int, m.groups()[:3])
        self.assertEqual(sent + dropped, 100)
        self.assertEqual(invalid, 0)
        self.assertGreater(dropped, 0)  # ECONNREFUSED from port unreachable
        self.assertEqual(m.group(4), addr)
        self.assertIn(f'birdfeeder: {addr}: ', p.stderr)
        self.assertIn('is birdfeederd listening there?', p.stderr)

    def test_send_one_event_to_nobody_is_an_error(self):
        """One datagram, nothing listening: not "sent 1" and exit 0, as it
        was; the kernel's refusal is read before exiting."""
        addr = self.rx.addr
        self.rx.close()
        self.rx = UdpReceiver()
        p = run_cli(['send', '--to', addr], ndjson(SAMPLES[:1]))
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertEqual(p.stderr.splitlines(), [
            f'sent 0, invalid 0, dropped 1 to {addr}',
            f'birdfeeder: {addr}: connection refused: nothing listens on that port: is '
            'birdfeederd listening there? (--to, $BIRDFEEDER_ADDR)'])
        # The default address is named too when no --to is given.
        env = {k: v for k, v in os.environ.items() if k != 'BIRDFEEDER_ADDR'}
        env['BIRDFEEDER_ADDR'] = addr
        p = subprocess.run([str(CLI), 'send'], input=ndjson(SAMPLES[:1]),
                           capture_output=True, text=True, timeout=30, env=env)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn(f'dropped 1 to {addr}', p.stderr)

    def test_unknown_fields_are_named_once(self):
        lines = ndjson([{"dataset": "image_events", "model": "flux", "widht": 1024},
                        {"dataset": "image_events", "model": "flux", "widht": 512,
                         "heigth": 5},
                        {"dataset": "llm_events", "model": "m", "widht": 1}])
        want = ['birdfeeder: line 1: unknown field "widht" ignored: not in the protocol '
                '(proto/PROTOCOL.md); named once',
                'birdfeeder: line 2: unknown field "heigth" ignored: not in the protocol '
                '(proto/PROTOCOL.md); named once']
        p = run_cli(['send', '--to', self.rx.addr], lines)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stderr.splitlines()[:-1], want)
        self.assertEqual(len(self.rx.recv_all(3)), 3)
        p = run_cli(['encode'], lines)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stderr.splitlines(), want)
        self.assertEqual(len(p.stdout.splitlines()), 3)

    def test_send_bad_arguments(self):
        for args in (['--to', 'nowhere'], ['--to', '127.0.0.1:0'], ['--rate', '0'],
                     ['--repeat', 'x'], ['--bogus'], ['extra']):
            p = run_cli(['send', *args], ndjson(SAMPLES[:1]))
            self.assertEqual(p.returncode, 2, args)
            self.assertTrue(p.stderr, args)

    def test_send_to_localhost(self):
        # The address rule of proto/bf_addr.h: localhost is 127.0.0.1.
        port = self.rx.addr.rsplit(':', 1)[1]
        p = run_cli(['send', '--to', 'localhost:' + port], ndjson(SAMPLES[:1]))
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(len(self.rx.recv_all(1)), 1)


class TestShimLibrary(unittest.TestCase):
    """libbirdfeeder.a is what a C service links: it must need libc only."""

    def test_links_with_libc_only(self):
        lib = BUILD / 'libbirdfeeder.a'
        if not lib.exists():
            if os.environ.get('BIRDFEEDER_REQUIRE_BINARIES') == '1':
                raise AssertionError(f'{lib} is missing: run make first')
            raise unittest.SkipTest(f'{lib} not built')
        # A sanitizer build's objects need the sanitizer runtime, not a library.
        flags = (BUILD / '.flags').read_text() if (BUILD / '.flags').exists() else ''
        san = [f for f in flags.split() if f.startswith('-fsanitize=')]
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / 'service.c'
            src.write_text('#include "bf_client.h"\n'
                           'int main(void)\n{\n'
                           '    bf_client *c = bf_client_open("localhost:8190", 0);\n'
                           '    bf_client_close(c);\n'
                           '    return c ? 0 : 1;\n}\n')
            exe = Path(tmp) / 'service'
            # Every member of the archive, not only those main() pulls in.
            p = subprocess.run([os.environ.get('CC', 'cc'), '-std=c11', *san,
                                '-I', str(REPO / 'client-shim' / 'c'), '-I', str(REPO / 'proto'),
                                str(src), '-Wl,--whole-archive', str(lib),
                                '-Wl,--no-whole-archive', '-o', str(exe)],
                               capture_output=True, text=True, timeout=60)
            self.assertEqual(p.returncode, 0, p.stderr)
            p = subprocess.run([str(exe)], capture_output=True, text=True, timeout=30)
            self.assertEqual(p.returncode, 0, p.stderr)


if __name__ == '__main__':
    unittest.main()

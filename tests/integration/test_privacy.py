"""Privacy (issue 11): no raw address, referrer secret or token in any output.

Events carry distinctive client addresses (IPv4, IPv6, IPv4-mapped, 6to4,
NAT64, Teredo, IPv4-compatible) and referrers with credentials, paths,
queries and fragments; the daemon runs with a distinctive token (from the
environment, then from --token-file) and at log level debug. They go through every way out of the daemon: the file sink,
the HTTP sink (tests/fake_tinybird.py), an outage that leaves them in the
spool at shutdown, and a 400 that puts them in the dead-letter file. Then
every byte the daemon wrote is searched: rows (as the fake got them, after
gunzip), the --out file, the log (as text and as JSON), stats lines, GET
/metrics and /health, spool segments, dead letters and whatever else is in
its directories. One hit fails the test, and every
hit is listed.

The rows must also hold what docs/enrichment.md and docs/security.md
promise: an IPv4 /24 for IPv4 and for IPv6 addresses that carry one, an
IPv6 /48 otherwise, and a referrer cut to its http(s) origin or "".
"""

import http.client
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # tests/

from harness import (BirdfeederTestCase, send_json_lines, send_raw,  # noqa: E402
                     stat_at_least, wait_until, IMAGE, LLM, DATASETS)

TOKEN = 'p.privacy-token-7f3a9c0e51'

# (address the service saw, what a row may show). The client IPv4s are all
# in 198.51.100.0/24 but for the first; Teredo holds its client inverted.
ADDRESSES = [
    ('203.0.113.77', '203.0.113.0'),
    ('2001:db8:1234:5678:9abc:def0:1357:2468', '2001:db8:1234::'),
    ('::ffff:198.51.100.23', '198.51.100.0'),            # IPv4-mapped
    ('2002:c633:6419::1', '198.51.100.0'),               # 6to4, 198.51.100.25
    ('64:ff9b::c633:641a', '198.51.100.0'),              # NAT64, 198.51.100.26
    ('2001:0:4136:e378:8000:63bf:39cc:9be4', '198.51.100.0'),  # Teredo, .27
    ('::198.51.100.28', '198.51.100.0'),                 # IPv4-compatible
]
# Text that must never appear: the addresses and the parts of them that
# identify a host. Colon pairs of IPv6 groups, never one group alone: a
# 4-digit hex group turns up in ids and hashes by chance.
ADDRESS_SECRETS = [
    '203.0.113.77', '9abc:def0', 'def0:1357', '1357:2468', '198.51.100.23',
    'c633:6419', '198.51.100.25', 'c633:641a', '198.51.100.26', '39cc:9be4',
    '198.51.100.27', 'c633:641c', '198.51.100.28',
]

# (referrer the service saw, what a row may show).
REFERRERS = [
    ('https://alice-u1:s3cr3t-pw@shop.example.org:8443/account/orders'
     '?session=SESSION-XYZ-123#frag-999', 'https://shop.example.org:8443'),
    # WHATWG: '?' ends the authority, so "userbob42:pa" is the host with a
    # port that is not a number: no URL, no origin.
    ('https://userbob42:pa?ss-word-77@host.example/', ''),
    ('javascript://alert-xss-4242/%0aalert(1)', ''),
    ('data://text-plain-4343,hello', ''),
    ('HTTPS://Shop.Example.ORG/path-secret-555?q=query-secret-666', 'https://shop.example.org'),
    ('http://plain.example.net/?token=querytoken-888', 'http://plain.example.net'),
]
REFERRER_SECRETS = [
    'alice-u1', 's3cr3t-pw', 'account/orders', 'SESSION-XYZ-123', 'frag-999', 'userbob42',
    'ss-word-77', 'alert-xss-4242', 'text-plain-4343', 'path-secret-555', 'query-secret-666',
    'querytoken-888',
]

SECRETS = [TOKEN] + ADDRESS_SECRETS + REFERRER_SECRETS


def privacy_events(prefix):
    """One event per address and one per referrer, image and llm in turn:
    (events, {id: (expected ip, expected referrer)})."""
    events, want = [], {}
    n = max(len(ADDRESSES), len(REFERRERS))
    for i in range(n):
        ip, ip_out = ADDRESSES[i % len(ADDRESSES)]
        ref, ref_out = REFERRERS[i % len(REFERRERS)]
        for ds in DATASETS:
            ident = f'{prefix}{ds[0]}{i}'
            ev = {'dataset': ds, 'id': ident, 'ip': ip, 'referrer': ref, 'user_id': f'u{i}'}
            ev.update({'model': 'flux', 'prompt': 'a heron'} if ds == IMAGE else
                      {'model': 'gpt-5-nano', 'prompt_tokens': 10, 'completion_tokens': 5})
            events.append(ev)
            want[ident] = (ip_out, ref_out)
    return events, want


def send(events, port):
    """Half through the CLI (binary datagrams), half as JSON datagrams."""
    half = len(events) // 2
    p = send_json_lines(events[:half], port)
    if p.returncode != 0:
        raise AssertionError(f"birdfeeder send: rc={p.returncode} stderr={p.stderr!r}")
    for ev in events[half:]:
        send_raw(json.dumps(ev), port)


def stats_lines(d, n=3, timeout=10):
    """n raw lines from the daemon's stats socket."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(d.stats_path))
        buf = b''
        while buf.count(b'\n') < n:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    return buf


def http_outputs(d, name):
    """{what: bytes} of GET /metrics and GET /health (--metrics-listen)."""
    rec = wait_until(lambda: d.log_records('metrics_listening'), msg='metrics_listening')[0]
    port = int(rec['addr'].rsplit(':', 1)[1])
    out = {}
    for path in ('/metrics', '/health'):
        c = http.client.HTTPConnection('127.0.0.1', port, timeout=10)
        try:
            c.request('GET', path)
            out[f'GET {path}, {name}'] = c.getresponse().read()
        finally:
            c.close()
    return out


def files_under(*dirs):
    """{path: bytes} of every file under dirs."""
    out = {}
    for top in dirs:
        for root, _, names in os.walk(top):
            for name in names:
                p = Path(root) / name
                try:
                    out[str(p)] = p.read_bytes()
                except OSError:
                    pass    # a socket, or gone meanwhile
    return out


def leaks(blobs):
    """['where: secret in "...context..."'] for every secret found in blobs
    ({name: bytes}), case-insensitively."""
    found = []
    for name, data in blobs.items():
        low = data.lower()
        for secret in SECRETS:
            at = low.find(secret.lower().encode())
            if at >= 0:
                ctx = data[max(0, at - 60):at + len(secret) + 60].decode(errors='replace')
                found.append(f'{name}: {secret!r} in {ctx!r}')
    return found


def row_problems(rows, want):
    """What rows (dicts) show that the promises do not allow, for the ids of
    want present in rows."""
    problems = []
    for r in rows:
        if r.get('id') not in want:
            continue
        ip, ref = want[r['id']]
        if r['ip'] != ip:
            problems.append(f"row {r['id']}: ip {r['ip']!r}, want {ip!r}")
        if r['referrer'] != ref:
            problems.append(f"row {r['id']}: referrer {r['referrer']!r}, want {ref!r}")
    return problems


class TestPrivacy(BirdfeederTestCase):
    tmp_prefix = 'bf-priv-'

    def assert_private(self, blobs, rows, want):
        problems = row_problems(rows, want) + leaks(blobs)
        searched = sum(len(b) for b in blobs.values())
        self.assertGreater(searched, 0)
        if problems:
            self.fail(f"{len(problems)} privacy problems in {len(blobs)} outputs "
                      f"({searched} bytes):\n  " + '\n  '.join(problems))

    def test_file_sink_rows_log_and_stats(self):
        out_dir = self.tmpdir()
        out = out_dir / 'rows.ndjson'
        d = self.daemon(['--out', str(out), '--log-level', 'debug', '--flush-interval-ms', '100',
                         '--log-format', 'json', '--metrics-listen', '127.0.0.1:0'],
                        env={'TINYBIRD_API_KEY': None})
        events, want = privacy_events('f-')
        send(events, d.port)
        wait_until(lambda: out.exists() and out.read_bytes().count(b'\n') >= len(events),
                   msg=f"{len(events)} rows in --out")
        stats = stats_lines(d)
        web = http_outputs(d, 'file sink')
        self.assertEqual(d.stop(), 0)
        rows = [json.loads(x) for x in out.read_text().splitlines()]
        self.assertEqual({r['id'] for r in rows}, set(want))
        blobs = files_under(d.dir, out_dir)
        blobs['stats socket'] = stats
        blobs.update(web)
        self.assert_private(blobs, rows, want)

    def test_http_sink_spool_and_dead_letters(self):
        tb = self.fake(token=TOKEN)
        spool = self.tmpdir() / 'spool'
        args = ['--log-level', 'debug', '--flush-interval-ms', '100', '--spool-dir', str(spool),
                '--shutdown-timeout-ms', '1000', '--backoff-min-ms', '50',
                '--backoff-max-ms', '200', '--metrics-listen', '127.0.0.1:0']
        blobs, rows, want = {}, [], {}

        # 1. Delivered: the rows as the fake stored them, after gunzip.
        d1 = self.daemon(args, tinybird=tb)
        events, w = privacy_events('h-')
        want.update(w)
        send(events, d1.port)
        wait_until(lambda: sum(tb.row_count(ds) for ds in DATASETS) >= len(events),
                   msg="rows delivered")
        for ds in DATASETS:
            raw = tb._call('GET', f'/_fake/rows?name={ds}', raw=True)
            blobs[f'rows received for {ds}'] = raw
            rows += [json.loads(x) for x in raw.splitlines() if x.strip()]
        self.assertEqual({r['id'] for r in rows}, set(w), "the token did not work")

        # 2. Outage: retried, then spooled at shutdown.
        tb.faults(refuse=True)
        events, w = privacy_events('s-')
        want.update(w)
        send(events, d1.port)
        wait_until(stat_at_least(d1, 'retries', 2), msg="failed attempts")
        blobs['stats socket, first daemon'] = stats_lines(d1)
        blobs.update(http_outputs(d1, 'during the outage'))
        self.assertEqual(d1.stop(signal.SIGTERM), 0)
        segs = files_under(spool)
        self.assertTrue(any(p.endswith('.seg') for p in segs), f"no spool segment: {segs}")
        blobs.update({f'{p} (at shutdown)': b for p, b in segs.items()})

        # 3. Refused with 400: the spooled batches and new ones are kept as
        # dead letters. This daemon reads the token from --token-file.
        tb.faults(refuse=False, status=400)
        token_file = self.tmpdir() / 'token'
        token_file.write_text(TOKEN + '\n')
        token_file.chmod(0o600)
        d2 = self.daemon(args + ['--token-file', str(token_file)], tinybird=tb,
                         env={'TINYBIRD_API_KEY': None})
        self.assertTrue(d2.log_records('sink'), d2.log())
        events, w = privacy_events('d-')
        want.update(w)
        send(events, d2.port)
        wait_until(stat_at_least(d2, 'rows_dead_lettered', 2 * len(events)),
                   msg="spooled and new rows dead-lettered")
        blobs['stats socket, second daemon'] = stats_lines(d2)
        blobs.update(http_outputs(d2, 'refused'))
        self.assertEqual(d2.stop(), 0)
        dead = spool / 'dead-letter.ndjson'
        for line in dead.read_text().splitlines():
            obj = json.loads(line)
            if 'dead_letter' not in obj:
                rows.append(obj)
        self.assertEqual({r['id'] for r in rows}, set(want), "rows missing from the outputs")
        blobs.update(files_under(d1.dir, d2.dir, spool))  # not the token file's dir
        self.assert_private(blobs, rows, want)


if __name__ == '__main__':
    import unittest
    unittest.main()

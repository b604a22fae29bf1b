#!/usr/bin/env python3
"""make fleet-sim: a fleet of birdfeederd sharing one rate limit, on one machine.

N daemons (one per "host") deliver to one fake Events API that enforces a
small request limit per datasource, shared by all of them, over a fixed
window, with X-RateLimit-Limit/Remaining/Reset on every answer and
Retry-After on 429 (tests/fake_tinybird.py). Each host gets its share of
events from its own build/bench-sender with unique ids (--ids hNN-), all
senders starting together, as after a fleet restart. The run is done once
with pacing on and once with --pacing off, and the two are printed side by
side:

  - every event delivered, checked by id (missing, duplicated);
  - requests, and the share answered 429 from 5 s after the first request
    until the last event was delivered;
  - how long delivery took after the senders stopped;
  - the hosts' flush intervals when the senders stopped.

    python3 tests/bench/fleet.py [--hosts 30] [--seconds 60] [--rate 20]
        [--limit 10] [--window-ms 1000] [--flush-ms 1000] [--max-flush-ms 10000]
        [--only on|off] [--json]

tests/integration/test_fleet.py runs a small fleet (8 hosts) through
run_fleet() in `make test`. Traffic stays on 127.0.0.1. Exit status 1 when
the paced run misses its promise (an event lost, or 5% or more 429s).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from harness import BUILD, Daemon, FakeTinybird, wait_until  # noqa: E402

DATASETS = ('image_events', 'llm_events')
SETTLE_S = 5.0   # 429s are counted from this long after the first request


def _ids(tb):
    """Every id the fake accepted, with how many times."""
    seen = {}
    for ds in DATASETS:
        for row in tb.rows(ds):
            seen[row['id']] = seen.get(row['id'], 0) + 1
    return seen


def run_fleet(hosts=30, seconds=40, rate=20, limit=10, window_ms=1000, flush_ms=1000,
              max_flush_ms=10000, pacing=True, deliver_timeout=None, log=None, dump=None):
    """One fleet run; returns its figures (a dict). Every process it starts
    is stopped before it returns, whatever happens."""
    deliver_timeout = deliver_timeout or max(120, seconds * 4)
    say = log or (lambda *_: None)
    sender = BUILD / 'bench-sender'
    daemons, senders = [], []
    tb = FakeTinybird()
    try:
        tb.faults(rate_limit=limit, rate_window_ms=window_ms)
        args = ['--flush-interval-ms', str(flush_ms),
                '--max-flush-interval-ms', str(max_flush_ms),
                '--pacing', 'on' if pacing else 'off',
                '--flush-bytes', '1MiB', '--max-memory', '16MiB',
                '--shutdown-timeout-ms', '10000']
        for _ in range(hosts):
            daemons.append(Daemon(args, tinybird=tb, timeout=30))
        say(f"{hosts} daemons up (pacing {'on' if pacing else 'off'}); sending")
        for i, d in enumerate(daemons):
            senders.append(subprocess.Popen(
                [str(sender), '--to', d.addr, '--rate', str(rate), '--seconds', str(seconds),
                 '--ids', f'h{i:02d}-'], stdout=subprocess.PIPE, text=True))
        sent = {}
        for i, p in enumerate(senders):
            out, _ = p.communicate(timeout=seconds + 60)
            sent[f'h{i:02d}-'] = json.loads(out)['sent']
        t_sent = time.monotonic()
        intervals = {ds: [] for ds in DATASETS}
        for d in daemons:
            s = d.stats()
            for ds in DATASETS:
                intervals[ds].append(s['flush_interval_ms'][ds])
        want = sum(sent.values())
        say(f"{want} events sent; waiting for delivery")

        def delivered():  # duplicates count in row_count: then check ids
            return (sum(tb.row_count(ds) for ds in DATASETS) >= want
                    and len(_ids(tb)) >= want)
        try:
            wait_until(delivered, timeout=deliver_timeout, interval=0.5)
            t_done = time.monotonic()
        except AssertionError:
            t_done = None
        seen = _ids(tb)
        missing = sum(1 for prefix, n in sent.items() for k in range(n)
                      if f'{prefix}{k}' not in seen)
        duplicates = sum(c - 1 for c in seen.values())
        stray = sum(1 for i in seen if i[:4] not in sent or not i[4:].isdigit()
                    or int(i[4:]) >= sent[i[:4]])
        reqs = [r for r in tb.requests() if r['datasource'] in DATASETS]
        if dump:
            with open(dump, 'w') as f:
                json.dump(reqs, f)
        t0 = min(r['t_mono'] for r in reqs)
        end = t_done if t_done is not None else time.monotonic()
        counted = [r for r in reqs if t0 + SETTLE_S <= r['t_mono'] <= end]
        n429 = sum(1 for r in counted if r['status'] == 429)
        ok = [r for r in reqs if r['status'] in (200, 202)]
        exits = [d.stop(timeout=30) for d in daemons]
        return {
            'pacing': 'on' if pacing else 'off', 'hosts': hosts, 'seconds': seconds,
            'rate_per_host': rate, 'limit': limit, 'window_ms': window_ms,
            'flush_ms': flush_ms, 'max_flush_ms': max_flush_ms,
            'sent': want, 'delivered_ids': len(seen), 'missing': missing,
            'duplicates': duplicates, 'stray': stray,
            'requests': len(reqs), 'requests_429': sum(1 for r in reqs if r['status'] == 429),
            'counted': len(counted), 'counted_429': n429,
            'pct_429_after_settle': 100.0 * n429 / max(len(counted), 1),
            'rows_per_ok_request': (sum(r['rows_ok'] for r in ok) / len(ok)) if ok else 0,
            'deliver_s_after_send': None if t_done is None else t_done - t_sent,
            'first_request_to_done_s': end - t0,
            'interval_ms_median': {ds: statistics.median(v) for ds, v in intervals.items()},
            'interval_ms_range': {ds: [min(v), max(v)] for ds, v in intervals.items()},
            'daemon_exits': sorted(set(exits)),
        }
    finally:
        for p in senders:
            if p.poll() is None:
                p.kill()
                p.wait()
        for d in daemons:
            d.cleanup()
        tb.stop()


ROWS = [
    ('hosts', 'hosts'),
    ('events per host per s', 'rate_per_host'),
    ('limit per datasource', lambda r: f"{r['limit']} / {r['window_ms']} ms"),
    ('flush interval (base, max)', lambda r: f"{r['flush_ms']}, {r['max_flush_ms']} ms"),
    ('events sent', 'sent'),
    ('delivered (distinct ids)', 'delivered_ids'),
    ('missing', 'missing'),
    ('duplicates', 'duplicates'),
    ('requests', 'requests'),
    ('answered 429 (all)', 'requests_429'),
    ('429 from 5 s on', lambda r: f"{r['counted_429']} of {r['counted']} "
                                  f"({r['pct_429_after_settle']:.1f}%)"),
    ('rows per accepted request', lambda r: f"{r['rows_per_ok_request']:.0f}"),
    ('delivered, s after senders stop',
     lambda r: 'not within timeout' if r['deliver_s_after_send'] is None
     else f"{r['deliver_s_after_send']:.1f}"),
    ('interval at end, median (image/llm)',
     lambda r: ' / '.join(f"{r['interval_ms_median'][ds] / 1000:.2f} s" for ds in DATASETS)),
    ('interval at end, range (image)',
     lambda r: '{:.2f} to {:.2f} s'.format(*(x / 1000 for x in r['interval_ms_range']['image_events']))),
    ('daemon exit codes', lambda r: ','.join(map(str, r['daemon_exits']))),
]


def table(results):
    """A Markdown table, one column per run."""
    head = '| | ' + ' | '.join(f"pacing {r['pacing']}" for r in results) + ' |'
    lines = [head, '| --- |' + ' --- |' * len(results)]
    for name, get in ROWS:
        cells = [str(get(r) if callable(get) else r[get]) for r in results]
        lines.append(f'| {name} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--hosts', type=int, default=30)
    p.add_argument('--seconds', type=float, default=60)
    p.add_argument('--rate', type=float, default=20, help='events/s per host')
    p.add_argument('--limit', type=int, default=10, help='requests per window per datasource')
    p.add_argument('--window-ms', type=int, default=1000)
    p.add_argument('--flush-ms', type=int, default=1000)
    p.add_argument('--max-flush-ms', type=int, default=10000)
    p.add_argument('--only', choices=('on', 'off'), help='run one of the two')
    p.add_argument('--json', action='store_true', help='print the figures as JSON too')
    p.add_argument('--dump', help='write each run\'s request records to DUMP.on/.off.json')
    a = p.parse_args(argv)
    results = []
    for pacing in (True, False):
        if a.only and a.only != ('on' if pacing else 'off'):
            continue
        results.append(run_fleet(a.hosts, a.seconds, a.rate, a.limit, a.window_ms, a.flush_ms,
                                 a.max_flush_ms, pacing,
                                 dump=a.dump and f"{a.dump}.{'on' if pacing else 'off'}.json",
                                 log=lambda m: print(f'fleet: {m}', file=sys.stderr,
                                                     flush=True)))
    print(table(results))
    if a.json:
        print(json.dumps(results, indent=2))
    paced = [r for r in results if r['pacing'] == 'on']
    bad = [r for r in paced if r['missing'] or r['pct_429_after_settle'] >= 5]
    return 1 if bad else 0


if __name__ == '__main__':
    os.environ.setdefault('BIRDFEEDER_REQUIRE_BINARIES', '1')
    sys.exit(main())

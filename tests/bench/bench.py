#!/usr/bin/env python3
"""make bench: birdfeederd against a bare recvmmsg receiver, same load.

One run, loopback only, bounded in time (about 6 minutes). Sections:

  throughput  For each path (binary datagrams, JSON datagrams) and each rate
              of the sweep, the bare receiver (build/bench-receiver) and then
              birdfeederd are fed by the same sendmmsg generator
              (build/bench-loadgen) with the same payload file
              (build/bench-payload: the mix of tests/bench/mix.h). The
              receiver and the daemon's loop thread run on CPU 0 (the
              daemon's gzip workers float, as in production), the generator
              and the fake Events API (count-only mode: it counts rows by
              newlines and stores nothing) on CPU 1. Per rate: sent/s,
              delivered, loss, kernel drops, CPU per event (user+sys of the
              whole process over the events it received), peak RSS, the
              ratio to the receiver's CPU per event, and the stage that
              limited the rate.
  callgrind   Instructions per event (all threads, start-up and shutdown
              subtracted), by stage, for the mix, for the mix with every
              client address distinct, and for JSON datagrams.
  gzip        The compression lever: zlib, libdeflate and ISA-L igzip on a
              4 MiB batch of the daemon's own rows of the mix
              (build/bench-gzip).
  memory      The daemon with the default --max-memory driven at the
              sender's maximum against a fake that answers after 2 s: the
              largest memory_bytes of any stats line against the cap, and
              peak RSS.
  shim        The C shim: system calls per event (strace -c) and CPU per
              event. (The Node shim: tests/bench/node_bench.mjs, run by
              `make bench` after this.)

Absolute times depend on what else the shared 2-core machine does: compare
ratios measured in the same run, and instruction counts, which load does not
change. `uptime` is printed first. This is a benchmark, not a test: it
prints figures and never fails on them.
"""
import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from harness import FakeTinybird, REPO, wait_until  # noqa: E402

TOKEN = 'bench-token'
CLK = os.sysconf('SC_CLK_TCK')


def proc_cpu_s(pid):
    with open(f'/proc/{pid}/stat') as f:
        fields = f.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK  # utime + stime, all threads


def proc_hwm_kb(pid):
    with open(f'/proc/{pid}/status') as f:
        m = re.search(r'VmHWM:\s+(\d+) kB', f.read())
    return int(m.group(1)) if m else 0


def stats_line(sock_path):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(5)
    s.connect(sock_path)
    line = s.makefile().readline()
    s.close()
    return json.loads(line)


def loadgen(build, addr, payload, rate=0, seconds=None, count=None, cpu=1):
    cmd = ['taskset', '-c', str(cpu), str(build / 'bench-loadgen'), '--to', addr,
           '--payload', str(payload), '--rate', str(rate)]
    cmd += ['--count', str(count)] if count else ['--seconds', str(seconds)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def start_daemon(build, tmp, fake, extra=(), prefix=()):
    log = open(tmp / 'daemon.log', 'w')
    env = {k: v for k, v in os.environ.items() if not k.startswith('TINYBIRD')}
    env['TINYBIRD_API_KEY'] = TOKEN
    cmd = [*prefix, str(build / 'birdfeederd'), '--listen', '127.0.0.1:0',
           '--tinybird-url', fake.url, '--catalog', str(REPO / 'daemon/catalog.json'),
           '--ip-hash-key-file', str(tmp / 'key'), '--stats-socket', str(tmp / 's.sock'),
           '--spool-dir', str(tmp / 'spool'), *extra]
    p = subprocess.Popen(cmd, stderr=log, env=env)
    addr = wait_until(lambda: re.search(r'event=listening addr=(\S+)',
                                        (tmp / 'daemon.log').read_text()),
                      timeout=120).group(1)
    return p, addr


def fake_sink(**kw):
    fake = FakeTinybird(token=TOKEN, count_only=True, **kw)
    # Its handler threads come and go: those it starts later inherit this.
    subprocess.run(['taskset', '-p', '-a', '-c', '1', str(fake.proc.pid)],
                   capture_output=True)
    return fake


def delivered_rows(fake):
    return sum(fake.summary()['rows'].values())


def run_receiver(build, payload, rate, seconds):
    p = subprocess.Popen(['taskset', '-c', '0', str(build / 'bench-receiver')],
                         stdout=subprocess.PIPE, text=True)
    addr = p.stdout.readline().split()[1]
    cpu0 = proc_cpu_s(p.pid)
    sent = loadgen(build, addr, payload, rate, seconds)
    time.sleep(0.2)  # the queue empties
    cpu = proc_cpu_s(p.pid) - cpu0
    hwm = proc_hwm_kb(p.pid)
    p.send_signal(signal.SIGTERM)
    res = json.loads(p.stdout.read().strip().splitlines()[-1])
    p.wait(timeout=10)
    return {'sent': sent['sent'], 'sent_rate': sent['rate'], 'received': res['received'],
            'delivered': res['received'], 'kernel_drops': res['kernel_drops'],
            'loss_pct': 100.0 * (sent['sent'] - res['received']) / max(sent['sent'], 1),
            'cpu_us': 1e6 * cpu / max(res['received'], 1), 'cpu_pct': 100 * cpu / seconds,
            'rss_mb': hwm / 1024.0, 'limit': ''}


def run_daemon(build, payload, rate, seconds):
    with tempfile.TemporaryDirectory() as d, fake_sink() as fake:
        tmp = Path(d)
        p, addr = start_daemon(build, tmp, fake, extra=['--stats-interval-ms', '200'])
        # Warm up so libuv's threadpool exists, then pin only the loop
        # thread (taskset -p acts on one thread): the gzip workers float.
        host, port = addr.rsplit(':', 1)
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(
            b'{"dataset":"llm_events","model":"warmup"}', (host, int(port)))
        wait_until(lambda: delivered_rows(fake) >= 1, timeout=10)
        subprocess.run(['taskset', '-p', '-c', '0', str(p.pid)], check=True,
                       capture_output=True)
        cpu0 = proc_cpu_s(p.pid)
        t0 = time.monotonic()
        sent = loadgen(build, addr, payload, rate, seconds)
        sock = str(tmp / 's.sock')

        def settled():
            st = stats_line(sock)
            done = (st['rows_delivered_total'] + st['dropped_total'] >= st['accepted_total']
                    and st['spool_bytes'] == 0 and st['received'] > 0)
            return st if done else None
        try:
            st = wait_until(settled, timeout=60, interval=0.2)
        except AssertionError:
            st = stats_line(sock)
        cpu = proc_cpu_s(p.pid) - cpu0
        hwm = proc_hwm_kb(p.pid)
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=60)
        delivered = delivered_rows(fake) - 1
        received = st['received'] - 1
        loss = sent['sent'] - delivered
        # Which stage limited this rate: the daemon's socket overflowing
        # (its loop thread could not keep up), then the sink (batches
        # spooled or lost after acceptance), then the sender (it could not
        # send the rate asked; loss-free otherwise).
        if st['kernel_drops'] > 0:
            limit = 'receive (loop CPU)'
        elif st['rows_spooled'] > 0 or st['dropped_total'] > 0 or loss > 0:
            limit = 'sink'
        elif rate and sent['rate'] < 0.97 * rate:
            limit = 'sender'
        else:
            limit = '-'
        return {'sent': sent['sent'], 'sent_rate': sent['rate'], 'received': received,
                'delivered': delivered, 'kernel_drops': st['kernel_drops'],
                'loss_pct': 100.0 * loss / max(sent['sent'], 1),
                'cpu_us': 1e6 * cpu / max(received, 1),
                'cpu_pct': 100.0 * cpu / (time.monotonic() - t0),
                'rss_mb': hwm / 1024.0, 'spooled': st['rows_spooled'], 'limit': limit}


def throughput(build, payloads, rates, seconds, out):
    hdr = (f'{"rate/s":>7} {"who":>9} {"sent/s":>8} {"deliv":>9} {"loss%":>7} '
           f'{"kdrops":>7} {"us/ev":>6} {"ratio":>5} {"RSS MB":>6}  limited by')
    for path, payload in payloads.items():
        print(f'\n{path} datagrams ({payload.stat().st_size // 4096} bytes each on average)')
        print(hdr)
        for rate in rates:
            rec = run_receiver(build, payload, rate, seconds)
            dae = run_daemon(build, payload, rate, seconds)
            ratio = dae['cpu_us'] / rec['cpu_us'] if rec['cpu_us'] else 0
            if rec['loss_pct'] > 0.01 and dae['limit'] == '-':
                dae['limit'] = ''
            for who, r in (('receiver', rec), ('daemon', dae)):
                label = rate if rate else 'max'
                print(f'{label:>7} {who:>9} {r["sent_rate"]:>8.0f} {r["delivered"]:>9} '
                      f'{r["loss_pct"]:>7.3f} {r["kernel_drops"]:>7} {r["cpu_us"]:>6.2f} '
                      f'{(ratio if who == "daemon" else 1):>5.2f} {r["rss_mb"]:>6.1f}  '
                      f'{r["limit"]}', flush=True)
            out.setdefault('throughput', []).append(
                {'path': path, 'rate': rate, 'receiver': rec, 'daemon': dae, 'ratio': ratio})


# ---- callgrind ---------------------------------------------------------------

# Stages as inclusive costs of the functions that enter them (file:function).
STAGES = [
    ('receive', ['on_recv'], ['on_datagram']),
    ('decode', ['bf_decode_datagram'], []),
    ('enrich', ['enrich_event'], []),
    ('row', ['batch_append'], []),
    ('compress', ['compress_work'], []),
    ('http', ['on_poll', 'on_timeout', 'http_post'], []),
]


def inclusive(path):
    """function name -> inclusive instructions, all threads merged (one
    entry per function: lines for code inlined from headers are left out,
    their cost is in the function they were inlined into)."""
    out = subprocess.run(['callgrind_annotate', '--inclusive=yes', '--threshold=100',
                          '--auto=no', str(path)], capture_output=True, text=True).stdout
    costs = {}
    for line in out.splitlines():
        m = re.match(r'\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(\S+):(\S+)\s+\[', line)
        if m and m.group(3) not in costs:
            costs[m.group(3)] = int(m.group(1).replace(',', ''))
    return costs


def callgrind_run(build, payload, events):
    """Total instructions (all threads) of a daemon fed `events` datagrams
    of payload, from start to exit; the datagrams it received; rows
    delivered; the callgrind file."""
    tmp = Path(tempfile.mkdtemp(prefix='bf-cg-'))
    with fake_sink() as fake:
        out = tmp / 'callgrind.out'
        p, addr = start_daemon(build, tmp, fake,
                               extra=['--flush-interval-ms', '200', '--stats-interval-ms', '500'],
                               prefix=['valgrind', '--tool=callgrind',
                                       f'--callgrind-out-file={out}'])
        received = 0
        if events:
            loadgen(build, addr, payload, 2000, count=events)
            sock = str(tmp / 's.sock')

            def settled():
                st = stats_line(sock)
                return st if (st['received'] >= events or st['kernel_drops']) and \
                    st['rows_delivered_total'] + st['dropped_total'] >= st['accepted_total'] \
                    else None
            st = wait_until(settled, timeout=300, interval=1)
            received = st['received']
            if st['rejected_total']:
                print(f'  warning: {st["rejected_total"]} datagrams rejected: '
                      f'{ {k: v for k, v in st["rejected"].items() if v} }', flush=True)
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=300)
        text = out.read_text()
        m = re.search(r'^totals:\s+(\d+)', text, re.M) or re.search(r'^summary:\s+(\d+)',
                                                                    text, re.M)
        return int(m.group(1)), received, delivered_rows(fake), out


def callgrind(build, payloads, events, out, keep, which):
    base, _, _, base_file = callgrind_run(build, payloads['binary'], 0)
    base_inc = inclusive(base_file)
    print(f'\ncallgrind: instructions per event, all threads, start-up and shutdown '
          f'subtracted ({events} events at 2,000/s)')
    names = [s[0] for s in STAGES]
    print(f'{"run":<26} {"total":>7} ' + ' '.join(f'{n:>8}' for n in names) + f' {"other":>7}')
    runs = [('binary', 'binary, mix', payloads['binary']),
            ('distinct', 'binary, every ip distinct', payloads['distinct']),
            ('json', 'JSON, mix', payloads['json'])]
    for key, label, payload in runs:
        if key not in which:
            continue
        total, sent, delivered, f = callgrind_run(build, payload, events)
        inc = inclusive(f)
        per = (total - base) / max(sent, 1)
        row, known = {}, 0
        for name, plus, minus in STAGES:
            v = sum(inc.get(fn, 0) - base_inc.get(fn, 0) for fn in plus) - \
                sum(inc.get(fn, 0) - base_inc.get(fn, 0) for fn in minus)
            row[name] = v / max(sent, 1)
            known += row[name]
        row['other'] = per - known
        print(f'{label:<26} {per:>7,.0f} ' + ' '.join(f'{row[n]:>8,.0f}' for n in names) +
              f' {row["other"]:>7,.0f}', flush=True)
        out.setdefault('callgrind', []).append({'run': label, 'per_event': per, 'sent': sent,
                                                'delivered': delivered, **row})
        if keep:
            Path(keep).mkdir(parents=True, exist_ok=True)
            f.replace(Path(keep) / (re.sub(r'\W+', '_', label) + '.callgrind'))


# ---- memory bound ---------------------------------------------------------------

def memory_bound(build, payload, seconds, out):
    with tempfile.TemporaryDirectory() as d, fake_sink() as fake:
        tmp = Path(d)
        fake.faults(delay_ms=2000)
        p, addr = start_daemon(build, tmp, fake, extra=['--stats-interval-ms', '100'])
        cap, peak, lines = 0, 0, 0
        stop = threading.Event()

        def sample():
            nonlocal cap, peak, lines
            s = socket.socket(socket.AF_UNIX)
            s.connect(str(tmp / 's.sock'))
            f = s.makefile()
            while not stop.is_set():
                line = f.readline()
                if not line:
                    break
                st = json.loads(line)
                cap = st['memory_cap']
                peak = max(peak, st['memory_bytes'])
                lines += 1
            s.close()
        t = threading.Thread(target=sample, daemon=True)
        t.start()
        sent = loadgen(build, addr, payload, 0, seconds)
        time.sleep(1)
        stop.set()
        st = stats_line(str(tmp / 's.sock'))
        hwm = proc_hwm_kb(p.pid)
        p.send_signal(signal.SIGKILL)  # the spool holds the rest; no drain wanted
        p.wait()
    print(f'\nmemory bound: default config, sink answering after 2 s, {seconds:g} s at the '
          f'sender\'s maximum ({sent["rate"]:.0f}/s)')
    print(f'  max memory_bytes {peak:,} of cap {cap:,} ({100.0 * peak / max(cap, 1):.1f}%) '
          f'over {lines} stats lines; peak RSS {hwm / 1024:.1f} MiB; rows spooled '
          f'{st["rows_spooled"]:,}; dropped {st["dropped_total"]}; kernel drops '
          f'{st["kernel_drops"]}')
    out['memory'] = {'max_memory_bytes': peak, 'cap': cap, 'rss_mb': hwm / 1024,
                     'lines': lines, 'rate': sent['rate'], 'spooled': st['rows_spooled'],
                     'dropped': st['dropped_total'], 'kernel_drops': st['kernel_drops']}


# ---- compression -----------------------------------------------------------------

def gzip_lever(build, payload, out):
    """The daemon's own rows for the mix (file sink), then bench-gzip on a
    4 MiB batch of them: zlib, libdeflate and igzip side by side."""
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        rows = tmp / 'rows.ndjson'
        env = {k: v for k, v in os.environ.items() if not k.startswith('TINYBIRD')}
        log = open(tmp / 'daemon.log', 'w')
        p = subprocess.Popen([str(build / 'birdfeederd'), '--listen', '127.0.0.1:0',
                              '--catalog', str(REPO / 'daemon/catalog.json'),
                              '--ip-hash-key-file', str(tmp / 'key'), '--stats-socket', '',
                              '--out', str(rows), '--flush-interval-ms', '100'],
                             stderr=log, env=env)
        addr = wait_until(lambda: re.search(r'event=listening addr=(\S+)',
                                            (tmp / 'daemon.log').read_text()),
                          timeout=30).group(1)
        loadgen(build, addr, payload, 20000, count=4096)
        wait_until(lambda: rows.exists() and rows.read_bytes().count(b'\n') >= 4096,
                   timeout=30)
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=30)
        data = rows.read_bytes()
        res = subprocess.run([str(build / 'bench-gzip'), str(rows)], capture_output=True,
                             text=True).stdout
    nrows = data.count(b'\n')
    print(f'\ncompression: rows of the mix, {len(data) / nrows:.0f} bytes each')
    print(res.rstrip())
    out['gzip'] = res


# ---- shims ---------------------------------------------------------------------------

def shim(build, out):
    p = subprocess.Popen(['taskset', '-c', '0', str(build / 'bench-receiver')],
                         stdout=subprocess.PIPE, text=True)
    addr = p.stdout.readline().split()[1]
    res = json.loads(subprocess.run(['taskset', '-c', '1', str(build / 'bench-shim'), '--to',
                                     addr, '--count', '200000'], check=True,
                                    capture_output=True, text=True).stdout)

    def syscalls(n):
        r = subprocess.run(['strace', '-f', '-c', '-o', '/dev/stdout', str(build / 'bench-shim'),
                            '--to', addr, '--count', str(n), '--bare', '0'],
                           capture_output=True, text=True)
        for line in r.stdout.splitlines():
            f = line.split()
            if f and f[-1] == 'total':
                return int(f[3])  # % time, seconds, usecs/call, calls, [errors]
        return 0
    have_strace = subprocess.run(['which', 'strace'], capture_output=True).returncode == 0
    per = (syscalls(10000) - syscalls(0)) / 10000 if have_strace else float('nan')
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=10)
    bare = res['bare_sendto_us_per_event']
    print(f'\nC shim: {per:.2f} system calls and {res["cpu_us_per_event"]:.2f} us of CPU per '
          f'bf_client_send ({res["events"]} events, {res["dropped"]} dropped); of which '
          f'encoding (bf_client_encode alone) {res["encode_us_per_event"]:.3f} us')
    print(f'  floor, same run: a bare sendto loop of the same datagrams {bare:.2f} us; '
          f'the shim costs {res["cpu_us_per_event"] / bare:.2f} times it, '
          f'{res["cpu_us_per_event"] - bare:+.2f} us')
    out['shim'] = {'syscalls_per_event': per, 'cpu_us': res['cpu_us_per_event'],
                   'encode_us': res['encode_us_per_event'], 'bare_sendto_us': bare}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--build', default='build')
    ap.add_argument('--rates', default='50000,100000,150000,200000,0',
                    help='events/s, comma-separated; 0 is the sender\'s maximum')
    ap.add_argument('--seconds', type=float, default=4)
    ap.add_argument('--callgrind-events', type=int, default=20000)
    ap.add_argument('--sections', default='throughput,callgrind,gzip,memory,shim')
    ap.add_argument('--paths', default='binary,json')
    ap.add_argument('--callgrind-runs', default='binary,distinct,json',
                    help='which callgrind runs: binary, distinct, json')
    ap.add_argument('--keep-callgrind', help='directory to keep the callgrind files in')
    ap.add_argument('--json-out', help='write every figure here as JSON')
    a = ap.parse_args()
    build = (REPO / a.build).resolve()
    sections = a.sections.split(',')
    tmp = Path(tempfile.mkdtemp(prefix='bf-bench-'))
    payloads = {}
    for name, args in (('binary', ['--format', 'binary']), ('json', ['--format', 'json']),
                       ('distinct', ['--format', 'binary', '--count', str(a.callgrind_events),
                                     '--clients', '0'])):
        payloads[name] = tmp / f'{name}.payload'
        with open(payloads[name], 'wb') as f:
            subprocess.run([str(build / 'bench-payload'), *args], stdout=f, check=True)
    load = os.getloadavg()
    print(f'birdfeeder bench: {os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} '
          f'{load[2]:.2f}; receiver and daemon loop thread on CPU 0, load generator and fake '
          f'Events API (count-only) on CPU 1; {a.seconds:g} s per rate')
    out = {'load': load}
    if 'throughput' in sections:
        throughput(build, {p: payloads[p] for p in a.paths.split(',')},
                   [int(r) for r in a.rates.split(',')], a.seconds, out)
    have_valgrind = subprocess.run(['which', 'valgrind'], capture_output=True).returncode == 0
    if 'callgrind' in sections and a.callgrind_events and have_valgrind:
        callgrind(build, payloads, a.callgrind_events, out, a.keep_callgrind,
                  a.callgrind_runs.split(','))
    if 'gzip' in sections:
        gzip_lever(build, payloads['binary'], out)
    if 'memory' in sections:
        memory_bound(build, payloads['binary'], 8, out)
    if 'shim' in sections:
        shim(build, out)
    if a.json_out:
        Path(a.json_out).write_text(json.dumps(out, indent=1))
    for f in tmp.iterdir():
        f.unlink()
    tmp.rmdir()


if __name__ == '__main__':
    main()

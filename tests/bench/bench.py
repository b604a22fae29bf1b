#!/usr/bin/env python3
"""make bench: birdfeederd under load, with the fake Events API as its sink.

For each rate: the daemon's loop thread runs pinned to CPU 0 (its gzip
threadpool is not pinned, as in production), build/bench-sender (the C
shim, one send(2) per event) pinned to CPU 1 for --seconds, and the fake in
count-only mode. Printed per rate: events/s sent and delivered, loss %,
kernel drops, daemon CPU per event (user+sys, gzip threads included), peak
RSS. Then callgrind's instruction count per event, which unlike times does
not depend on what else the 2-core machine is doing.

This is a benchmark, not a test: it prints figures and never fails on them.
Traffic stays on 127.0.0.1.
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
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from harness import FakeTinybird, REPO, wait_until  # noqa: E402

TOKEN = 'bench-token'
CLK = os.sysconf('SC_CLK_TCK')


def proc_cpu_s(pid):
    with open(f'/proc/{pid}/stat') as f:
        fields = f.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK  # utime + stime


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


def start_daemon(build, tmp, fake, extra=(), prefix=()):
    log = open(tmp / 'daemon.log', 'w')
    env = {k: v for k, v in os.environ.items() if not k.startswith('TINYBIRD')}
    env['TINYBIRD_API_KEY'] = TOKEN
    cmd = [*prefix, str(build / 'birdfeederd'), '--listen', '127.0.0.1:0',
           '--tinybird-url', fake.url, '--catalog', str(REPO / 'daemon/catalog.json'),
           '--ip-hash-key-file', str(tmp / 'key'), '--stats-socket', str(tmp / 's.sock'),
           '--spool-dir', str(tmp / 'spool'),
           '--stats-interval-ms', '200', *extra]
    p = subprocess.Popen(cmd, stderr=log, env=env)
    addr = wait_until(lambda: re.search(r'event=listening addr=(\S+)',
                                        (tmp / 'daemon.log').read_text()),
                      timeout=60).group(1)
    return p, addr


def run_rate(build, rate, seconds):
    with tempfile.TemporaryDirectory() as d, FakeTinybird(token=TOKEN, count_only=True) as fake:
        tmp = Path(d)
        p, addr = start_daemon(build, tmp, fake)
        # Warm up so libuv's threadpool exists, then pin only the loop
        # thread (taskset -p acts on one thread): the gzip workers float.
        host, port = addr.rsplit(':', 1)
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(
            b'{"dataset":"llm_events","model":"warmup"}', (host, int(port)))
        wait_until(lambda: sum(fake.summary()['rows'].values()) >= 1, timeout=10)
        subprocess.run(['taskset', '-p', '-c', '0', str(p.pid)], check=True,
                       capture_output=True)
        cpu0 = proc_cpu_s(p.pid)
        out = subprocess.run(['taskset', '-c', '1', str(build / 'bench-sender'), '--to', addr,
                              '--rate', str(rate), '--seconds', str(seconds)],
                             check=True, capture_output=True, text=True).stdout
        sent = json.loads(out)
        # Delivered: wait until the daemon has nothing batched or in flight.
        def settled():
            st = stats_line(str(tmp / 's.sock'))
            done = (st['rows_delivered_total'] + st['dropped_total'] >= st['accepted_total']
                    and st['received'] > 0)
            return st if done else None
        try:
            st = wait_until(settled, timeout=30, interval=0.2)
        except AssertionError:
            st = stats_line(str(tmp / 's.sock'))
        cpu = proc_cpu_s(p.pid) - cpu0
        hwm = proc_hwm_kb(p.pid)
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=30)
        delivered = sum(fake.summary()['rows'].values())
        return {
            'rate': rate, 'sent': sent['sent'], 'sent_rate': sent['rate'],
            'client_dropped': sent['dropped'], 'received': st['received'],
            'kernel_drops': st['kernel_drops'], 'delivered': delivered,
            'loss_pct': 100.0 * (sent['sent'] + 1 - delivered) / max(sent['sent'], 1),
            'cpu_us_per_event': 1e6 * cpu / max(st['received'], 1),
            'cpu_pct': 100.0 * cpu / seconds,
            'peak_rss_mb': hwm / 1024.0,
            'requests': sum(fake.summary()['requests_by_status'].values()),
        }


def callgrind_total(build, events, rate, keep=None):
    """Total instructions (all threads) of a daemon run that receives
    `events` events, from start to exit."""
    with tempfile.TemporaryDirectory() as d, FakeTinybird(token=TOKEN, count_only=True) as fake:
        tmp = Path(d)
        out = tmp / 'callgrind.out'
        p, addr = start_daemon(build, tmp, fake, extra=['--flush-interval-ms', '200'],
                               prefix=['valgrind', '--tool=callgrind',
                                       f'--callgrind-out-file={out}'])
        sent = 0
        if events:
            res = subprocess.run([str(build / 'bench-sender'), '--to', addr, '--rate',
                                  str(rate), '--seconds', str(events / rate)], check=True,
                                 capture_output=True, text=True).stdout
            sent = json.loads(res)['sent']
            wait_until(lambda: sum(fake.summary()['rows'].values()) >= sent,
                       timeout=120, interval=0.5)
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=120)
        m = re.search(r'^totals:\s+(\d+)', out.read_text(), re.M) or \
            re.search(r'^summary:\s+(\d+)', out.read_text(), re.M)
        if keep:
            import shutil
            shutil.copy(out, keep)
        delivered = sum(fake.summary()['rows'].values())
        return int(m.group(1)), sent, delivered


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--build', default='build')
    ap.add_argument('--rates', default='100000,200000')
    ap.add_argument('--seconds', type=float, default=5)
    ap.add_argument('--callgrind-events', type=int, default=20000)
    ap.add_argument('--callgrind-out', help='keep the loaded run\'s callgrind file here')
    a = ap.parse_args()
    build = (REPO / a.build).resolve()
    print(f'birdfeeder bench: {os.cpu_count()} CPUs; daemon loop thread on CPU 0 (gzip '
          f'workers unpinned), sender on CPU 1, '
          f'{a.seconds:g} s per rate, fake Events API in count-only mode')
    print(f'{"rate/s":>8} {"sent/s":>9} {"deliv":>9} {"loss%":>7} {"kdrops":>7} '
          f'{"cpu us/ev":>9} {"cpu%":>6} {"RSS MB":>7} {"reqs":>5}')
    for rate in [int(r) for r in a.rates.split(',')]:
        r = run_rate(build, rate, a.seconds)
        print(f'{r["rate"]:>8} {r["sent_rate"]:>9.0f} {r["delivered"]:>9} '
              f'{r["loss_pct"]:>7.3f} {r["kernel_drops"]:>7} {r["cpu_us_per_event"]:>9.2f} '
              f'{r["cpu_pct"]:>6.1f} {r["peak_rss_mb"]:>7.1f} {r["requests"]:>5}', flush=True)
    if a.callgrind_events and subprocess.run(['which', 'valgrind'],
                                             capture_output=True).returncode == 0:
        base, _, _ = callgrind_total(build, 0, 1)
        total, sent, delivered = callgrind_total(build, a.callgrind_events, 2000,
                                                 keep=a.callgrind_out)
        print(f'callgrind: {(total - base) / max(sent, 1):,.0f} instructions per event '
              f'(all threads, receive to HTTP ack; {sent} events sent, '
              f'{delivered} delivered; start-up and shutdown subtracted)')


if __name__ == '__main__':
    main()

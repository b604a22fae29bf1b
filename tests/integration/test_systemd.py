"""birdfeederd under systemd, without a running systemd.

  units      systemd-analyze verify and security on systemd/*.service, *.socket;
             the sysctl drop-in; the default config file
  activation systemd-socket-activate --datagram starts the daemon on the first
             datagram, which is not lost (activated=yes)
  notify     a test-owned NOTIFY_SOCKET receives READY=1 and STATUS=, then
             STOPPING=1 on SIGTERM; WATCHDOG=1 when WATCHDOG_USEC is set
  restart    the test holds the UDP socket (as birdfeeder.socket does) and
             restarts the daemon under a steady load: no event is lost
  docs       every option of --help is in birdfeederd(8) and
             docs/configuration.md; the man pages render without warnings;
             one version everywhere
  token      the Tinybird token never reaches the daemon's stderr

Tests that need a tool skip, naming it, only when the tool is missing.
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from harness import (CLI_BIN, DAEMON_BIN, REPO, REPO_CATALOG,  # noqa: E402
                     BirdfeederTestCase, _require, clean_env, send_json_lines, wait_until)

SYSTEMD = REPO / 'systemd'
SERVICE = SYSTEMD / 'birdfeeder.service'
SOCKET_UNIT = SYSTEMD / 'birdfeeder.socket'
SYSCTL = SYSTEMD / '99-birdfeeder.conf'
SYSUSERS = SYSTEMD / 'birdfeeder-sysusers.conf'
MAN = REPO / 'docs' / 'man'
MAN_PAGES = ['birdfeederd.8', 'birdfeeder.1', 'birdfeeder-protocol.7']
CONFIG_MD = REPO / 'docs' / 'configuration.md'
OPERATIONS_MD = REPO / 'docs' / 'operations.md'
DEFAULT_CONFIG = REPO / 'daemon' / 'birdfeeder.json'
FAST = ['--flush-interval-ms', '100']
SECURITY_MAX = 2.0


def need(tool):
    path = shutil.which(tool)
    if not path:
        raise unittest.SkipTest(f'{tool} is not installed (Debian: systemd, man-db, groff-base)')
    return path


def free_udp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def udp_port_bound(port):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(('127.0.0.1', port))
        except OSError:
            return True
        return False


def event(i, prefix='e'):
    return json.dumps({"dataset": "image_events", "model": "flux", "id": f"{prefix}{i}"},
                      separators=(',', ':')).encode()


def write_script(path, text):
    path.write_text(text)
    path.chmod(0o755)
    return path


def help_options():
    """Every --option that `birdfeederd --help` names."""
    _require(DAEMON_BIN)
    out = subprocess.run([str(DAEMON_BIN), '--help'], capture_output=True, text=True,
                         timeout=10, check=True).stdout
    opts = set(re.findall(r'^\s+(--[a-z][a-z0-9-]*)', out, re.M))
    opts |= set(re.findall(r'(?<![\w-])(--[a-z][a-z0-9-]*)', out))
    return out, sorted(opts)


def help_defaults(text, by_context=False):
    """{option: default text} from --help: the fixed defaults, or with
    by_context those that depend on where the daemon runs."""
    out, current = {}, None
    kind = 'default (by context)' if by_context else 'default'
    for line in text.splitlines():
        m = re.match(r'\s+--([a-z][a-z0-9-]*)(?: (?:VALUE|KEY=VALUE|BYTES|DURATION|N)|\[=BOOL\])$',
                     line)
        if m:
            current = m.group(1)
            continue
        m = re.match(r'\s+' + re.escape(kind) + r': (.*)$', line)
        if m and current:
            out[current] = m.group(1)
    return out


class SystemdTestCase(BirdfeederTestCase):
    """fake(), daemon(), tmpdir() and the logs of a failed test come from
    harness.BirdfeederTestCase."""
    tmp_prefix = 'bf-sd-'


# ---------------------------------------------------------------------------
# unit files
# ---------------------------------------------------------------------------

class TestUnits(SystemdTestCase):
    def test_verify_service_and_socket(self):
        """systemd-analyze verify passes with no warnings. ExecStart points at
        build/birdfeederd in a temp copy (verify wants an executable), and the
        Documentation= man pages resolve against docs/man."""
        need('systemd-analyze')
        need('man')
        _require(DAEMON_BIN)
        d = self.tmpdir()
        text = SERVICE.read_text()
        self.assertIn('ExecStart=/usr/local/sbin/birdfeederd ', text)
        (d / SERVICE.name).write_text(text.replace('/usr/local/sbin/birdfeederd',
                                                   str(DAEMON_BIN.resolve())))
        shutil.copy(SOCKET_UNIT, d / SOCKET_UNIT.name)
        mandir = d / 'man'
        for page in MAN_PAGES:
            section = mandir / f'man{page.rsplit(".", 1)[1]}'
            section.mkdir(parents=True, exist_ok=True)
            shutil.copy(MAN / page, section / page)
        env = dict(os.environ, MANPATH=str(mandir), SYSTEMD_LOG_LEVEL='notice')
        p = subprocess.run(['systemd-analyze', 'verify', str(d / SOCKET_UNIT.name),
                            str(d / SERVICE.name)], capture_output=True, text=True,
                           timeout=60, env=env, cwd=d)
        self.assertEqual(p.returncode, 0, p.stderr + p.stdout)
        self.assertEqual(p.stderr.strip(), '', 'verify printed warnings')

    def test_security_exposure_is_ok(self):
        need('systemd-analyze')
        p = subprocess.run(['systemd-analyze', 'security', '--offline=true', str(SERVICE)],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        m = re.search(r'Overall exposure level for \S+: (\d+\.\d+) (\w+)', p.stdout)
        self.assertTrue(m, p.stdout)
        score = float(m.group(1))
        self.assertLessEqual(score, SECURITY_MAX, p.stdout)
        self.assertEqual(m.group(2), 'OK')
        # The figure in the docs is the current one.
        self.assertIn(f'{score:.1f} OK', OPERATIONS_MD.read_text(),
                      'docs/operations.md must quote the current security score')

    def test_service_settings(self):
        text = SERVICE.read_text()
        settings = {}
        for line in text.splitlines():
            if '=' in line and not line.lstrip().startswith('#'):
                k, v = line.split('=', 1)
                settings.setdefault(k.strip(), []).append(v.strip())
        one = {k: v[-1] for k, v in settings.items()}
        self.assertEqual(one['Type'], 'notify')
        self.assertEqual(one['Restart'], 'on-failure')
        self.assertTrue(one['WatchdogSec'])
        # The token comes as a systemd credential (issue 11): not from an
        # environment file, whose values any process of the unit inherits.
        self.assertEqual(one['LoadCredential'], 'tinybird-token:/etc/birdfeeder/token')
        self.assertNotIn('EnvironmentFile', one)
        self.assertEqual(one['StateDirectory'], 'birdfeeder')
        self.assertEqual(one['RuntimeDirectory'], 'birdfeeder')
        self.assertEqual(one['DynamicUser'], 'yes')
        # The operators' group is the daemon's group (the stats socket is
        # theirs); the dynamic user must not be named like a static group, or
        # systemd refuses to make it and the service never starts.
        groups = [line.split()[1] for line in SYSUSERS.read_text().splitlines()
                  if line.startswith('g ')]
        self.assertEqual(groups, ['birdfeeder'])
        self.assertEqual(one['Group'], 'birdfeeder')
        self.assertNotIn(one.get('User', 'birdfeeder'), groups)
        self.assertEqual(one['ProtectSystem'], 'strict')
        self.assertEqual(one['CapabilityBoundingSet'], '')
        self.assertIn('@system-service', settings['SystemCallFilter'])
        self.assertEqual(one['RestrictAddressFamilies'], 'AF_INET AF_INET6 AF_UNIX')
        # Egress to Tinybird must stay possible: no blanket IP deny.
        self.assertNotIn('any', ' '.join(settings.get('IPAddressDeny', [])).split())
        # The daemon's default paths are inside the directories systemd makes
        # and names in $STATE_DIRECTORY and $RUNTIME_DIRECTORY.
        _require(DAEMON_BIN)
        out = subprocess.run([str(DAEMON_BIN), '--help'], capture_output=True, text=True,
                             timeout=10).stdout
        defaults = help_defaults(out, by_context=True)
        self.assertEqual(defaults['stats-socket'], '<runtime>/stats.sock')
        self.assertEqual(defaults['spool-dir'], '<state>/spool')
        self.assertEqual(defaults['ip-hash-key-file'], '<state>/ip-hash.key')
        d = self.tmpdir()
        (d / 'state').mkdir(mode=0o700)
        (d / 'run').mkdir(mode=0o755)
        p = subprocess.run([str(DAEMON_BIN), '--check-config'], capture_output=True,
                           text=True, timeout=10, env=clean_env({
                               'STATE_DIRECTORY': d / 'state', 'RUNTIME_DIRECTORY': d / 'run',
                               'TINYBIRD_API_KEY': 'x'}))
        self.assertEqual(p.returncode, 0, p.stderr)
        conf = json.loads(p.stdout[:p.stdout.rindex('}') + 1])
        self.assertEqual(conf['stats-socket'], f'{d}/run/stats.sock')
        self.assertEqual(conf['spool-dir'], f'{d}/state/spool')
        self.assertEqual(conf['ip-hash-key-file'], f'{d}/state/ip-hash.key')

    def test_units_wait_for_the_token(self):
        """Both units start only once the file the service reads the token
        from exists (the package enables and starts them at install)."""
        service = SERVICE.read_text()
        sources = [v.lstrip('-') for v in re.findall(r'(?m)^EnvironmentFile=(\S+)$', service)]
        sources += re.findall(r'(?m)^LoadCredential=[^:]+:(\S+)$', service)
        self.assertTrue(sources, 'where does the unit read the token?')
        for unit in (SERVICE, SOCKET_UNIT):
            conds = re.findall(r'(?m)^ConditionPathExists=(\S+)$', unit.read_text())
            self.assertEqual(len(conds), 1, unit.name)
            self.assertIn(conds[0], sources, unit.name)

    def test_socket_unit(self):
        text = SOCKET_UNIT.read_text()
        self.assertRegex(text, r'(?m)^ListenDatagram=127\.0\.0\.1:8190$')
        self.assertRegex(text, r'(?m)^ReceiveBuffer=\d+[KMG]?$')
        self.assertRegex(text, r'(?m)^Service=birdfeeder\.service$')

    def test_sysctl_dropin_covers_the_default_rcvbuf(self):
        values = {}
        for line in SYSCTL.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith(('#', ';')):
                k, v = (x.strip() for x in line.split('=', 1))
                values[k] = int(v)
        out = subprocess.run([str(DAEMON_BIN), '--help'], capture_output=True, text=True,
                             timeout=10).stdout
        rcvbuf = help_defaults(out)['rcvbuf']
        m = re.fullmatch(r'(\d+)MiB', rcvbuf)
        self.assertTrue(m, rcvbuf)
        self.assertGreaterEqual(values['net.core.rmem_max'], int(m.group(1)) << 20)
        # The daemon's rcvbuf_capped hint names the drop-in.
        src = (REPO / 'daemon' / 'receive.c').read_text()
        self.assertIn(SYSCTL.name, src)

    def test_default_config_file_has_every_option_and_is_valid(self):
        """daemon/birdfeeder.json (installed as /etc/birdfeeder/birdfeeder.json)
        sets every option of --help to its default, except the token, which
        belongs in /etc/birdfeeder/token, those with no default (token-file,
        the unix: sockets' group and peers, --kafka-brokers, which would
        switch the sink), and the paths whose default depends on where the
        daemon runs (a fixed one there would override systemd's
        directories); --check-config accepts it."""
        out, _ = help_options()
        defaults = help_defaults(out)
        by_context = help_defaults(out, by_context=True)
        self.assertEqual(set(by_context),
                         {'catalog', 'ip-hash-key-file', 'stats-socket', 'spool-dir',
                          'stats-socket-group'})
        conf = json.loads(DEFAULT_CONFIG.read_text())
        names = re.findall(r'^\s+--([a-z][a-z0-9-]*)(?: (?:VALUE|KEY=VALUE|BYTES|DURATION|N)|\[=BOOL\])$',
                           out, re.M)
        for name in names:
            if name == 'token':
                self.assertNotIn(name, conf, 'the token goes in /etc/birdfeeder/token')
                continue
            if name not in defaults and name not in by_context:
                self.assertNotIn(name, conf, f'{name} has no default')
                continue
            if name in by_context:
                self.assertNotIn(name, conf, f'{name} depends on the context')
                continue
            if name not in defaults:
                self.assertNotIn(name, conf, f'{name} has no default')
                continue
            self.assertIn(name, conf, f'{name} missing from {DEFAULT_CONFIG}')
            if isinstance(conf[name], bool):  # a flag: false is its default "no"
                self.assertEqual('yes' if conf[name] else 'no', defaults[name], name)
            else:
                self.assertEqual(str(conf[name]), defaults[name], name)
        self.assertEqual(set(conf), set(defaults) - set(by_context))
        p = subprocess.run([str(DAEMON_BIN), '--config', str(DEFAULT_CONFIG),
                            '--catalog', str(REPO_CATALOG), '--check-config'],
                           capture_output=True, text=True, timeout=10, env=clean_env())
        self.assertEqual(p.returncode, 0, p.stderr)


# ---------------------------------------------------------------------------
# socket activation
# ---------------------------------------------------------------------------

class TestSocketActivation(SystemdTestCase):
    def test_systemd_socket_activate(self):
        """The daemon starts on the first datagram, adopts the socket
        (activated=yes) and delivers that datagram and the ones after it."""
        activate = need('systemd-socket-activate')
        _require(DAEMON_BIN)
        tb = self.fake()
        port = free_udp_port()
        wrapper = write_script(
            self.tmpdir() / 'activate.sh',
            f'#!/bin/sh\nexec {activate} --datagram -l 127.0.0.1:{port} '
            f'-E TINYBIRD_API_KEY {DAEMON_BIN.resolve()} "$@"\n')

        def first_datagram():
            # systemd-socket-activate runs the daemon once the socket is readable.
            wait_until(lambda: udp_port_bound(port), timeout=10, msg='socket bound')
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.sendto(event(0, 'first'), ('127.0.0.1', port))

        t = threading.Thread(target=first_datagram, daemon=True)
        t.start()
        d = self.daemon(FAST, tinybird=tb, binary=wrapper)
        t.join(timeout=10)
        self.assertEqual(d.port, port)
        rec = d.log_records('listening')[0]
        self.assertEqual(rec['activated'], 'yes', d.log())
        p = send_json_lines([{"dataset": "image_events", "model": "flux", "id": f"next{i}"}
                             for i in range(20)], port)
        self.assertEqual(p.returncode, 0, p.stderr)
        tb.wait_rows('image_events', 21)
        ids = {r['id'] for r in tb.rows('image_events')}
        self.assertEqual(ids, {'first0'} | {f'next{i}' for i in range(20)})
        self.assertEqual(d.stop(), 0, d.log())

    def test_passed_socket_must_be_a_datagram_socket(self):
        _require(DAEMON_BIN)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(('127.0.0.1', 0))
            s.listen()
            p = spawn_with_socket(s, ['--stats-socket', '', '--ip-hash-key-file',
                                      '/tmp/bf-never-used.key', '--catalog', str(REPO_CATALOG)],
                                  stderr=subprocess.PIPE)
            _, err = p.communicate(timeout=10)
        self.assertEqual(p.returncode, 1)
        self.assertIn(b'not a datagram socket', err)


def spawn_with_socket(sock, args, env=None, **kw):
    """Start birdfeederd with sock as fd 3, LISTEN_FDS=1, LISTEN_PID=its pid:
    what systemd does for birdfeeder.socket."""
    fd = sock.fileno()
    code = ('import os,sys\n'
            f'os.dup2({fd}, 3)\n'
            'os.set_inheritable(3, True)\n'
            'os.environ.update(LISTEN_FDS="1", LISTEN_PID=str(os.getpid()))\n'
            'os.execv(sys.argv[1], sys.argv[1:])\n')
    return subprocess.Popen([sys.executable, '-c', code, str(DAEMON_BIN.resolve()), *args],
                            pass_fds=(fd,), env=clean_env(env), stdin=subprocess.DEVNULL, **kw)


# ---------------------------------------------------------------------------
# notify protocol
# ---------------------------------------------------------------------------

class NotifyListener:
    """A Unix datagram socket for NOTIFY_SOCKET; collects the messages."""

    def __init__(self, test):
        self.path = str(test.tmpdir() / 'notify.sock')
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.1)
        test.addCleanup(self.sock.close)
        self.messages = []

    def poll(self):
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except (socket.timeout, BlockingIOError):
                return self.messages

    def assignments(self):
        """Every KEY=VALUE line received, in order."""
        return [line for m in self.poll() for line in m.split('\n') if line]

    def wait_for(self, key, timeout=10):
        return wait_until(lambda: [a for a in self.assignments() if a.startswith(key)],
                          timeout=timeout, msg=f'{key} on NOTIFY_SOCKET '
                                               f'(got {self.messages!r})')


class TestNotify(SystemdTestCase):
    def test_ready_status_stopping(self):
        n = NotifyListener(self)
        d = self.daemon(env={'NOTIFY_SOCKET': n.path, 'WATCHDOG_USEC': None,
                             'WATCHDOG_PID': None})
        n.wait_for('READY=1')
        status = n.wait_for('STATUS=')[0]
        self.assertIn(f'127.0.0.1:{d.port}', status)
        self.assertIn('sink file', status)
        # READY=1 comes once the socket is listening, in the same message.
        first = n.messages[0].split('\n')
        self.assertIn('READY=1', first)
        self.assertNotIn('STOPPING=1', n.assignments())
        self.assertFalse([a for a in n.assignments() if a == 'WATCHDOG=1'],
                         'no watchdog pings without WATCHDOG_USEC')
        self.assertEqual(d.stop(signal.SIGTERM), 0, d.log())
        n.wait_for('STOPPING=1')
        a = n.assignments()
        self.assertLess(a.index('READY=1'), a.index('STOPPING=1'))

    def test_watchdog_pings(self):
        n = NotifyListener(self)
        # 200 ms: pings every 100 ms. WATCHDOG_PID unset means "for us".
        d = self.daemon(env={'NOTIFY_SOCKET': n.path, 'WATCHDOG_USEC': '200000',
                             'WATCHDOG_PID': None})
        n.wait_for('READY=1')
        wait_until(lambda: n.assignments().count('WATCHDOG=1') >= 3, timeout=10,
                   msg='3 WATCHDOG=1 pings')
        self.assertEqual(d.stop(), 0, d.log())

    def test_watchdog_pid_is_honoured(self):
        """WATCHDOG_PID naming the daemon pings; naming another process does not."""
        n = NotifyListener(self)
        wrapper = write_script(self.tmpdir() / 'wd.sh',
                               '#!/bin/sh\nWATCHDOG_PID=$$ exec '
                               f'{DAEMON_BIN.resolve()} "$@"\n')
        d = self.daemon(binary=wrapper, env={'NOTIFY_SOCKET': n.path, 'WATCHDOG_USEC': '200000'})
        wait_until(lambda: n.assignments().count('WATCHDOG=1') >= 2, timeout=10,
                   msg='WATCHDOG=1 with WATCHDOG_PID = the daemon')
        d.stop()

        n2 = NotifyListener(self)
        d2 = self.daemon(env={'NOTIFY_SOCKET': n2.path, 'WATCHDOG_USEC': '100000',
                              'WATCHDOG_PID': '1'})
        n2.wait_for('READY=1')
        time.sleep(0.5)  # five would-be ping periods: none may come
        self.assertNotIn('WATCHDOG=1', n2.assignments())
        d2.stop()


# ---------------------------------------------------------------------------
# restart through a held socket
# ---------------------------------------------------------------------------

class HeldSocket:
    """A UDP socket the test holds open, as systemd holds birdfeeder.socket's,
    handed to each daemon started through .wrapper (SCM_RIGHTS, then fd 3
    with LISTEN_FDS=1 and LISTEN_PID set to the daemon's pid)."""

    def __init__(self, test):
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(('127.0.0.1', 0))
        self.udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.port = self.udp.getsockname()[1]
        d = test.tmpdir()
        self.path = str(d / 'fd.sock')
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(self.path)
        self.server.listen(4)
        self.server.settimeout(0.2)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()
        self.wrapper = write_script(d / 'held.py', f'''#!{sys.executable}
import os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect({self.path!r})
_, fds, _, _ = socket.recv_fds(s, 1, 1)
s.close()
if fds[0] != 3:
    os.dup2(fds[0], 3)
    os.close(fds[0])
os.set_inheritable(3, True)
os.environ.update(LISTEN_FDS="1", LISTEN_PID=str(os.getpid()))
os.execv({str(DAEMON_BIN.resolve())!r}, [{str(DAEMON_BIN.resolve())!r}] + sys.argv[1:])
''')
        test.addCleanup(self.close)

    def _serve(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.server.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with conn:
                socket.send_fds(conn, [b'x'], [self.udp.fileno()])

    def close(self):
        self.stop.set()
        self.server.close()
        self.thread.join(timeout=5)
        self.udp.close()


class SteadySender(threading.Thread):
    """Sends rate datagrams per second for seconds, each with a unique id."""

    def __init__(self, port, rate, seconds, prefix):
        super().__init__(daemon=True)
        self.port, self.rate, self.total, self.prefix = port, rate, rate * seconds, prefix
        self.sent = 0
        self.errors = 0

    def run(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        start = time.monotonic()
        while self.sent < self.total:
            due = int((time.monotonic() - start) * self.rate) + 1
            while self.sent < min(due, self.total):
                try:
                    s.sendto(event(self.sent, self.prefix), ('127.0.0.1', self.port))
                except OSError:
                    self.errors += 1
                self.sent += 1
            time.sleep(0.002)
        s.close()

    def ids(self):
        return {f'{self.prefix}{i}' for i in range(self.total)}


class TestRestartUnderLoad(SystemdTestCase):
    RATE, SECONDS = 5000, 3

    def test_restart_through_held_socket_loses_nothing(self):
        _require(DAEMON_BIN)
        tb = self.fake(count_only=False)
        held = HeldSocket(self)
        state = self.tmpdir()  # one StateDirectory for both runs: spool, key
        args = FAST + ['--spool-dir', str(state / 'spool'),
                       '--ip-hash-key-file', str(state / 'ip-hash.key')]
        d1 = self.daemon(args, tinybird=tb, binary=held.wrapper)
        self.assertEqual(d1.port, held.port)
        self.assertEqual(d1.log_records('listening')[0]['activated'], 'yes')

        sender = SteadySender(held.port, self.RATE, self.SECONDS, 'r')
        sender.start()
        wait_until(lambda: sender.sent >= self.RATE, timeout=10, msg='one second of load')
        # Restart as systemd does: stop, wait for the exit, start again.
        self.assertEqual(d1.stop(signal.SIGTERM, timeout=20), 0, d1.log())
        sent_at_restart = sender.sent
        d2 = self.daemon(args, tinybird=tb, binary=held.wrapper)
        self.assertEqual(d2.log_records('listening')[0]['activated'], 'yes')
        sender.join(timeout=30)
        self.assertFalse(sender.is_alive())
        self.assertEqual(sender.errors, 0)
        self.assertLess(sent_at_restart, sender.total, 'the restart was mid-stream')

        want = sender.ids()
        wait_until(lambda: tb.row_count('image_events') >= len(want), timeout=60,
                   msg=f'{len(want)} rows (have {tb.row_count("image_events")})')
        got = {r['id'] for r in tb.rows('image_events')}
        missing = want - got
        self.assertFalse(missing, f'{len(missing)} ids lost, e.g. {sorted(missing)[:5]}'
                                  f'\n--- d1 ---\n{d1.log()}\n--- d2 ---\n{d2.log()}')
        s = d2.stats()
        self.assertEqual(s['kernel_drops'], 0)
        self.assertEqual(d2.stop(), 0, d2.log())
        # Both runs read some of the stream.
        r1 = [r for r in d1.log_records('stopped')][0]
        self.assertGreater(int(r1['received']), 0)
        self.assertGreater(s['received'], 0)
        self.assertEqual(int(r1['received']) + s['received'], len(want))


class TestReceiveBuffer(SystemdTestCase):
    def test_inherited_receive_buffer_is_not_lowered(self):
        """birdfeeder.socket sets ReceiveBuffer= with SO_RCVBUFFORCE (systemd
        is root); the daemon, without CAP_NET_ADMIN, must not shrink it to
        net.core.rmem_max with its own SO_RCVBUF."""
        need('setpriv')
        _require(DAEMON_BIN)
        held = HeldSocket(self)
        with open('/proc/sys/net/core/rmem_max') as f:
            rmem_max = int(f.read())
        want = max(32 << 20, rmem_max * 4)
        try:
            held.udp.setsockopt(socket.SOL_SOCKET, 33, want)  # SO_RCVBUFFORCE
        except PermissionError:
            self.skipTest('needs CAP_NET_ADMIN to play systemd')
        granted = held.udp.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        self.assertGreater(granted, rmem_max * 2)
        wrapper = write_script(self.tmpdir() / 'nocaps.sh',
                               '#!/bin/sh\nexec setpriv --bounding-set=-all --inh-caps=-all '
                               f'{held.wrapper} "$@"\n')
        d = self.daemon(['--rcvbuf', '16MiB'], binary=wrapper)
        self.assertEqual(d.log_records('listening')[0]['activated'], 'yes')
        self.assertGreaterEqual(d.stats()['rcvbuf_bytes'], granted, d.log())


# ---------------------------------------------------------------------------
# man pages and docs
# ---------------------------------------------------------------------------

class TestDocs(unittest.TestCase):
    def test_every_option_is_documented(self):
        _, opts = help_options()
        self.assertIn('--flush-bytes', opts)
        page = (MAN / 'birdfeederd.8').read_text()
        # In roff a dash in an option name is written \- (or \-\-).
        page_plain = page.replace('\\-', '-').replace('\\f[B]', '').replace('\\fB', '')
        md = CONFIG_MD.read_text()
        for opt in opts:
            with self.subTest(opt=opt):
                self.assertRegex(page_plain, re.escape(opt) + r'\b',
                                 f'{opt} missing from docs/man/birdfeederd.8')
                self.assertRegex(md, re.escape(opt) + r'\b',
                                 f'{opt} missing from docs/configuration.md')

    def test_every_documented_option_exists(self):
        # The other way round: a page naming an option neither binary has
        # (one renamed, say) sends the operator to a flag that is refused.
        _, opts = help_options()
        _require(CLI_BIN)
        usage = subprocess.run([str(CLI_BIN), 'help'], capture_output=True, text=True,
                               timeout=10).stdout
        known = set(opts) | set(re.findall(r'(--[a-z][a-z0-9-]*)', usage))
        for page in (MAN / 'birdfeederd.8', MAN / 'birdfeeder.1', CONFIG_MD,
                     REPO / 'docs' / 'security.md'):
            text = page.read_text().replace('\\-', '-')
            named = set(re.findall(r'(?<![\w-])(--[a-z][a-z0-9-]*[a-z0-9])', text))
            named.discard('--write')  # gen_config_doc.py's, in configuration.md
            with self.subTest(page=page.name):
                self.assertEqual(sorted(named - known), [])

    def test_configuration_md_defaults_and_environment(self):
        out, _ = help_options()
        md = CONFIG_MD.read_text()
        table = md.split('<!-- BEGIN GENERATED OPTIONS -->', 1)[1].split(
            '<!-- END GENERATED OPTIONS -->', 1)[0]
        for name, default in help_defaults(out).items():
            with self.subTest(option=name):
                env = 'BIRDFEEDER_' + name.upper().replace('-', '_')
                row = [line for line in table.splitlines() if line.startswith(f'| `--{name}`')]
                self.assertEqual(len(row), 1, f'one table row for --{name}')
                self.assertIn(f'`{default}`' if default else "`''`", row[0])  # '': off
                self.assertIn(env, row[0])
        for env in ('TINYBIRD_API_URL', 'TINYBIRD_URL', 'TINYBIRD_API_KEY', 'TINYBIRD_TOKEN',
                    'BIRDFEEDER_CONFIG', '--check-config'):
            self.assertIn(env, md)

    def test_generated_sections_are_current(self):
        _require(DAEMON_BIN)
        p = subprocess.run([sys.executable, str(REPO / 'docs' / 'gen_config_doc.py'), '--check',
                            '--daemon', str(DAEMON_BIN)], capture_output=True, text=True,
                           timeout=30)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)

    def test_man_pages_render_without_warnings(self):
        need('groff')
        for page in MAN_PAGES:
            with self.subTest(page=page):
                p = subprocess.run(['groff', '-man', '-ww', '-z', str(MAN / page)],
                                   capture_output=True, text=True, timeout=30)
                self.assertEqual((p.returncode, p.stderr), (0, ''))
                if shutil.which('man'):
                    env = {k: v for k, v in os.environ.items()
                           if k not in ('MAN_KEEP_FORMATTING', 'MANROFFOPT')}
                    env.update(MANWIDTH='80', PAGER='cat', MANPAGER='cat')
                    p = subprocess.run(['man', '--warnings', '-l', str(MAN / page)],
                                       capture_output=True, text=True, timeout=30, env=env)
                    self.assertEqual(p.returncode, 0, p.stderr)
                    self.assertEqual(p.stderr, '')
                    text = re.sub('.\b', '', p.stdout)  # overstrike bold and underline
                    self.assertIn('NAME', text)

    def test_cli_subcommands_are_in_birdfeeder_1(self):
        _require(CLI_BIN)
        page = (MAN / 'birdfeeder.1').read_text().replace('\\-', '-')
        usage = subprocess.run([str(CLI_BIN), 'help'], capture_output=True, text=True,
                               timeout=10).stdout
        for cmd in re.findall(r'^  ([a-z]+)\b', usage, re.M):
            self.assertIn(cmd, page)
        for opt in set(re.findall(r'(--[a-z][a-z-]*)', usage)):
            self.assertIn(opt, page)

    def test_one_version(self):
        # The Makefile's VERSION is the one: both binaries print it, the man
        # pages carry it (the User-Agent is test_http.c's).
        _require(DAEMON_BIN)
        _require(CLI_BIN)
        m = re.search(r'^VERSION\s*=\s*(\S+)$', (REPO / 'Makefile').read_text(), re.M)
        self.assertTrue(m, 'VERSION in the Makefile')
        version = m.group(1)
        for binary, prog in ((DAEMON_BIN, 'birdfeederd'), (CLI_BIN, 'birdfeeder')):
            out = subprocess.run([str(binary), '--version'], capture_output=True, text=True,
                                 timeout=10).stdout
            self.assertTrue(out.startswith(f'{prog} {version} '), out)
        for page in MAN_PAGES:
            th = next(line for line in (MAN / page).read_text().splitlines()
                      if line.startswith('.TH '))
            self.assertIn(f'"birdfeeder {version}"', th, page)
        # The Debian package's version (debian/changelog) too.
        top = (REPO / 'debian' / 'changelog').read_text().splitlines()[0]
        self.assertRegex(top, rf'^birdfeeder \({re.escape(version)}\) ')

    def test_protocol_7_names_every_reason(self):
        page = (MAN / 'birdfeeder-protocol.7').read_text().replace('\\-', '-')
        reasons = re.findall(r'^BF_REASON\((\w+)', (REPO / 'proto' / 'reasons.def').read_text(),
                             re.M)
        fields = re.findall(r'^BF_FIELD\(\s*\d+\s*,\s*(\w+)',
                            (REPO / 'proto' / 'fields.def').read_text(), re.M)
        self.assertTrue(reasons and fields)
        for name in reasons + fields:
            self.assertIn(name, page)


# ---------------------------------------------------------------------------
# the token
# ---------------------------------------------------------------------------

SECRET = 'p.bfSECRETtoken-9f3a7c21e5d04b8a'


class TestTokenNeverLogged(SystemdTestCase):
    def assert_no_secret(self, text, where):
        for needle in (SECRET, SECRET[2:14], SECRET[-12:]):
            self.assertNotIn(needle, text, f'token fragment {needle!r} in {where}')

    def test_token_is_not_logged_on_403_or_5xx(self):
        tb = self.fake(token='the-right-token')
        d = self.daemon(FAST + ['--log-level', 'debug', '--backoff-min-ms', '10',
                                '--backoff-max-ms', '50'],
                        tinybird=tb, env={'TINYBIRD_API_KEY': SECRET})
        events = [{"dataset": "image_events", "model": "flux", "id": f"t{i}"} for i in range(5)]
        send_json_lines(events, d.port)
        wait_until(lambda: d.stats()['holds'] >= 2, msg='403 -> held, probed again')
        self.assertTrue(all(r['status'] == 403 for r in tb.requests()))
        # Retried failures log too: 503s, then the server gone.
        tb.faults(status=503)
        send_json_lines([{"dataset": "llm_events", "model": "m", "id": "x"}], d.port)
        wait_until(lambda: d.stats()['retries'] >= 2, msg='503 retried')
        tb.faults(status=0, down=True)
        wait_until(lambda: d.stats()['http'].get('error', 0) >= 1, timeout=20,
                   msg='transport error')
        stats_line = json.dumps(d.stats())
        d.stop()
        log = d.log()
        self.assertIn('status=403', log)
        self.assert_no_secret(log, "the daemon's stderr")
        self.assert_no_secret(stats_line, 'the stats socket')
        self.assert_no_secret((Path(d.dir) / 'stdout.log').read_text(errors='replace')
                              if (Path(d.dir) / 'stdout.log').exists() else '', 'stdout')

    def test_token_is_not_printed_by_config_errors_or_check(self):
        _require(DAEMON_BIN)
        d = self.tmpdir()
        bad = d / 'bad.json'
        bad.write_text(json.dumps({"token": SECRET, "flush-bytes": "lots"}))
        bad.chmod(0o600)  # private, so the bad value is what fails
        tok = d / 'token'
        tok.write_text(SECRET + '\n')
        tok.chmod(0o644)  # refused: others may read it
        runs = [
            ['--token', SECRET, '--flush-bytes', 'lots'],
            ['--token', SECRET, '--no-such-option'],
            ['--config', str(bad)],
            ['--token', SECRET, '--check-config', '--catalog', str(REPO_CATALOG)],
            ['--token-file', str(tok)],
            ['--tinybird-url', 'http://api.tinybird.co', '--check-config'],
        ]
        for args in runs:
            with self.subTest(args=args):
                p = subprocess.run([str(DAEMON_BIN), *args], capture_output=True, text=True,
                                   timeout=10, env=clean_env({'TINYBIRD_API_KEY': SECRET}))
                self.assert_no_secret(p.stdout + p.stderr, f'birdfeederd {args}')


class TestTokenSources(SystemdTestCase):
    """Issue 11, finding 2: the token reaches the daemon without passing
    through its command line (every local user reads /proc/PID/cmdline) or,
    under systemd, its environment; finding 9: never in clear to a remote
    host."""

    EVENT = {"dataset": "image_events", "model": "flux", "id": "tok-1"}

    def assert_not_in_proc(self, d):
        for what in ('cmdline', 'environ'):
            data = Path(f'/proc/{d.proc.pid}/{what}').read_bytes()
            self.assertNotIn(SECRET.encode(), data, f'the token is in /proc/PID/{what}')

    def sink_line(self, d):
        recs = d.log_records('sink')
        self.assertTrue(recs, d.log())
        return recs[0]

    def deliver_one(self, tb, d):
        send_json_lines([self.EVENT], d.port)
        wait_until(lambda: tb.row_count('image_events') >= 1, msg='row delivered')
        self.assertEqual(d.stats()['dropped']['http_rejected'], 0)

    def test_token_file(self):
        tb = self.fake(token=SECRET)
        tok = self.tmpdir() / 'token'
        tok.write_text(SECRET + '\n')
        tok.chmod(0o600)
        d = self.daemon(FAST + ['--tinybird-url', tb.url, '--token-file', str(tok)])
        self.deliver_one(tb, d)
        self.assert_not_in_proc(d)
        self.assertEqual(self.sink_line(d)['token_from'], '--token-file')
        self.assertNotIn('token_on_command_line', d.log())
        self.assertEqual(d.stop(), 0)
        self.assertNotIn(SECRET, d.log())

    def test_systemd_credential(self):
        """What LoadCredential=tinybird-token:/etc/birdfeeder/token gives the
        service: $CREDENTIALS_DIRECTORY/tinybird-token, read by the daemon
        with no option at all."""
        tb = self.fake(token=SECRET)
        creds = self.tmpdir()
        (creds / 'tinybird-token').write_text(SECRET + '\n')
        (creds / 'tinybird-token').chmod(0o400)
        d = self.daemon(FAST + ['--tinybird-url', tb.url],
                        env={'CREDENTIALS_DIRECTORY': str(creds)})
        self.deliver_one(tb, d)
        self.assert_not_in_proc(d)
        self.assertEqual(self.sink_line(d)['token_from'], 'credential')
        self.assertEqual(d.stop(), 0)
        self.assertNotIn(SECRET, d.log())

    def test_token_flag_still_works_with_a_warning(self):
        tb = self.fake(token=SECRET)
        d = self.daemon(FAST + ['--tinybird-url', tb.url, '--token', SECRET])
        self.deliver_one(tb, d)
        warn = d.log_records('token_on_command_line')
        self.assertEqual(len(warn), 1, d.log())
        self.assertEqual(warn[0]['level'], 'warn')
        self.assertIn('/proc/PID/cmdline', warn[0]['hint'])
        self.assertEqual(d.stop(), 0)
        self.assertEqual(d.log().count(SECRET), 0)

    def test_token_file_others_may_read_is_refused(self):
        _require(DAEMON_BIN)
        tok = self.tmpdir() / 'token'
        tok.write_text(SECRET + '\n')
        for mode in (0o644, 0o640, 0o604):
            with self.subTest(mode=oct(mode)):
                tok.chmod(mode)
                p = subprocess.run([str(DAEMON_BIN), '--token-file', str(tok), '--check-config',
                                    '--catalog', str(REPO_CATALOG)],
                                   capture_output=True, text=True, timeout=10, env=clean_env())
                self.assertEqual(p.returncode, 2, p.stderr)
                self.assertIn(f'mode {mode:04o}', p.stderr)
                self.assertIn(str(tok), p.stderr)
                self.assertNotIn(SECRET, p.stdout + p.stderr)

    def test_plain_http_only_to_loopback(self):
        _require(DAEMON_BIN)
        for url, ok in (('http://api.tinybird.co', False), ('http://10.1.2.3:8001', False),
                        ('http://127.0.0.1:8001', True), ('http://[::1]:8001', True),
                        ('https://api.tinybird.co', True)):
            with self.subTest(url=url):
                p = subprocess.run([str(DAEMON_BIN), '--tinybird-url', url, '--check-config',
                                    '--catalog', str(REPO_CATALOG)],
                                   capture_output=True, text=True, timeout=10,
                                   env=clean_env({'TINYBIRD_API_KEY': SECRET}))
                self.assertEqual(p.returncode, 0 if ok else 2, p.stderr)
                if not ok:
                    self.assertIn('loopback', p.stderr)


if __name__ == '__main__':
    unittest.main()

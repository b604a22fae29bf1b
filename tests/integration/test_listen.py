"""Where the daemon listens (issue 11, findings 3 and 4): loopback only unless
--allow-remote; a Unix datagram socket beside (or instead of) UDP, whose
senders the kernel names, so --allow-uid / --allow-gid can keep other local
users out; the C shim and the CLI send to it as unix:/PATH.

Real binaries: build/birdfeederd, build/birdfeeder, tests/fake_tinybird.py.
"""

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # tests/

from harness import (CLI_BIN, DAEMON_BIN, REPO_CATALOG, IMAGE,  # noqa: E402
                     BirdfeederTestCase, _require, clean_env, send_json_lines, wait_until)

FAST = ['--flush-interval-ms', '100']


def cli_send(events, to, timeout=10):
    """`birdfeeder send --to TO` with events (dicts) on stdin."""
    _require(CLI_BIN)
    data = ''.join(json.dumps(e) + '\n' for e in events)
    return subprocess.run([str(CLI_BIN), 'send', '--to', to], input=data, text=True,
                          capture_output=True, timeout=timeout, env=clean_env())


def event(i, tag):
    return {'dataset': IMAGE, 'model': 'flux', 'id': f'{tag}-{i}'}


class TestUnixSocket(BirdfeederTestCase):

    def sock_path(self):
        return self.tmpdir() / 'events.sock'

    def test_udp_and_unix_together(self):
        """Two --listen values: both deliver; the Unix socket is mode 0660
        and goes away with the daemon."""
        tb = self.fake()
        path = self.sock_path()
        d = self.daemon(FAST + ['--listen', f'unix:{path}'], tinybird=tb)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o660)
        self.assertTrue(stat.S_ISSOCK(os.stat(path).st_mode))
        addrs = [r['addr'] for r in d.log_records('listening')]
        self.assertIn(f'unix:{path}', addrs)
        p = cli_send([event(i, 'unix') for i in range(3)], f'unix:{path}')
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn('sent 3', p.stderr)
        send_json_lines([event(i, 'udp') for i in range(2)], d.port)
        tb.wait_rows(IMAGE, 5)
        ids = sorted(r['id'] for r in tb.rows(IMAGE))
        self.assertEqual(ids, ['udp-0', 'udp-1', 'unix-0', 'unix-1', 'unix-2'])
        self.assertEqual(d.stats()['rejected_total'], 0)
        self.assertEqual(d.stop(), 0)
        self.assertFalse(path.exists(), 'the socket file stays after the daemon')

    def test_allow_uid_keeps_other_users_out(self):
        """With --allow-uid, a datagram from any other user is counted as
        rejected.peer_not_allowed, logged with its uid, and not delivered."""
        tb = self.fake()
        path = self.sock_path()
        me = os.getuid()
        d = self.daemon(FAST + ['--listen', f'unix:{path}', '--allow-uid', '4242'],
                        tinybird=tb)
        p = cli_send([event(0, 'no')], f'unix:{path}')
        self.assertEqual(p.returncode, 0, p.stderr)
        s = wait_until(lambda: (lambda s: s if s['rejected']['peer_not_allowed'] >= 1
                                else None)(d.stats()), msg='peer_not_allowed counted')
        self.assertEqual(s['accepted_total'], 0)
        rec = [r for r in d.log_records('reject') if r.get('reason') == 'peer_not_allowed']
        self.assertTrue(rec, d.log())
        self.assertEqual(rec[0]['uid'], str(me))
        self.assertEqual(d.stop(), 0)
        self.assertEqual(tb.row_count(IMAGE), 0)

        d2 = self.daemon(FAST + ['--listen', f'unix:{path}', '--allow-uid', f'4242,{me}'],
                         tinybird=tb)
        p = cli_send([event(0, 'yes')], f'unix:{path}')
        self.assertEqual(p.returncode, 0, p.stderr)
        tb.wait_rows(IMAGE, 1)
        self.assertEqual(d2.stats()['rejected']['peer_not_allowed'], 0)
        self.assertEqual(d2.stop(), 0)

    def test_allowed_senders_change_on_reload(self):
        """SIGHUP applies --allow-uid/--allow-gid from the config file to the
        socket as it is; one naming no such user fails the reload, and the
        old ones stay. --socket-group and --allow-remote need a restart."""
        tb = self.fake()
        path = self.sock_path()
        conf = self.tmpdir() / 'birdfeeder.json'

        def write(**kw):
            conf.write_text(json.dumps(kw))
            conf.chmod(0o600)

        def reload(name):
            n = len(d.log_records(name))
            d.send_signal(signal.SIGHUP)
            return wait_until(lambda: len(d.log_records(name)) > n
                              and d.log_records(name)[-1], msg=name)

        def rejected():
            return d.stats()['rejected']['peer_not_allowed']

        write(**{'allow-uid': '4242'})
        d = self.daemon(FAST + ['--config', str(conf), '--listen', f'unix:{path}'],
                        tinybird=tb)
        self.assertEqual(cli_send([event(0, 'no')], f'unix:{path}').returncode, 0)
        wait_until(lambda: rejected() == 1, msg='peer_not_allowed counted')

        write(**{'allow-uid': f'4242,{os.getuid()}'})
        rec = reload('reloaded')
        self.assertEqual(rec['changed'], 'allow-uid', rec)
        self.assertEqual(rec['restart_needed'], 'none', rec)
        self.assertEqual(cli_send([event(1, 'yes')], f'unix:{path}').returncode, 0)
        tb.wait_rows(IMAGE, 1)

        write(**{'allow-uid': 'no-such-user-bf'})
        rec = reload('reload_failed')
        self.assertIn('no-such-user-bf', rec['error'])
        self.assertEqual(cli_send([event(2, 'yes')], f'unix:{path}').returncode, 0)
        tb.wait_rows(IMAGE, 2)

        write(**{'allow-uid': f'{os.getuid()}', 'socket-group': '0', 'allow-remote': True})
        rec = reload('reloaded')
        self.assertEqual(rec['restart_needed'], 'allow-remote,socket-group', rec)
        self.assertEqual(rejected(), 1)
        self.assertEqual(d.stop(), 0)

    def test_cli_without_a_daemon_counts_a_drop(self):
        """unix:/PATH with nothing there: the shim opens anyway and counts
        each event as dropped (ENOENT, at once); nothing blocks, and the CLI
        says so and exits 1."""
        p = cli_send([event(0, 'x'), event(1, 'x')], f'unix:{self.sock_path()}')
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn('sent 0, invalid 0, dropped 2', p.stderr)


class DaemonRun(BirdfeederTestCase):
    """A daemon run to its exit (--check-config, or a start that fails)."""

    def run_daemon(self, args, timeout=10, prefix=()):
        _require(DAEMON_BIN)
        d = self.tmpdir()
        cmd = [*prefix, str(DAEMON_BIN), '--catalog', str(REPO_CATALOG), '--stats-socket', '',
               '--ip-hash-key-file', str(d / 'k'), '--spool-dir', str(d / 'spool'), *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              env=clean_env())


class TestLoopbackOnly(DaemonRun):

    def test_beyond_loopback_is_refused(self):
        """0.0.0.0 (every interface) lets any host that reaches one send
        events and costs: --check-config and a start both refuse it, naming
        --allow-remote."""
        for addr in ('0.0.0.0:0', '[::]:0'):
            for check in (['--check-config'], []):
                with self.subTest(addr=addr, check=bool(check)):
                    p = self.run_daemon(['--listen', addr, *check])
                    self.assertNotEqual(p.returncode, 0, p.stderr)
                    self.assertIn('not a loopback address', p.stderr)
                    self.assertIn('--allow-remote', p.stderr)

    def test_allow_remote_starts_and_says_so(self):
        d = self.daemon(FAST + ['--listen', '0.0.0.0:0', '--allow-remote'])
        warn = d.log_records('listen_remote')
        self.assertTrue(warn, d.log())
        self.assertEqual(warn[0]['level'], 'warn')
        self.assertTrue(warn[0]['addr'].startswith('0.0.0.0:'))
        self.assertEqual(d.stop(), 0)


class TestUserNamespace(DaemonRun):
    """In a user namespace (systemd's PrivateUsers=yes) the kernel names
    every sender outside the map 65534: an allowed id outside it could never
    match, and 65534 would admit them all. Both are refused, naming
    PrivateUsers; an id inside the map is fine."""

    def test_allowed_ids_the_kernel_cannot_name_are_refused(self):
        unshare = shutil.which('unshare')
        ns = [unshare, '--user', '--map-current-user'] if unshare else []
        if not ns or subprocess.run([*ns, 'true'], capture_output=True).returncode != 0:
            self.skipTest('no unprivileged user namespaces here')
        sock = f'unix:{self.tmpdir() / "events.sock"}'
        me, my_group = str(os.getuid()), str(os.getgid())
        for opt, ids in (('--allow-uid', ['4242', '65534']), ('--allow-gid', ['4242', '65534'])):
            for i in ids:
                with self.subTest(opt=opt, id=i):
                    p = self.run_daemon(['--listen', sock, opt, i, '--check-config'],
                                        prefix=ns)
                    self.assertNotEqual(p.returncode, 0, p.stderr)
                    self.assertIn('user namespace', p.stderr)
                    self.assertIn('PrivateUsers=no', p.stderr)
                    p = self.run_daemon(['--listen', sock, opt, i, '--check-config'])
                    self.assertEqual(p.returncode, 0, p.stderr)   # outside: fine
        p = self.run_daemon(['--listen', sock, '--allow-uid', me, '--allow-gid', my_group,
                             '--check-config'], prefix=ns)
        self.assertEqual(p.returncode, 0, p.stderr)


if __name__ == '__main__':
    unittest.main()

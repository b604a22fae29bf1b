"""First contact: what a new user meets in the first hour (issue 9).

The binary runs where it is built with no flags: the catalog is built in,
and the state and runtime paths follow the context (systemd, root, XDG or
HOME for other users). --check-config checks what a start would and says
"OK" only when the daemon would start. One daemon per spool directory; a
live stats socket is never taken over.

The unprivileged cases run as `nobody` through setpriv when the tests run as
root (as in CI), else as the current user; the root case runs in a private
mount namespace with empty /var and /run, so it never touches the host's
/var/lib/birdfeeder.
"""

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # tests/

import harness  # noqa: E402
from harness import (BirdfeederTestCase, Daemon, clean_env, send_json_lines,  # noqa: E402
                     wait_until, REPO_CATALOG, IMAGE, LLM)

NOBODY = 65534
INSTALLED_CATALOG = Path('/usr/local/share/birdfeeder/catalog.json')
# The context a test decides: nothing from the host's session leaks in.
NO_CONTEXT = {'STATE_DIRECTORY': None, 'RUNTIME_DIRECTORY': None, 'XDG_STATE_HOME': None,
              'XDG_RUNTIME_DIR': None, 'XDG_CONFIG_HOME': None, 'NOTIFY_SOCKET': None,
              'LISTEN_FDS': None, 'LISTEN_PID': None, 'BIRDFEEDER_CONFIG': None}


def events(n, tag):
    now = __import__('time').time()
    out = []
    for i in range(n):
        ds = IMAGE if i % 2 else LLM
        ev = {'dataset': ds, 'id': f'{tag}-{i}', 'model': 'flux' if ds == IMAGE else 'gpt-5-nano',
              'start_time': int(now * 1000) - 1000 + i}
        out.append(ev)
    return out


def stats_line(path, timeout=5):
    def once():
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(path))
            buf = b''
            while b'\n' not in buf:
                chunk = s.recv(65536)
                if not chunk:
                    raise ConnectionError('closed')
                buf += chunk
            return json.loads(buf.split(b'\n', 1)[0])
    return wait_until(once, timeout=timeout, msg=f'stats line from {path}',
                      ignore=(FileNotFoundError, ConnectionRefusedError))


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def catalog_in_use():
    return str(INSTALLED_CATALOG) if INSTALLED_CATALOG.exists() else 'built-in'


class FirstContactCase(BirdfeederTestCase):

    def unprivileged(self):
        """(prefix, home): run as nobody with a writable HOME when root, else
        as ourselves."""
        home = self.tmpdir('bf-home-')
        if os.geteuid() != 0:
            return [], home
        if not shutil.which('setpriv'):
            self.skipTest('setpriv (util-linux) not installed')
        os.chown(home, NOBODY, NOBODY)
        return ['setpriv', f'--reuid={NOBODY}', f'--regid={NOBODY}', '--clear-groups', '--'], home

    def run_daemon(self, args, env, prefix=(), timeout=15):
        harness._require(harness.DAEMON_BIN)
        return subprocess.run(list(prefix) + [str(harness.DAEMON_BIN), *args],
                              capture_output=True, text=True, timeout=timeout,
                              env=clean_env({**NO_CONTEXT, **env}), stdin=subprocess.DEVNULL)

    def paths_record(self, d):
        recs = d.log_records('paths')
        self.assertEqual(len(recs), 1, d.log())
        return recs[0]


class TestStartsAnywhere(FirstContactCase):

    def test_no_flags_file_sink_as_unprivileged_user(self):
        """No flags, no token, no install: the built-in catalog, state under
        ~/.local/state, the rows on stdout."""
        prefix, home = self.unprivileged()
        d = self.daemon([], env={**NO_CONTEXT, 'HOME': home,
                                 'BIRDFEEDER_LISTEN': '127.0.0.1:0',
                                 'BIRDFEEDER_FLUSH_INTERVAL_MS': '100'},
                        listen=None, stats_socket=False, private_defaults=False, prefix=prefix)
        state = home / '.local' / 'state' / 'birdfeeder'
        rec = self.paths_record(d)
        self.assertEqual(rec['context'], 'HOME')
        self.assertEqual(rec['state'], str(state))
        self.assertEqual(rec['runtime'], str(state / 'run'))
        self.assertEqual(rec['catalog'], catalog_in_use())
        self.assertEqual(rec['ip_hash_key_file'], str(state / 'ip-hash.key'))
        self.assertEqual(rec['stats_socket'], str(state / 'run' / 'stats.sock'))
        self.assertEqual(rec['spool_dir'], '-')
        evs = events(6, 'nf')
        p = send_json_lines(evs, d.port)
        self.assertEqual(p.returncode, 0, p.stderr)
        s = wait_until(lambda: (lambda s: s if s['rows_batched'][IMAGE] +
                                s['rows_batched'][LLM] >= 6 else None)(
                                    stats_line(state / 'run' / 'stats.sock')),
                       msg='6 rows batched')
        self.assertEqual(s['accepted_total'], 6)
        self.assertEqual(s['unknown_model'], 0)    # the built-in catalog knows them
        # `birdfeeder stats` finds the same socket by the same rules.
        p = subprocess.run(prefix + [str(harness.CLI_BIN), 'stats', '--once', '--json'],
                           capture_output=True, text=True, timeout=30,
                           env=clean_env({**NO_CONTEXT, 'HOME': home,
                                          'BIRDFEEDER_STATS_SOCKET': None}))
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(json.loads(p.stdout)['accepted_total'], 6)
        self.assertEqual(d.stop(), 0)
        rows = [json.loads(x) for x in (d.dir / 'stdout.log').read_text().splitlines()]
        self.assertEqual(sorted(r['id'] for r in rows), sorted(e['id'] for e in evs))
        self.assertTrue(all(r['provider'] != 'unknown' for r in rows), rows)
        self.assertEqual(mode(state), 0o700)
        self.assertEqual(mode(state / 'run'), 0o750)
        self.assertEqual(mode(state / 'ip-hash.key'), 0o600)
        if prefix:
            self.assertEqual(os.stat(state / 'ip-hash.key').st_uid, NOBODY)

    def test_token_and_url_only_as_unprivileged_user(self):
        """TINYBIRD_API_KEY and TINYBIRD_API_URL and nothing else: delivered,
        with the spool under the state directory, locked by this daemon."""
        prefix, home = self.unprivileged()
        tb = self.fake()
        d = self.daemon([], env={**NO_CONTEXT, 'HOME': home, 'TINYBIRD_API_KEY': tb.token,
                                 'TINYBIRD_API_URL': tb.url,
                                 'BIRDFEEDER_LISTEN': '127.0.0.1:0',
                                 'BIRDFEEDER_FLUSH_INTERVAL_MS': '100'},
                        listen=None, stats_socket=False, private_defaults=False, prefix=prefix)
        state = home / '.local' / 'state' / 'birdfeeder'
        rec = self.paths_record(d)
        self.assertEqual(rec['spool_dir'], str(state / 'spool'))
        evs = events(10, 'tok')
        send_json_lines(evs, d.port)
        tb.wait_rows(IMAGE, 5)
        tb.wait_rows(LLM, 5)
        got = sorted(r['id'] for ds in (IMAGE, LLM) for r in tb.rows(ds))
        self.assertEqual(got, sorted(e['id'] for e in evs))
        lock = state / 'spool' / 'lock'
        self.assertEqual(lock.read_text().strip(), str(self._daemon_pid(d, prefix)))
        self.assertEqual(mode(state / 'spool'), 0o700)
        self.assertEqual(d.stop(), 0)

    def _daemon_pid(self, d, prefix):
        # setpriv execs the daemon: same pid.
        return d.proc.pid

    def test_xdg_directories(self):
        prefix, home = self.unprivileged()
        xdg_state, xdg_run = home / 'xs', home / 'xr'
        for p in (xdg_state, xdg_run):
            p.mkdir()
            if prefix:
                os.chown(p, NOBODY, NOBODY)
        d = self.daemon([], env={**NO_CONTEXT, 'HOME': home, 'XDG_STATE_HOME': xdg_state,
                                 'XDG_RUNTIME_DIR': xdg_run,
                                 'BIRDFEEDER_LISTEN': '127.0.0.1:0'},
                        listen=None, stats_socket=False, private_defaults=False, prefix=prefix)
        rec = self.paths_record(d)
        self.assertEqual(rec['context'], 'XDG_STATE_HOME')
        self.assertEqual(rec['ip_hash_key_file'], str(xdg_state / 'birdfeeder' / 'ip-hash.key'))
        self.assertEqual(rec['stats_socket'], str(xdg_run / 'birdfeeder' / 'stats.sock'))
        self.assertTrue(stats_line(xdg_run / 'birdfeeder' / 'stats.sock'))
        self.assertEqual(d.stop(), 0)

    def test_explicit_flags_win(self):
        prefix, home = self.unprivileged()
        other = home / 'elsewhere'
        other.mkdir()
        if prefix:
            os.chown(other, NOBODY, NOBODY)
        d = self.daemon(['--ip-hash-key-file', str(other / 'k'),
                         '--stats-socket', str(other / 's.sock'),
                         '--catalog', str(REPO_CATALOG)],
                        env={**NO_CONTEXT, 'HOME': home}, stats_socket=False,
                        private_defaults=False, prefix=prefix)
        rec = self.paths_record(d)
        self.assertEqual(rec['ip_hash_key_file'], str(other / 'k'))
        self.assertEqual(rec['stats_socket'], str(other / 's.sock'))
        self.assertEqual(rec['catalog'], str(REPO_CATALOG))
        self.assertTrue((other / 'k').exists())
        # Nothing was made under HOME: the flags chose every path.
        self.assertFalse((home / '.local').exists())
        self.assertEqual(d.stop(), 0)

    def test_as_root_outside_systemd(self):
        """As root: /var/lib/birdfeeder (0700) and /run/birdfeeder (0750),
        created with their parents, here in a private mount namespace whose
        /var and /run start empty."""
        if os.geteuid() != 0:
            self.skipTest('needs root')
        if not shutil.which('unshare') or subprocess.run(
                ['unshare', '-m', '--propagation', 'private', 'true'],
                capture_output=True).returncode != 0:
            self.skipTest('unshare -m does not work here')
        tb = self.fake()
        # The shell forwards SIGTERM to the daemon, then shows what it made.
        script = ('mount -t tmpfs tmpfs /var && mount -t tmpfs tmpfs /run || exit 9; '
                  '"$0" "$@" & pid=$!; trap \'kill -TERM $pid\' TERM; wait $pid; '
                  'wait $pid; rc=$?; '
                  'stat -c "made=%n mode=%a" /var/lib /var/lib/birdfeeder '
                  '/var/lib/birdfeeder/spool /run/birdfeeder >&2; exit $rc')
        d = self.daemon([], env={**NO_CONTEXT, 'TINYBIRD_API_KEY': tb.token,
                                 'TINYBIRD_API_URL': tb.url,
                                 'BIRDFEEDER_LISTEN': '127.0.0.1:0',
                                 'BIRDFEEDER_FLUSH_INTERVAL_MS': '100'},
                        listen=None, stats_socket=False, private_defaults=False,
                        prefix=['unshare', '-m', '--propagation', 'private',
                                'sh', '-c', script])
        rec = self.paths_record(d)
        self.assertEqual(rec['context'], 'root')
        self.assertEqual(rec['state'], '/var/lib/birdfeeder')
        self.assertEqual(rec['runtime'], '/run/birdfeeder')
        self.assertEqual(rec['spool_dir'], '/var/lib/birdfeeder/spool')
        self.assertEqual(rec['stats_socket'], '/run/birdfeeder/stats.sock')
        self.assertEqual(rec['catalog'], 'built-in')   # the namespace hides no /usr
        evs = events(4, 'root')
        send_json_lines(evs, d.port)
        tb.wait_rows(IMAGE, 2)
        tb.wait_rows(LLM, 2)
        self.assertEqual(d.stop(), 0)
        made = {r['made']: r['mode'] for r in d.log_records() if 'made' in r}
        self.assertEqual(made, {'/var/lib': '755', '/var/lib/birdfeeder': '700',
                                '/var/lib/birdfeeder/spool': '700',
                                '/run/birdfeeder': '750'}, d.log())


class TestCheckConfig(FirstContactCase):
    """OK means the daemon will start; not OK names the first failure, and
    then the daemon does not start either."""

    def test_ok_changes_nothing(self):
        prefix, home = self.unprivileged()
        p = self.run_daemon(['--check-config'], {'HOME': home, 'TINYBIRD_API_KEY': 'x'},
                            prefix)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn('configuration OK', p.stdout)
        self.assertIn(f'catalog {catalog_in_use()}: ', p.stdout)
        self.assertIn(str(home / '.local' / 'state' / 'birdfeeder'), p.stdout)
        self.assertEqual(list(home.iterdir()), [])

    def assert_check_and_start_fail(self, args, env, what, *needles, prefix=()):
        p = self.run_daemon(list(args) + ['--check-config'], env, prefix)
        self.assertEqual(p.returncode, 1, p.stderr + p.stdout)
        self.assertNotIn('configuration OK', p.stdout)
        self.assertIn(f'check failed: {what}:', p.stderr)
        for n in needles:
            self.assertIn(n, p.stderr)
        env = {'BIRDFEEDER_LISTEN': '127.0.0.1:0', **env}
        s = self.run_daemon(list(args), env, prefix)
        self.assertEqual(s.returncode, 1, s.stderr)
        self.assertIn(f'event=start_failed what={what}', s.stderr)
        return p.stderr

    def test_state_directory_not_creatable(self):
        prefix, home = self.unprivileged()
        (home / 'file').write_text('x')
        self.assert_check_and_start_fail(
            [], {'HOME': home / 'file'}, 'ip_hash_key',
            str(home / 'file'), 'Not a directory', 'from HOME', 'XDG_STATE_HOME',
            prefix=prefix)

    def test_key_file_too_short(self):
        d = self.tmpdir()
        (d / 'k').write_text('short\n')
        (d / 'k').chmod(0o600)
        self.assert_check_and_start_fail(
            ['--ip-hash-key-file', str(d / 'k'), '--stats-socket', ''], {'HOME': d},
            'ip_hash_key', 'needs at least 16 bytes')

    def test_key_file_others_may_read(self):
        """Issue 11, finding 8: whoever reads the key can reverse ip_hash;
        --check-config and a start refuse it alike, naming mode and fix."""
        d = self.tmpdir()
        (d / 'k').write_text('0123456789abcdef0123456789abcdef\n')
        (d / 'k').chmod(0o644)
        self.assert_check_and_start_fail(
            ['--ip-hash-key-file', str(d / 'k'), '--stats-socket', ''], {'HOME': d},
            'ip_hash_key', 'mode 0644', 'chmod go-rwx')

    def test_bad_catalog(self):
        d = self.tmpdir()
        (d / 'c.json').write_text('{"models": {"m": {"provider": 7}}}')
        key = ['--ip-hash-key-file', str(d / 'k'), '--stats-socket', '']
        self.assert_check_and_start_fail(['--catalog', str(d / 'c.json')] + key, {'HOME': d},
                                         'catalog', "model 'm'")
        self.assert_check_and_start_fail(['--catalog', str(d / 'none.json')] + key,
                                         {'HOME': d}, 'catalog', 'No such file or directory')

    def test_bad_listen(self):
        d = self.tmpdir()
        p = self.run_daemon(['--listen', 'localhost', '--check-config'], {'HOME': d})
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("check failed: listen: option 'listen': 'localhost'", p.stderr)

    def test_spool_held_by_a_running_daemon(self):
        tb = self.fake()
        first = self.daemon([], tinybird=tb)
        spool = first.dir / 'spool'
        err = self.assert_check_and_start_fail(
            ['--spool-dir', str(spool), '--ip-hash-key-file', str(first.dir / 'ip-hash.key')],
            {'HOME': self.tmpdir(), 'TINYBIRD_API_KEY': 'x', 'BIRDFEEDER_STATS_SOCKET': ''},
            'spool', f'pid {first.proc.pid}', str(spool))
        self.assertIn('one daemon per spool directory', err)
        # The first one is untouched and still delivers.
        send_json_lines(events(2, 'still'), first.port)
        tb.wait_rows(IMAGE, 1)
        tb.wait_rows(LLM, 1)
        self.assertEqual(first.stop(), 0)
        # Once it is gone the directory is free again (the lock died with it).
        p = self.run_daemon(['--spool-dir', str(spool), '--check-config'],
                            {'HOME': self.tmpdir(), 'TINYBIRD_API_KEY': 'x'})
        self.assertEqual(p.returncode, 0, p.stderr)

    def test_stats_socket_problems_are_warnings(self):
        d = self.tmpdir()
        missing = d / 'no' / 'such' / 'stats.sock'
        p = self.run_daemon(['--stats-socket', str(missing), '--check-config'], {'HOME': d})
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn('warning', p.stderr)
        self.assertIn(f'{d}/no/such: No such file or directory', p.stderr)
        self.assertIn('configuration OK', p.stdout)

    def test_missing_config_file_names_path_and_reason(self):
        d = self.tmpdir()
        p = self.run_daemon(['--config', str(d / 'nope.json'), '--check-config'], {'HOME': d})
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn(f'config file {d}/nope.json: No such file or directory', p.stderr)
        self.assertNotIn(':-1:', p.stderr)
        p = self.run_daemon([], {'HOME': d, 'BIRDFEEDER_CONFIG': d / 'nope.json'})
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn(f'config file {d}/nope.json: No such file or directory', p.stderr)

    def test_help_says_which_catalog_and_directories(self):
        d = self.tmpdir()
        p = self.run_daemon(['--help'], {'HOME': d, 'XDG_STATE_HOME': d / 'xs'})
        self.assertEqual(p.returncode, 0, p.stderr)
        if os.geteuid() != 0:
            self.assertIn(f'<state> is {d}/xs/birdfeeder (from XDG_STATE_HOME)', p.stdout)
        else:
            self.assertIn('<state> is /var/lib/birdfeeder (from root)', p.stdout)
        want = (f'{INSTALLED_CATALOG} (installed)' if INSTALLED_CATALOG.exists()
                else 'the built-in one')
        self.assertIn(f'the catalog without --catalog is {want}', p.stdout)


class TestOneDaemonPerPlace(FirstContactCase):

    def test_second_daemon_on_the_same_spool_refuses_to_start(self):
        tb = self.fake()
        first = self.daemon([], tinybird=tb)
        second = Daemon(['--spool-dir', str(first.dir / 'spool')], tinybird=tb, start=False)
        self.addCleanup(second.cleanup)
        with self.assertRaises(AssertionError):
            second.start()          # exits before listening
        self.assertEqual(second.proc.returncode, 1)
        fail = second.log_records('start_failed')
        self.assertEqual(len(fail), 1, second.log())
        self.assertEqual(fail[0]['what'], 'spool')
        self.assertIn(f'in use by birdfeederd pid {first.proc.pid}', fail[0]['error'])
        self.assertEqual(first.stop(), 0)

    def test_second_daemon_keeps_off_a_live_stats_socket(self):
        tb = self.fake()
        first = self.daemon([], tinybird=tb)
        inode = os.stat(first.stats_path).st_ino
        second = self.daemon(['--stats-socket', str(first.stats_path)], tinybird=tb,
                             stats_socket=False)
        failed = second.log_records('stats_socket_failed')
        self.assertEqual(len(failed), 1, second.log())
        self.assertIn('a running daemon answers on it', failed[0]['error'])
        self.assertEqual(os.stat(first.stats_path).st_ino, inode)
        self.assertTrue(first.stats())
        self.assertEqual(second.stop(), 0)      # and its stop leaves it alone too
        self.assertEqual(os.stat(first.stats_path).st_ino, inode)
        self.assertTrue(first.stats())
        self.assertEqual(first.stop(), 0)

    def test_stats_socket_in_a_missing_directory_names_the_cause(self):
        d = self.tmpdir()
        sock = d / 'missing' / 'stats.sock'
        dm = self.daemon(['--stats-socket', str(sock)], stats_socket=False)
        failed = dm.log_records('stats_socket_failed')
        self.assertEqual(len(failed), 1, dm.log())
        self.assertIn(f'{d}/missing: No such file or directory', failed[0]['error'])
        self.assertNotIn('ermission', failed[0]['error'])
        self.assertEqual(dm.stop(), 0)


if __name__ == '__main__':
    unittest.main()

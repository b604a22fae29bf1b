"""--stats-socket-group: operators read stats without root.

The socket is mode 0660; with a group it belongs to that group, so a member
runs `birdfeeder stats` as themselves. Checked end to end as the user
`nobody` (group `nogroup` on Debian): refused by the socket of root's group,
served by the socket given to `nogroup`. Those parts need root (to run the
daemon and then the client as another user) and skip otherwise.
"""
import grp
import json
import os
import stat
import subprocess
import sys
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from harness import (CLI_BIN, DAEMON_BIN, BirdfeederTestCase, clean_env,  # noqa: E402
                     wait_until)

ROOT = os.geteuid() == 0


def group_gid(name):
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


def as_nobody():
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)


class TestStatsSocketGroup(BirdfeederTestCase):

    def socket_stat(self, d):
        wait_until(lambda: d.stats_path.exists(), msg='stats socket')
        return os.stat(d.stats_path)

    def stats_as_nobody(self, d):
        """`birdfeeder stats --json --once` run as nobody:nogroup."""
        d.dir.chmod(0o711)  # nobody may reach the socket, not list the dir
        return subprocess.run([str(CLI_BIN), 'stats', '--socket', str(d.stats_path),
                               '--json', '--once'], capture_output=True, text=True,
                              timeout=20, env=clean_env(), preexec_fn=as_nobody)

    @unittest.skipUnless(ROOT, 'needs root: runs the client as nobody')
    def test_a_member_of_the_group_reads_stats_and_others_do_not(self):
        nogroup = group_gid('nogroup')
        if nogroup is None:
            self.skipTest('no group nogroup on this host')
        d = self.daemon(['--stats-socket-group', 'nogroup'])
        st = self.socket_stat(d)
        self.assertEqual(st.st_gid, nogroup)
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o660)
        p = self.stats_as_nobody(d)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn('received', json.loads(p.stdout))
        self.assertEqual(d.log_records('paths')[0]['stats_socket_group'], 'nogroup')

        # Without a group the socket is root's: nobody is refused, and told why.
        d2 = self.daemon(['--stats-socket-group', ''])
        st = self.socket_stat(d2)
        self.assertEqual(st.st_gid, os.getegid())
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o660)
        p = self.stats_as_nobody(d2)
        self.assertEqual(p.returncode, 1)
        self.assertIn('Permission denied', p.stderr)
        self.assertIn('usermod -aG', p.stderr)

    def test_by_number_too(self):
        gid = os.getegid() if not ROOT else 65534
        d = self.daemon(['--stats-socket-group', str(gid)])
        self.assertEqual(self.socket_stat(d).st_gid, gid)

    def test_default_is_birdfeeder_when_the_group_exists(self):
        d = self.daemon()
        st = self.socket_stat(d)
        gid = group_gid('birdfeeder')
        paths = d.log_records('paths')[0]
        if gid is None:  # no such group here: the socket keeps the daemon's
            self.assertEqual(st.st_gid, os.getegid())
            self.assertEqual(paths['stats_socket_group'], '-')
        else:
            self.assertEqual(st.st_gid, gid)
            self.assertEqual(paths['stats_socket_group'], 'birdfeeder')
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o660)

    def test_an_unknown_group_is_a_configuration_error(self):
        p = subprocess.run([str(DAEMON_BIN), '--stats-socket-group', 'no-such-group-x',
                            '--check-config'], capture_output=True, text=True, timeout=10,
                           env=clean_env())
        self.assertEqual(p.returncode, 2, p.stdout)
        self.assertIn("option 'stats-socket-group': no group 'no-such-group-x'", p.stderr)

    @unittest.skipUnless(ROOT, 'needs root: runs the daemon as nobody')
    def test_a_group_the_daemon_is_not_in_is_logged_and_it_runs(self):
        # As nobody, giving the socket to root's group is not allowed.
        tmp = self.tmpdir()
        tmp.chmod(0o777)
        wrapper = tmp / 'as-nobody.sh'
        wrapper.write_text('#!/bin/sh\nexec setpriv --reuid=nobody --regid=nogroup '
                           f'--clear-groups {DAEMON_BIN} "$@"\n')
        wrapper.chmod(0o755)
        if subprocess.run(['setpriv', '--version'], capture_output=True).returncode != 0:
            self.skipTest('no setpriv')
        d = self.daemon_in_open_dir(wrapper)
        failed = wait_until(lambda: d.log_records('stats_socket_group_failed'),
                            msg='stats_socket_group_failed')
        self.assertEqual(failed[0]['level'], 'error')
        self.assertIn('not in that group', failed[0]['error'])
        self.assertEqual(self.socket_stat(d).st_gid, 65534)
        self.assertIn('received', d.stats())

    def daemon_in_open_dir(self, wrapper):
        """A daemon run through wrapper (as nobody) whose temp dir nobody can
        write: the harness makes it 0700 for root, so open it first."""
        import harness
        real = harness._short_tmpdir

        def opened(prefix='bf-'):
            p = real(prefix)
            os.chmod(p, 0o777)
            return p
        harness._short_tmpdir = opened
        try:
            return self.daemon(['--stats-socket-group', 'root'], binary=wrapper)
        finally:
            harness._short_tmpdir = real


if __name__ == '__main__':
    unittest.main()

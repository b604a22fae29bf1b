"""The bench programs refuse a command line they do not understand.

`make bench` and `make fleet-sim` drive tests/bench/*.c with "--name value"
pairs. A flag a program does not know (--help, a typo), or a name without its
value, must print the usage and exit 2 without doing anything: before,
`bench-sender --help` fell through to the defaults and sent for 5 s to
127.0.0.1:8190, where a developer's own daemon may be listening.

Run from the repo root:
    BIRDFEEDER_BUILD_DIR=build python3 -m unittest tests.integration.test_bench_tools -v
"""

import socket
import subprocess
import sys
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import BUILD, _require as harness_require  # noqa: E402

# make test builds every bench program (before, a binary not built was skipped, so
# CI checked only the sender, and a stale one from an older build was tested).
# Each: a valid pair to start with (None: --to the catcher), and a flag it knows.
TOOLS = {'sender': (None, '--rate'), 'loadgen': (None, '--count'), 'shim': (None, '--count'),
         'receiver': (('--listen', '127.0.0.1:0'), '--rcvbuf'),
         'payload': (('--format', 'binary'), '--count'),
         'stages': (('--payload', '/dev/null'), '--passes')}


def tool_path(name):
    """build/bench-NAME; a missing one fails under make test
    (BIRDFEEDER_REQUIRE_BINARIES=1) and is skipped elsewhere."""
    path = BUILD / f'bench-{name}'
    harness_require(str(path))
    return path


class TestBenchArgs(unittest.TestCase):

    def setUp(self):
        # A catcher for anything sent despite the refusal.
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(self.sock.close)
        self.sock.bind(('127.0.0.1', 0))
        self.sock.setblocking(False)
        self.to = '127.0.0.1:%d' % self.sock.getsockname()[1]

    def assert_refused(self, tool, *args):
        try:
            p = subprocess.run([str(tool_path(tool)), *args], capture_output=True,
                               text=True, timeout=20)
        except subprocess.TimeoutExpired:
            self.fail(f'bench-{tool} {" ".join(args)} ran instead of refusing')
        self.assertEqual(p.returncode, 2, (tool, args, p.stdout, p.stderr))
        self.assertIn('usage:', p.stderr, (tool, args))
        self.assertEqual(p.stdout, '', (tool, args))
        with self.assertRaises(BlockingIOError, msg=(tool, args)):
            self.sock.recv(65536)

    def test_help_unknown_and_dangling_flags_are_refused(self):
        for tool, (pair, known) in TOOLS.items():
            pair = pair or ('--to', self.to)
            with self.subTest(tool=tool):
                # The last argument is the bad one, after a valid pair.
                self.assert_refused(tool, *pair, '--help')
                self.assert_refused(tool, *pair, '--no-such-flag', '1')
                self.assert_refused(tool, *pair, known)

    def test_gzip_wants_its_file_first(self):
        tool_path('gzip')
        self.assert_refused('gzip', '--help')
        self.assert_refused('gzip', '/dev/null', '--rounds')
        self.assert_refused('gzip', '/dev/null', '--level', '1')


if __name__ == '__main__':
    unittest.main()

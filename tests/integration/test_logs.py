"""Logs for operators: syslog priorities under journald, --log-format json.

journald is not running in the test sandbox, so the filtering of
`journalctl -u birdfeeder -p warning` is checked by its rule instead: journald
reads a leading "<N>" on each line of a service's stream as its PRIORITY
(SyslogLevelPrefix=yes, the default) and `-p warning` keeps PRIORITY <= 4.
The daemon is started with its stderr on a file and JOURNAL_STREAM naming
that file (device:inode), as systemd names the journal's stream.
"""
import json
import os
import stat
import sys
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from harness import (DAEMON_BIN, BirdfeederTestCase, parse_log_line,  # noqa: E402
                     send_raw, wait_until)

LEVEL_PRIORITY = {'debug': 7, 'info': 6, 'warn': 4, 'error': 3}
WARNING = 4  # journalctl -p warning


def journal_filter(lines, max_priority):
    """What `journalctl -p max_priority` shows of a service's stream: lines
    whose '<N>' prefix is at most max_priority (journald's rule; a line
    without a prefix gets the stream's default, info)."""
    out = []
    for line in lines:
        rec = parse_log_line(line)
        if rec.get('_priority', 6) <= max_priority:
            out.append(rec)
    return out


class LogTestCase(BirdfeederTestCase):

    def journal_wrapper(self, stream=None):
        """A script that starts birdfeederd with JOURNAL_STREAM set to its own
        stderr (device:inode), or to `stream` when given."""
        d = self.tmpdir()
        w = d / 'under-journal.sh'
        value = f"'{stream}'" if stream else '$(stat -L -c %d:%i /proc/self/fd/2)'
        w.write_text('#!/bin/sh\n'
                     f'JOURNAL_STREAM={value}\n'
                     'export JOURNAL_STREAM\n'
                     f'exec {DAEMON_BIN} "$@"\n')
        w.chmod(w.stat().st_mode | stat.S_IXUSR)
        return w

    def events_at_every_level(self, d):
        """An info line (listening, at start), a warn (a rejected
        datagram), an error (the stats socket cannot be made: see args)."""
        send_raw(b'not an event', d.port)
        wait_until(lambda: d.log_records('reject'), msg='reject logged')


class TestJournalPriorities(LogTestCase):

    ARGS = ['--stats-socket', '/nonexistent-dir/stats.sock']  # an error line

    def test_every_line_carries_its_priority_and_warning_filter_keeps_warn_and_error(self):
        d = self.daemon(self.ARGS, binary=self.journal_wrapper(), stats_socket=False)
        self.events_at_every_level(d)
        d.stop()
        lines = d.log().splitlines()
        self.assertGreater(len(lines), 3)
        for line in lines:
            rec = parse_log_line(line)
            self.assertIn('_priority', rec, f'no priority prefix: {line!r}')
            self.assertEqual(rec['_priority'], LEVEL_PRIORITY[rec['level']], line)
        shown = journal_filter(lines, WARNING)
        events = {r['event'] for r in shown}
        self.assertIn('reject', events)
        self.assertIn('stats_socket_failed', events)
        self.assertTrue(all(r['level'] in ('warn', 'error') for r in shown), shown)
        hidden = [parse_log_line(x) for x in lines if parse_log_line(x) not in shown]
        self.assertIn('listening', {r['event'] for r in hidden})
        self.assertTrue(all(r['level'] in ('info', 'debug') for r in hidden), hidden)

    def test_json_lines_carry_the_prefix_too(self):
        d = self.daemon(self.ARGS + ['--log-format', 'json'], binary=self.journal_wrapper(),
                        stats_socket=False)
        self.events_at_every_level(d)
        for line in d.log().splitlines():
            self.assertRegex(line, r'^<[3467]>\{')
            rec = parse_log_line(line)
            self.assertEqual(rec['_priority'], LEVEL_PRIORITY[rec['level']], line)

    def test_no_prefix_when_stderr_is_not_the_journal_stream(self):
        # JOURNAL_STREAM inherited from a parent whose stderr was the journal,
        # while ours goes to a file: the prefix would end up in the file.
        d = self.daemon(self.ARGS, binary=self.journal_wrapper('8:12345'),
                        stats_socket=False)
        self.events_at_every_level(d)
        for line in d.log().splitlines():
            self.assertTrue(line.startswith('ts='), line)

    def test_no_prefix_without_journal(self):
        d = self.daemon()
        for line in d.log().splitlines():
            self.assertTrue(line.startswith('ts='), line)


class TestJsonFormat(LogTestCase):

    def test_every_line_is_one_json_object_with_the_fields(self):
        d = self.daemon(['--log-format', 'json'])
        send_raw(b'{"ds":"nope"}', d.port)
        wait_until(lambda: d.log_records('reject'), msg='reject logged')
        d.stop()
        recs = []
        for line in d.log().splitlines():
            rec = json.loads(line)  # every line, no prefix outside journald
            self.assertEqual(list(rec)[:3], ['ts', 'level', 'event'], line)
            self.assertTrue(all(isinstance(v, str) for v in rec.values()), line)
            recs.append(rec)
        listening = [r for r in recs if r['event'] == 'listening']
        self.assertEqual(listening[0]['addr'], f'127.0.0.1:{d.port}')
        reject = [r for r in recs if r['event'] == 'reject'][0]
        self.assertEqual(reject['level'], 'warn')
        self.assertIn('reason', reject)
        self.assertTrue([r for r in recs if r['event'] == 'stopped'])

    def test_lines_logged_while_the_config_is_read_follow_it(self):
        # --token on the command line is warned about inside config_load,
        # before the format is known: held until it is.
        d = self.daemon(['--log-format', 'json', '--token', 'x', '--tinybird-url',
                         'http://127.0.0.1:9'])
        first = d.log().splitlines()[0]
        self.assertEqual(json.loads(first)['event'], 'token_on_command_line')

    def test_bad_log_format_is_a_config_error(self):
        import subprocess
        p = subprocess.run([str(DAEMON_BIN), '--log-format', 'yaml', '--check-config'],
                           capture_output=True, text=True, timeout=10)
        self.assertEqual(p.returncode, 2)
        self.assertIn("option 'log-format': 'yaml' is not text or json", p.stderr)


if __name__ == '__main__':
    unittest.main()

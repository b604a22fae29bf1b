"""The Kafka sink (issue 13): real birdfeederd producing to librdkafka's mock
cluster (build/kafka-mock, 3 brokers, 3 partitions a topic), rows read back
with kcat and checked by id.

Faults come from the mock's own injection API: Produce requests answered
with errors, brokers going down, a topic the producer may not write.  Every
test asserts the exact set of ids that reached the topics (or were counted
as dropped, by name) and counts duplicates, which the test allows only where
docs/delivery.md says they happen.  Figures are printed at the end.

Run from the repo root (after `make all build/kafka-mock`):
    python3 -m unittest tests/integration/test_kafka.py -v
"""

import collections
import json
import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import time
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # tests/

import harness  # noqa: E402
from harness import (BirdfeederTestCase, send_json_lines, stat_at_least,  # noqa: E402
                     validate_row_columns, wait_until, IMAGE, LLM, DATASETS)

KAFKA_MOCK = harness.BUILD / 'kafka-mock'
KCAT = shutil.which('kcat') or shutil.which('kafkacat')

# Kafka error codes (rdkafka.h) used for injection.
NOT_LEADER_FOR_PARTITION = 6
REQUEST_TIMED_OUT = 7
NOT_ENOUGH_REPLICAS = 19
MESSAGE_TOO_LARGE = 10
TOPIC_AUTHORIZATION_FAILED = 29
PRODUCE = 0                                # ApiKey

figure = harness.Figures('test_kafka')


def tearDownModule():
    figure.print_all()


T0 = (int(time.time()) - 3600) * 1000   # an hour ago: inside --max-event-age


def events(prefix, n):
    """n events, image and llm alternating, ids prefix0..prefix<n-1>."""
    out = []
    for i in range(n):
        ev = {'dataset': LLM if i % 2 else IMAGE, 'id': f'{prefix}{i}', 'model': 'flux',
              'user_id': f'user-{i % 7}', 'prompt': f'a bird number {i}',
              'start_time': T0 + i, 'end_time': T0 + 1000 + i}
        if i % 2:
            ev.update(model='gpt-5-nano', prompt_tokens=100 + i, completion_tokens=50 + i)
            del ev['prompt']
        out.append(ev)
    return out


class KafkaMock:
    """build/kafka-mock: a 3-broker mock cluster; commands over its stdin."""

    def __init__(self, topics=DATASETS, brokers=3, partitions=3, timeout=10):
        if not KAFKA_MOCK.is_file():
            if os.environ.get('BIRDFEEDER_REQUIRE_BINARIES') == '1':
                raise FileNotFoundError(f"{KAFKA_MOCK} not built (make {KAFKA_MOCK})")
            raise unittest.SkipTest(f"{KAFKA_MOCK} not built")
        if not KCAT:
            if os.environ.get('BIRDFEEDER_REQUIRE_BINARIES') == '1':
                raise FileNotFoundError("kcat is not installed (make deps installs it)")
            raise unittest.SkipTest("kcat is not installed (make deps)")
        self.timeout = timeout
        self.proc = subprocess.Popen(
            [str(KAFKA_MOCK), '--brokers', str(brokers), '--partitions', str(partitions),
             '--topics', ','.join(topics)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self._line()
        m = re.fullmatch(r'bootstrap (\S+)', line)
        if not m:
            self.stop()
            raise AssertionError(f"kafka-mock printed {line!r}")
        self.bootstrap = m.group(1)

    def _line(self):
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        try:
            if not sel.select(self.timeout):
                raise AssertionError("kafka-mock did not answer")
        finally:
            sel.close()
        return self.proc.stdout.readline().strip()

    def cmd(self, *words):
        self.proc.stdin.write(' '.join(map(str, words)) + '\n')
        self.proc.stdin.flush()
        answer = self._line()
        if answer != 'ok':
            raise AssertionError(f"kafka-mock {words}: {answer!r}")

    def down(self, *brokers):
        for b in brokers:
            self.cmd('down', b)

    def up(self, *brokers):
        for b in brokers:
            self.cmd('up', b)

    def messages(self, topic):
        """[(partition, key, row dict)] of every message in topic."""
        p = subprocess.run([KCAT, '-C', '-b', self.bootstrap, '-t', topic, '-o', 'beginning',
                            '-e', '-q', '-f', '%p\t%k\t%s\n'],
                           capture_output=True, text=True, timeout=30)
        if p.returncode != 0:
            raise AssertionError(f"kcat: {p.returncode}: {p.stderr}")
        out = []
        for line in p.stdout.splitlines():
            if line.strip():
                part, key, value = line.split('\t', 2)
                out.append((int(part), key, json.loads(value)))
        return out

    def stop(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=10)
            except (subprocess.TimeoutExpired, BrokenPipeError):
                self.proc.kill()
                self.proc.wait()
        for f in (self.proc.stdout, self.proc.stderr):
            if f and not f.closed:
                f.close()


class KafkaTestCase(BirdfeederTestCase):

    def mock(self, **kw):
        m = KafkaMock(**kw)
        self.addCleanup(m.stop)
        return m

    def kafka_daemon(self, mock, *extra, spool=None):
        args = ['--kafka-brokers', mock.bootstrap, '--flush-interval-ms', '100',
                '--backoff-min-ms', '100', '--backoff-max-ms', '400', *extra]
        if spool:
            args += ['--spool-dir', str(spool)]
        return self.daemon(args)

    def read_back(self, mock, prefix=''):
        """{id: [partition, ...]} over both topics, each row checked: the key
        is its id, and it has every column of its dataset, typed."""
        got = collections.defaultdict(list)
        for ds in DATASETS:
            for part, key, row in mock.messages(prefix + ds):
                self.assertEqual(key, row['id'], "a message's key is its row's id")
                validate_row_columns(row, ds)
                got[row['id']].append(part)
        return got

    def assert_delivered(self, mock, ids, prefix='', dup_ok=False):
        got = wait_until(lambda: (lambda g: g if set(g) >= set(ids) else None)(
            self.read_back(mock, prefix)), timeout=30, msg="every id in the topics")
        self.assertEqual(set(got), set(ids), "ids in the topics are exactly those sent")
        dups = sum(len(v) - 1 for v in got.values())
        for i, parts in got.items():
            self.assertEqual(len(set(parts)), 1, f"{i}: every copy in one partition")
        if not dup_ok:
            self.assertEqual(dups, 0, "duplicates")
        return got, dups


class TestKafka(KafkaTestCase):

    def test_rows_by_id_to_dataset_topics(self):
        """Each row is one message keyed by id, in the topic named after its
        dataset (with --kafka-topic-prefix); nothing lost, nothing doubled."""
        prefix = 'bf.'
        mock = self.mock(topics=[prefix + ds for ds in DATASETS])
        d = self.kafka_daemon(mock, '--kafka-topic-prefix', prefix)
        evs = events('k', 400)
        send_json_lines(evs, d.port)
        s = wait_until(stat_at_least(d, 'rows_delivered_total', 400), timeout=30)
        got, _ = self.assert_delivered(mock, [e['id'] for e in evs], prefix)
        self.assertEqual(s['kafka_messages'], 400)
        self.assertEqual(s['dropped_total'], 0)
        by_ds = collections.Counter(e['dataset'] for e in evs)
        for ds in DATASETS:
            self.assertEqual(len(mock.messages(prefix + ds)), by_ds[ds])
        parts = collections.Counter(p[0] for p in got.values())
        self.assertEqual(len(parts), 3, "ids spread over the 3 partitions")
        self.assertEqual(d.stop(), 0)
        figure('rows_by_id', sent=400, read_back=len(got), partitions=dict(parts))

    def test_produce_errors_are_retried_without_loss(self):
        """Produce requests answered with retriable errors (not leader, timed
        out, not enough replicas): librdkafka's idempotent producer sends
        them again; every row arrives once."""
        mock = self.mock()
        mock.cmd('errors', PRODUCE, *([NOT_LEADER_FOR_PARTITION, REQUEST_TIMED_OUT,
                                       NOT_ENOUGH_REPLICAS] * 4))
        d = self.kafka_daemon(mock)
        evs = events('e', 300)
        send_json_lines(evs, d.port)
        wait_until(stat_at_least(d, 'rows_delivered_total', 300), timeout=30)
        got, dups = self.assert_delivered(mock, [e['id'] for e in evs])
        self.assertEqual(d.stats()['dropped_total'], 0)
        self.assertEqual(d.stop(), 0)
        figure('produce_errors', sent=300, injected=12, read_back=len(got), duplicates=dups)

    def test_one_broker_down_retries_its_rows_only(self):
        """A broker down past message.timeout.ms: the rows of the partitions it
        leads fail their delivery reports and go back through the policy;
        the next attempt produces those rows only, so when the broker is back
        every row is there exactly once (a whole-batch retry would double the
        rows of the other partitions)."""
        mock = self.mock()
        d = self.kafka_daemon(mock, '--kafka-property', 'message.timeout.ms=800')
        send_json_lines(events('w', 30), d.port)          # connected, leaders known
        wait_until(stat_at_least(d, 'rows_delivered_total', 30), timeout=30)
        mock.down(1)
        evs = events('b', 300)
        send_json_lines(evs, d.port)
        s = wait_until(stat_at_least(d, 'kafka_delivery_errors', 1), timeout=30,
                       msg="delivery reports failed while broker 1 is down")
        wait_until(stat_at_least(d, 'retries', 2), timeout=30)
        mock.up(1)
        s = wait_until(stat_at_least(d, 'rows_delivered_total', 330), timeout=60)
        got, dups = self.assert_delivered(mock, [e['id'] for e in events('w', 30) + evs])
        self.assertEqual(s['dropped_total'], 0)
        self.assertEqual(s['rows_delivered_total'], 330)
        self.assertEqual(d.stop(), 0)
        figure('one_broker_down', sent=330, delivered=s['rows_delivered_total'],
               failed_reports=s['kafka_delivery_errors'], retries=s['retries'],
               messages=s['kafka_messages'], duplicates=dups)

    def test_all_brokers_down_then_back(self):
        """The whole cluster away for a while: batches back off and probe, one
        at a time; when it returns every row arrives."""
        mock = self.mock()
        d = self.kafka_daemon(mock, '--kafka-property', 'message.timeout.ms=600')
        mock.down(1, 2, 3)
        evs = events('a', 200)
        send_json_lines(evs, d.port)
        wait_until(stat_at_least(d, 'retries', 3), timeout=30)
        mock.up(1, 2, 3)
        s = wait_until(stat_at_least(d, 'rows_delivered_total', 200), timeout=60)
        got, dups = self.assert_delivered(mock, [e['id'] for e in evs], dup_ok=True)
        self.assertEqual(s['dropped_total'], 0)
        self.assertEqual(d.stop(), 0)
        figure('all_brokers_down', sent=200, delivered=s['rows_delivered_total'],
               retries=s['retries'], failed_reports=s['kafka_delivery_errors'],
               duplicates=dups)

    def test_shutdown_spools_and_the_next_run_delivers(self):
        """SIGTERM while the cluster is down: librdkafka's queue is purged at
        the deadline, the rows are spooled, and the next run sends them."""
        mock = self.mock()
        spool = self.tmpdir()
        d = self.kafka_daemon(mock, '--shutdown-timeout-ms', '1000', spool=spool)
        mock.down(1, 2, 3)
        evs = events('s', 120)
        send_json_lines(evs, d.port)
        wait_until(stat_at_least(d, 'kafka_messages', 120), timeout=30)
        t0 = time.monotonic()
        self.assertEqual(d.stop(), 0)
        stop_s = time.monotonic() - t0
        stopped = d.log_records('stopped')[-1]
        self.assertEqual(int(stopped['spooled']), 120)
        self.assertEqual(int(stopped['dropped']), 0)
        mock.up(1, 2, 3)
        d2 = self.kafka_daemon(mock, spool=spool)
        s = wait_until(stat_at_least(d2, 'rows_delivered_total', 120), timeout=30)
        got, dups = self.assert_delivered(mock, [e['id'] for e in evs])
        self.assertEqual(s['rows_replayed'], 120)
        self.assertEqual(d2.stop(), 0)
        figure('shutdown_spool', sent=120, spooled=stopped['spooled'],
               stop_s=f"{stop_s:.2f}", replayed=s['rows_replayed'], duplicates=dups)

    def test_memory_cap_covers_librdkafkas_queue(self):
        """The cluster down and more rows arriving than --max-memory holds:
        the account (batches, and what librdkafka holds for each message
        produced) never passes the cap (the daemon's peak), the batches past
        it go to the spool, and when the cluster is back every row arrives.
        (That librdkafka's share is reserved before anything is produced is
        test_sink_kafka.c's test_sink_kafka_waits_for_memory.)"""
        mock = self.mock()
        spool = self.tmpdir()
        cap = 2 * 1024 * 1024
        d = self.kafka_daemon(mock, '--max-memory', str(cap), '--flush-bytes', '131072',
                              '--kafka-property', 'message.timeout.ms=800', spool=spool)
        mock.down(1, 2, 3)
        evs = events('m', 8000)      # about 4 MB of rows, twice the cap
        for i in range(0, len(evs), 1000):
            send_json_lines(evs[i:i + 1000], d.port)
        s = wait_until(stat_at_least(d, 'rows_spooled', 1), timeout=30, msg="spooled")
        s = wait_until(lambda: (lambda st: st if st['accepted_total'] >= len(evs) else None)(
            d.stats()), timeout=30, msg="every event accepted")
        self.assertLessEqual(s['memory_peak_bytes'], cap)
        self.assertGreater(s['memory_peak_bytes'], cap // 2, "the cap was never pressed")
        mock.up(1, 2, 3)
        s = wait_until(stat_at_least(d, 'rows_delivered_total', len(evs)), timeout=120)
        got, dups = self.assert_delivered(mock, [e['id'] for e in evs], dup_ok=True)
        self.assertEqual(s['dropped_total'], 0, s['dropped'])
        self.assertLessEqual(d.stats()['memory_peak_bytes'], cap)
        self.assertEqual(d.stop(), 0)
        figure('memory_cap', sent=len(evs), cap=cap, peak=s['memory_peak_bytes'],
               spooled=s['rows_spooled'], read_back=len(got), duplicates=dups)

    def test_refused_producer_holds_the_rows_until_allowed(self):
        """Produce requests answered "topic authorization failed": the
        producer, not the rows, is refused, so the dataset is held (no row
        dropped, sink_state unauthorized with a hint naming the topic) and
        probed; once the broker takes rows again every row arrives once."""
        mock = self.mock()
        mock.cmd('errors', PRODUCE, *([TOPIC_AUTHORIZATION_FAILED] * 200))
        d = self.kafka_daemon(mock, '--kafka-property', 'topic.metadata.refresh.interval.ms=1000')
        evs = [e for e in events('h', 80) if e['dataset'] == IMAGE]
        send_json_lines(evs, d.port)
        s = wait_until(stat_at_least(d, 'holds', 1), timeout=30)
        s = wait_until(lambda: (lambda s: s if s['sink_state'] == 'unauthorized' else None)(
            d.stats()), timeout=30)
        self.assertIn('topic image_events', s['sink_hint'])
        self.assertIn('WRITE', s['sink_hint'])
        self.assertEqual(s['dropped_total'], 0)
        self.assertEqual(s['rows_delivered_total'], 0)
        mock.cmd('clear', PRODUCE)
        s = wait_until(stat_at_least(d, 'rows_delivered_total', 40), timeout=60)
        got, dups = self.assert_delivered(mock, [e['id'] for e in evs])
        self.assertEqual(s['dropped_total'], 0)
        self.assertEqual(d.stats()['sink_state'], 'ok')
        self.assertEqual(d.stop(), 0)
        figure('held_unauthorized', sent=40, holds=s['holds'], dropped=0,
               then_delivered=s['rows_delivered_total'], duplicates=dups)

    def test_rows_refused_for_good_are_counted_and_dead_lettered(self):
        """Produce requests refused for good (message too large): the rows
        are counted as dropped.kafka_rejected and, the whole batch refused,
        kept in the dead-letter file; other batches flow once the broker
        takes rows again."""
        mock = self.mock()
        mock.cmd('errors', PRODUCE, *([MESSAGE_TOO_LARGE] * 200))
        spool = self.tmpdir()
        d = self.kafka_daemon(mock, spool=spool)
        refused = [e for e in events('r', 80) if e['dataset'] == IMAGE]
        send_json_lines(refused, d.port)
        s = wait_until(stat_at_least(d, 'rows_dead_lettered', 40), timeout=30)
        self.assertEqual(s['dropped']['kafka_rejected'], 40)
        self.assertEqual(s['rows_delivered_total'], 0)
        dead = [json.loads(x) for x in (spool / 'dead-letter.ndjson').read_text().splitlines()]
        self.assertEqual({r['id'] for r in dead if 'id' in r}, {e['id'] for e in refused})
        self.assertTrue(d.log_records('kafka_refused'), "the refusal is logged")
        mock.cmd('clear', PRODUCE)
        ok = events('o', 60)
        send_json_lines(ok, d.port)
        s = wait_until(stat_at_least(d, 'rows_delivered_total', 60), timeout=30)
        self.assert_delivered(mock, [e['id'] for e in ok])
        self.assertEqual(s['dropped']['kafka_rejected'], 40)
        self.assertEqual(d.stop(), 0)
        figure('refused_rows', refused=40, dead_lettered=s['rows_dead_lettered'],
               then_delivered=s['rows_delivered_total'])

    def test_partly_refused_batch_delivers_the_rest(self):
        """One Produce request refused for good, the others taken: the
        refused rows of the batch are counted (dropped.kafka_rejected), the
        rest delivered once; delivered plus dropped is what was sent."""
        mock = self.mock()
        d = self.kafka_daemon(mock)
        send_json_lines(events('w', 20), d.port)          # connected, leaders known
        wait_until(stat_at_least(d, 'rows_delivered_total', 20), timeout=30)
        mock.cmd('errors', PRODUCE, MESSAGE_TOO_LARGE)
        evs = [e for e in events('p', 240) if e['dataset'] == IMAGE]
        send_json_lines(evs, d.port)
        s = wait_until(lambda: (lambda s: s if s['rows_delivered_total'] - 20 +
                                s['dropped_total'] >= 120 else None)(d.stats()), timeout=30)
        dropped = s['dropped']['kafka_rejected']
        self.assertGreater(dropped, 0)
        self.assertLess(dropped, 120)
        self.assertEqual(s['rows_delivered_total'] - 20 + dropped, 120)
        got = self.read_back(mock)
        sent = {e['id'] for e in evs}
        in_topic = {i for i in got if i in sent}
        self.assertEqual(len(in_topic), 120 - dropped)
        self.assertEqual(sum(len(got[i]) for i in in_topic), len(in_topic), "no duplicates")
        self.assertEqual(d.stop(), 0)
        figure('partly_refused', sent=120, delivered=len(in_topic), dropped=dropped)


class TestKafkaReload(KafkaTestCase):

    def test_reload_applies_the_policy_and_names_kafka_settings(self):
        """SIGHUP with the Kafka sink: the policy's options (backoff, in
        flight) apply at once, also in the reload that changes Kafka
        settings; a changed Kafka setting keeps the running producer and is
        named for a restart; rows flow throughout."""
        mock = self.mock()
        conf_path = self.tmpdir() / 'birdfeeder.json'
        conf = {'kafka-brokers': mock.bootstrap, 'flush-interval-ms': 100,
                'backoff-min-ms': 100, 'backoff-max-ms': 400}

        def reload(d, **changes):
            conf.update({k.replace('_', '-'): v for k, v in changes.items()})
            conf_path.write_text(json.dumps(conf))
            conf_path.chmod(0o600)
            n = len(d.log_records('reloaded'))
            d.send_signal(signal.SIGHUP)
            return wait_until(lambda: len(d.log_records('reloaded')) > n
                              and d.log_records('reloaded')[-1], msg='reloaded')

        conf_path.write_text(json.dumps(conf))
        conf_path.chmod(0o600)
        d = self.daemon(['--config', str(conf_path)])
        rec = reload(d, backoff_max_ms=300, max_inflight=2)
        self.assertEqual(rec['sink'], 'reconfigured', rec)
        self.assertEqual(rec['restart_needed'], 'none', rec)
        self.assertEqual(set(rec['changed'].split(',')), {'backoff-max-ms', 'max-inflight'})
        rec = reload(d, kafka_topic_prefix='other.', backoff_max_ms=500,
                     kafka_property=['linger.ms=20'])
        self.assertEqual(rec['sink'], 'reconfigured', rec)
        self.assertEqual(rec['changed'], 'backoff-max-ms', rec)
        self.assertEqual(set(rec['restart_needed'].split(',')),
                         {'kafka-topic-prefix', 'kafka-property'}, rec)
        evs = events('l', 40)
        send_json_lines(evs, d.port)
        wait_until(stat_at_least(d, 'rows_delivered_total', 40), timeout=30)
        self.assert_delivered(mock, [e['id'] for e in evs])   # still the old topics
        self.assertEqual(d.stop(), 0)


class TestKafkaDatafiles(unittest.TestCase):

    def test_kafka_datasources_mirror_the_events_api_ones(self):
        """tinybird/kafka/<ds>_kafka.datasource parses with the fake's parser
        and has the columns (name, type, json path) of <ds>.datasource, which
        its materialized pipe copies into; it names the connection and the
        topic birdfeederd writes."""
        kafka_dir = harness.REPO / 'tinybird' / 'kafka'
        kafka = harness.fake_tinybird.load_datasources(str(kafka_dir))
        self.assertEqual(set(kafka), {f'{ds}_kafka' for ds in DATASETS})
        for ds in DATASETS:
            self.assertEqual([(c.name, c.type_str, c.json_path) for c in kafka[f'{ds}_kafka']],
                             [(c.name, c.type_str, c.json_path) for c in harness.schema(ds)])
            text = (kafka_dir / f'{ds}_kafka.datasource').read_text()
            self.assertIn(f'KAFKA_TOPIC {ds}\n', text)
            self.assertIn('KAFKA_CONNECTION_NAME birdfeeder_kafka\n', text)
            pipe = (kafka_dir / f'{ds}_from_kafka.pipe').read_text()
            self.assertIn(f'DATASOURCE {ds}\n', pipe)
            for c in harness.schema(ds):
                self.assertIn(f'        {c.name},' if c is not harness.schema(ds)[-1]
                              else f'        {c.name}\n', pipe)
        conn = (kafka_dir / 'birdfeeder_kafka.connection').read_text()
        self.assertIn('KAFKA_SECURITY_PROTOCOL SASL_SSL\n', conn)


class TestKafkaConfig(BirdfeederTestCase):

    def run_check(self, *args, env=None):
        return subprocess.run([str(harness.DAEMON_BIN), '--check-config', '--catalog',
                               str(harness.REPO_CATALOG), *args], capture_output=True,
                              text=True, timeout=10, env=harness.clean_env(env))

    def test_properties_from_flags_file_and_environment(self):
        """--kafka-property is repeatable, a JSON array or object in the file
        and whitespace-separated in the environment; file, then environment,
        then flags; secrets print as (set)."""
        cfg = self.tmpdir() / 'c.json'
        cfg.write_text(json.dumps({'kafka-brokers': '127.0.0.1:9092',
                                   'kafka-property': {'security.protocol': 'SASL_SSL',
                                                      'sasl.mechanism': 'SCRAM-SHA-256'}}))
        p = self.run_check('--config', str(cfg), '--kafka-property', 'sasl.username=bird',
                           '--kafka-property', 'ssl.key.password=hunter2',
                           env={'BIRDFEEDER_KAFKA_PROPERTY': 'ssl.ca.location=/etc/ca.pem'})
        self.assertEqual(p.returncode, 0, p.stderr)
        conf = json.loads(p.stdout[:p.stdout.rindex('}') + 1])
        self.assertEqual(conf['kafka-property'],
                         ['security.protocol=SASL_SSL', 'sasl.mechanism=SCRAM-SHA-256',
                          'ssl.ca.location=/etc/ca.pem', 'sasl.username=bird',
                          'ssl.key.password=(set)'])
        self.assertNotIn('hunter2', p.stdout)

    def test_reserved_and_malformed_properties_are_refused(self):
        for prop, why in (('acks=1', 'acks=all'), ('enable.idempotence=false', 'idempotent'),
                          ('sasl.password=x', '--kafka-password-file'),
                          ('queue.buffering.max.kbytes=1', '--max-memory'),
                          ('novalue', 'KEY=VALUE')):
            p = self.run_check('--kafka-property', prop)
            self.assertEqual(p.returncode, 2, prop)
            self.assertIn(why, p.stderr, prop)
        p = self.run_check('--kafka-compression', 'brotli')
        self.assertEqual(p.returncode, 2)
        self.assertIn('zstd', p.stderr)

    def test_password_file_permissions(self):
        """The SASL password comes from a file its owner alone may read; a
        file others can read stops the start with a clear error."""
        mock = KafkaMock()
        self.addCleanup(mock.stop)
        pw = self.tmpdir() / 'kafka.pw'
        pw.write_text('s3cret\n')
        pw.chmod(0o644)
        d = harness.Daemon(['--kafka-brokers', mock.bootstrap, '--kafka-password-file',
                            str(pw)], start=False)
        self.addCleanup(d.cleanup)
        with self.assertRaises(AssertionError):
            d.start()
        self.assertIn('chmod go-rwx', d.log())
        self.assertNotIn('s3cret', d.log())
        pw.chmod(0o600)
        # SASL/PLAIN: librdkafka refuses a producer without a password, so a
        # start that succeeds shows the file's password reached it. (The mock
        # brokers speak no SASL: nothing is produced here.)
        sasl = ['--kafka-property', 'security.protocol=SASL_PLAINTEXT',
                '--kafka-property', 'sasl.mechanism=PLAIN',
                '--kafka-property', 'sasl.username=bird']
        d1 = harness.Daemon(['--kafka-brokers', mock.bootstrap, *sasl], start=False)
        self.addCleanup(d1.cleanup)
        with self.assertRaises(AssertionError):
            d1.start()
        self.assertIn('sasl.password must be set', d1.log())
        d2 = self.daemon(['--kafka-brokers', mock.bootstrap, '--kafka-password-file',
                          str(pw), *sasl])
        self.assertEqual(d2.stop(), 0)
        self.assertNotIn('s3cret', d2.log())

    def test_password_as_a_systemd_credential(self):
        """Under the shipped unit the daemon's dynamic user cannot open a
        root-only password file: LoadCredential=kafka-password hands it over
        in $CREDENTIALS_DIRECTORY, root-owned and group-readable through an
        ACL, which the daemon reads without --kafka-password-file."""
        mock = KafkaMock()
        self.addCleanup(mock.stop)
        cred = self.tmpdir() / 'credentials'
        cred.mkdir(mode=0o700)
        (cred / 'kafka-password').write_text('s3cret\n')
        (cred / 'kafka-password').chmod(0o440)
        sasl = ['--kafka-property', 'security.protocol=SASL_PLAINTEXT',
                '--kafka-property', 'sasl.mechanism=PLAIN',
                '--kafka-property', 'sasl.username=bird']
        d = self.daemon(['--kafka-brokers', mock.bootstrap, *sasl],
                        env={'CREDENTIALS_DIRECTORY': str(cred)})
        self.assertEqual(d.stop(), 0)
        self.assertNotIn('s3cret', d.log())


if __name__ == '__main__':
    unittest.main()

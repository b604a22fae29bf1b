"""The Tinybird datafiles are what Tinybird accepts (issue 9).

tinybird/datasources/*.datasource, tinybird/pipes/*.pipe and tinybird/kafka/
(the Kafka connection, its landing datasources and materialized pipes) go through
Tinybird's own datafile parser, `tinybird migrate` of the npm package
@tinybirdco/sdk (tests/tools/check_datafiles.mjs), and the naming rules of
Tinybird's guidance are checked on what it read: node names differ from
their pipe's, from every datasource and pipe, and from each other; template
parameters are not named like columns. The tools come from the npm registry
(tests/tools/npm_tools.py, which `make test` runs); without npm or its
registry these tests are skipped, saying so. The fake Events API's own
.datasource parser must keep reading the same files.
"""

import json
import re
import shutil
import subprocess
import sys
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))           # tests/
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'tools'))  # npm_tools

import fake_tinybird  # noqa: E402
import npm_tools  # noqa: E402
from harness import REPO, BirdfeederTestCase  # noqa: E402

TINYBIRD = REPO / 'tinybird'
CHECK = REPO / 'tests' / 'tools' / 'check_datafiles.mjs'


class DatafileCase(BirdfeederTestCase):

    def check(self, project):
        tools = npm_tools.ensure()
        p = subprocess.run(['node', str(CHECK), str(tools), str(project)],
                           capture_output=True, text=True, timeout=300)
        try:
            report = json.loads(p.stdout)
        except ValueError:
            self.fail(f'check_datafiles.mjs printed no report (exit {p.returncode}): '
                      f'{p.stdout}\n{p.stderr}')
        return p.returncode, report

    def copy(self):
        d = self.tmpdir() / 'tinybird'
        shutil.copytree(TINYBIRD, d)
        return d

    @staticmethod
    def edit(path, old, new):
        text = path.read_text()
        assert old in text, (path, old)
        path.write_text(text.replace(old, new))


class TestDatafiles(DatafileCase):

    def test_tinybird_parser_reads_every_datafile_and_names_follow_the_rules(self):
        rc, r = self.check(TINYBIRD)
        self.assertEqual(r.get('problems'), [], r.get('problems'))
        self.assertEqual(rc, 0, r)
        self.assertIn('Migrated: 4 datasource(s), 7 pipe(s), 1 connection(s)', r['migrate'])
        self.assertNotIn('Errors', r['migrate'])
        self.assertEqual(sorted(d['name'] for d in r['datasources']),
                         ['image_events', 'image_events_kafka', 'llm_events',
                          'llm_events_kafka'])
        endpoints = sorted(f.stem for f in (TINYBIRD / 'pipes').glob('*.pipe'))
        self.assertEqual(sorted(p['name'] for p in r['pipes']),
                         sorted(endpoints + [f.stem for f in (TINYBIRD / 'kafka').glob('*.pipe')]))
        for p in r['pipes']:
            if p['name'] in endpoints:
                self.assertEqual(p['nodes'], [f"{p['name']}_events", f"{p['name']}_result"])
            else:  # <dataset>_from_kafka
                ds = p['name'][:-len('_from_kafka')]
                self.assertEqual(p['nodes'], [f"{ds}_kafka_rows"])
        # --dry-run wrote nothing, in the project or beside it.
        self.assertFalse(list(TINYBIRD.rglob('*.ts')))
        self.assertFalse((REPO / 'tinybird.migration.ts').exists())

    def test_fake_events_api_reads_the_same_schemas(self):
        """tests/fake_tinybird.py parses the .datasource files itself: its
        columns are the ones Tinybird's parser sees, in order."""
        rc, r = self.check(TINYBIRD)
        ours = fake_tinybird.load_datasources(str(TINYBIRD / 'datasources'))
        ours.update(fake_tinybird.load_datasources(str(TINYBIRD / 'kafka')))
        for d in r['datasources']:
            self.assertEqual([c.name for c in ours[d['name']]], d['columns'], d['name'])

    def test_names_against_the_rules_are_found(self):
        """The check can fail: a node named like its pipe, one shared by two
        pipes, a parameter named like a column."""
        d = self.copy()
        pipe = d / 'pipes' / 'cost_per_model_day.pipe'
        self.edit(pipe, 'NODE cost_per_model_day_result', 'NODE cost_per_model_day')
        self.edit(pipe, 'only_model', 'model')
        self.edit(d / 'pipes' / 'top_users_by_cost.pipe', 'NODE top_users_by_cost_events',
                  'NODE cost_per_model_day_events')
        self.edit(d / 'pipes' / 'top_users_by_cost.pipe', 'FROM top_users_by_cost_events',
                  'FROM cost_per_model_day_events')
        rc, r = self.check(d)
        self.assertEqual(rc, 1, r)
        self.assertEqual(sorted(r['problems']), sorted([
            'pipe cost_per_model_day: node cost_per_model_day is named like its pipe',
            'pipe cost_per_model_day: parameter model is named like a column',
            'pipe top_users_by_cost: node cost_per_model_day_events is also a node of '
            'cost_per_model_day',
        ]))

    def test_a_datafile_tinybird_cannot_read_fails(self):
        for name, old, new, why in [
                ('datasources/image_events.datasource', '`cost_usd` Float64',
                 '`cost_usd` Flaot64', 'Unsupported column type'),
                ('datasources/llm_events.datasource', 'ENGINE "ReplacingMergeTree"',
                 'ENGINE "ReplacingMergeTre"', 'Unsupported engine type'),
                ('pipes/duration_percentiles.pipe', 'NODE duration_percentiles_result',
                 'NODE', 'Unsupported pipe directive')]:
            with self.subTest(name=name):
                d = self.copy()
                self.edit(d / name, old, new)
                rc, r = self.check(d)
                self.assertEqual(rc, 2, r)
                self.assertIn(why, r['migrate'])
                self.assertIn(name, r['migrate'])

    def test_sorting_key_and_partition_are_documented(self):
        """The key keeps start_time before id, for the reason delivery.md
        gives; the datasources say what a sender must do."""
        for ds in ('image_events', 'llm_events'):
            text = (TINYBIRD / 'datasources' / f'{ds}.datasource').read_text()
            self.assertIn('ENGINE_SORTING_KEY "model, user_id, start_time, id"', text)
            self.assertIn('ENGINE_PARTITION_KEY "toYYYYMM(start_time)"', text)
            self.assertRegex(' '.join(text.split()), r'same id and the same start_time')
        doc = ' '.join((REPO / 'docs' / 'delivery.md').read_text().split())
        self.assertRegex(doc, r'sets `id` \*\*and `start_time`\*\*')
        self.assertIn('never collapses rows in different partitions', doc)


if __name__ == '__main__':
    unittest.main()

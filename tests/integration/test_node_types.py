"""The Node shim's TypeScript declarations, through tsc --strict (issue 9).

A typo in a field name ("widht") must be a compile error, not a field that
silently never reaches Tinybird: the event types have no catch-all index
signature. Code that uses the shim as docs/node.md shows must compile, with
the ESM (index.d.ts) and the CommonJS (index.d.cts) declarations alike.
TypeScript and @types/node come from tests/tools (npm_tools.py); without
npm or its registry the test is skipped, saying so.
"""

import json
import os
import subprocess
import sys
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))           # tests/
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'tools'))  # npm_tools

import npm_tools  # noqa: E402
from harness import REPO, BirdfeederTestCase  # noqa: E402

SHIM = REPO / 'client-shim' / 'node'

GOOD = '''
import { createClient, sendTinybirdEvent, type ImageFields } from '@birdfeeder/client';
import { middleware, annotate } from '@birdfeeder/client/middleware';
const c = createClient({ addr: '127.0.0.1:8190' });
const ok: boolean = c.image({ model: 'flux', prompt: 'a bird', width: 1024, height: 1024,
                              user_id: 42, ip: '192.0.2.1', start_time: new Date() });
c.llm({ model: 'gpt-5-nano', prompt_tokens: 12, completion_tokens: 3, stream: true,
        usage: { prompt_tokens: 1, completion_tokens: 2, some_new_openai_field: 3 } });
c.send('llm_events', { model: 'm', userId: 'u', durationMs: 5, error: new Error('x') });
sendTinybirdEvent({ model: 'flux', tier: 'seed' }, { dataset: 'image_events' });
const f: ImageFields = { model: 'flux', steps: 4 };
const mw = middleware({ dataset: 'image_events' });
void ok; void f; void mw; void annotate;
'''

BAD = {
    'widht': "c.image({ model: 'flux', widht: 1024 });",
    'provider': "c.llm({ model: 'm', provider: 'openai' });",
    'promt_tokens': "sendTinybirdEvent({ model: 'm', promt_tokens: 5 }, {});",
}

CJS = '''
import bf = require('@birdfeeder/client');
const c = bf.createClient();
c.image({ model: 'flux', width: 1 });
// @ts-expect-error: a field the protocol does not have
c.image({ model: 'flux', widht: 1 });
'''


class TestNodeTypes(BirdfeederTestCase):

    def tsc(self, files):
        """tsc --strict on files in a project that has the shim as
        node_modules/@birdfeeder/client and Node's types from the tools;
        returns {file: [error lines]} and the output."""
        tools = npm_tools.ensure()
        d = self.tmpdir()
        nm = d / 'node_modules' / '@birdfeeder'
        nm.mkdir(parents=True)
        os.symlink(SHIM, nm / 'client')
        os.symlink(tools / 'node_modules' / '@types', d / 'node_modules' / '@types')
        (d / 'tsconfig.json').write_text(json.dumps({
            'compilerOptions': {'strict': True, 'noEmit': True, 'module': 'nodenext',
                                'moduleResolution': 'nodenext', 'target': 'es2022',
                                'types': ['node'], 'skipLibCheck': False},
            'files': sorted(files)}))
        for name, text in files.items():
            (d / name).write_text(text)
        p = subprocess.run([str(tools / 'node_modules' / '.bin' / 'tsc'), '-p', str(d)],
                           capture_output=True, text=True, timeout=300, cwd=d)
        errors = {}
        for line in p.stdout.splitlines():
            if ': error TS' in line:
                errors.setdefault(line.split('(', 1)[0], []).append(line)
        return errors, p.stdout + p.stderr

    def test_documented_use_compiles_and_typos_do_not(self):
        """One tsc run: the documented uses (ESM and CommonJS) compile; each
        bad file fails with exactly one excess-property error naming its
        field."""
        files = {'good.mts': GOOD, 'good.cts': CJS}
        for field, line in BAD.items():
            files[f'bad_{field}.mts'] = GOOD + line + '\n'
        errors, out = self.tsc(files)
        self.assertFalse([f for f in errors if f.startswith('good')], out)
        for field in BAD:
            with self.subTest(field=field):
                errs = errors.get(f'bad_{field}.mts', [])
                self.assertEqual(len(errs), 1, out)
                # Excess property (2353), or the same with "did you mean" (2561).
                self.assertRegex(errs[0], r'error TS(2353|2561): Object literal may only '
                                          r'specify known properties')
                self.assertIn(f"'{field}'", errs[0])
        self.assertEqual(set(errors), {f'bad_{f}.mts' for f in BAD}, out)


if __name__ == '__main__':
    unittest.main()

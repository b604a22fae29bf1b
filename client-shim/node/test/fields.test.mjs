// The JS protocol table (lib/fields.cjs, shipped with the package) must be
// the table of proto/fields.def, and the generated encoder must be current.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createRequire } from 'node:module';
import { GEN_DOC, PKG, inRepo, decode } from './helpers.mjs';

const require = createRequire(import.meta.url);
const { TABLE } = require('../lib/fields.cjs');
const { ALIASES } = require('../lib/aliases.cjs');
const { encode, PROTOCOL } = require('../index.cjs');

const skip = inRepo ? false : 'not in the birdfeeder repository (no proto/)';

function genDocJson() {
  return JSON.parse(execFileSync('python3', [GEN_DOC, '--json'], { encoding: 'utf8' }));
}

test('JS field table equals `python3 proto/gen_doc.py --json`', { skip }, () => {
  assert.deepEqual(TABLE, genDocJson());
  assert.equal(PROTOCOL, TABLE);
});

test('lib/fields.cjs is what tools/gen-fields.mjs generates now', { skip }, async () => {
  const { generate } = await import('../tools/gen-fields.mjs');
  const current = readFileSync(join(PKG, 'lib', 'fields.cjs'), 'utf8');
  assert.ok(current === generate(),
    'lib/fields.cjs is stale: run node client-shim/node/tools/gen-fields.mjs');
});

test('every field of the table encodes with its key and type', { skip }, () => {
  // Behavioural check, independent of the generated code's text: one event
  // per field of gen_doc's table, decoded back by the test decoder.
  const table = genDocJson();
  const sample = { string: 'v', uint64: 300, bool: true };
  for (const f of table.fields) {
    for (const ds of f.datasets) {
      const b = encode(ds, { [f.name]: sample[f.type] });
      assert.ok(b, `${f.name} encodes`);
      const key = f.tag << 3 | f.wire_type;
      const keyHex = key < 128 ? key.toString(16).padStart(2, '0')
        : ((key & 127) | 128).toString(16) + (key >> 7).toString(16).padStart(2, '0');
      assert.ok(b.subarray(4).toString('hex').startsWith(keyHex), `${f.name} key ${keyHex}`);
      assert.deepEqual(decode(b), { dataset: ds, [f.name]: sample[f.type] });
    }
  }
  const ids = Object.fromEntries(table.datasets.map((d) => [d.name, d.id]));
  for (const [name, id] of Object.entries(ids)) assert.equal(encode(name, {})[3], id);
});

test('aliases name fields of the table and no field', () => {
  const names = new Set(TABLE.fields.map((f) => f.name));
  for (const [field, aliases] of Object.entries(ALIASES)) {
    assert.ok(names.has(field), `${field} is a field`);
    for (const a of aliases) assert.ok(!names.has(a), `${a} is not itself a field`);
  }
});

// Byte-for-byte the datagrams of proto/vectors/vectors.json (the C encoder
// and gen_vectors.py produce the same): every valid, canonical binary one.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { inRepo, loadVectors, decode, receiver, settle } from './helpers.mjs';

const require = createRequire(import.meta.url);
const { encode, createClient, PROMPT_CHARS, cutChars } = require('../index.cjs');

const skip = inRepo ? false : 'not in the birdfeeder repository (no proto/)';
const vectors = inRepo ? loadVectors() : [];
const canonical = vectors.filter((v) => v.hex !== undefined && v.event !== undefined &&
  !v.decode_only && !v.hex.startsWith('7b'));

function eventOf(v) {
  const { dataset, ...fields } = v.event;
  return { dataset, fields };
}

test('vectors file has canonical binary vectors', { skip }, () => {
  assert.ok(canonical.length >= 15, `only ${canonical.length}`);
});

for (const v of canonical) {
  test(`vector: ${v.name}`, { skip }, () => {
    const { dataset, fields } = eventOf(v);
    const got = encode(dataset, fields);
    assert.ok(got, 'encodes');
    assert.equal(got.toString('hex'), v.hex);
    // And back: the test decoder reads the same event.
    assert.deepEqual(decode(got), v.event);
  });
}

test('camelCase aliases give the same bytes as the field names', { skip }, () => {
  const rename = { user_id: 'userId', start_time: 'startTime', end_time: 'endTime',
    duration_ms: 'durationMs', error_message: 'errorMessage', prompt_tokens: 'promptTokens',
    completion_tokens: 'completionTokens', cached_tokens: 'cachedTokens', referrer: 'referer' };
  let renamed = 0;
  for (const v of canonical) {
    const { dataset, fields } = eventOf(v);
    const alias = {};
    for (const [k, val] of Object.entries(fields)) {
      alias[rename[k] || k] = val;
      if (rename[k]) renamed++;
    }
    assert.equal(encode(dataset, alias).toString('hex'), v.hex, v.name);
  }
  assert.ok(renamed > 10);
});

test('the client sends the vectors\' bytes (prompt cut to 120 characters)', { skip }, async () => {
  const rx = await receiver();
  const client = createClient({ host: '127.0.0.1', port: rx.port });
  try {
    for (const v of canonical) {
      const { dataset, fields } = eventOf(v);
      assert.equal(client.send(dataset, fields), true, v.name);
    }
    const got = await rx.waitFor(canonical.length);
    canonical.forEach((v, i) => {
      const { dataset, fields } = eventOf(v);
      const long = typeof fields.prompt === 'string' && [...fields.prompt].length > PROMPT_CHARS;
      const want = long
        ? encode(dataset, { ...fields, prompt: cutChars(fields.prompt, PROMPT_CHARS) }).toString('hex')
        : v.hex;
      if (long) assert.notEqual(want, v.hex);
      assert.equal(got[i].toString('hex'), want, v.name);
    });
    await settle(10);
    assert.deepEqual(client.stats(), { sent: canonical.length, dropped: 0, oversize: 0, failed: 0 });
  } finally {
    client.close();
    rx.close();
  }
});

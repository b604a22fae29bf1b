// The package: exports map (import / require / types), zero dependencies,
// type declarations for both module systems.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { createRequire } from 'node:module';
import { PKG } from './helpers.mjs';

const require = createRequire(import.meta.url);
const pkg = JSON.parse(readFileSync(join(PKG, 'package.json'), 'utf8'));

test('package.json: name, ESM type, no dependencies, every exported file exists', () => {
  assert.equal(pkg.name, '@birdfeeder/client');
  assert.equal(pkg.type, 'module');
  for (const k of ['dependencies', 'peerDependencies', 'optionalDependencies', 'devDependencies']) {
    assert.equal(pkg[k], undefined, k);
  }
  const targets = [];
  const walk = (v) => (typeof v === 'string' ? targets.push(v) : Object.values(v).forEach(walk));
  walk(pkg.exports);
  for (const t of [...targets, pkg.types, pkg.main]) assert.ok(existsSync(join(PKG, t)), t);
  assert.equal(pkg.exports['.'].import.default, './index.js');
  assert.equal(pkg.exports['.'].require.default, './index.cjs');
  assert.equal(pkg.exports['.'].import.types, './index.d.ts');
});

test('the package resolves by name through its exports, one instance for both', async () => {
  const esm = await import('@birdfeeder/client');
  const cjs = require('@birdfeeder/client');
  assert.equal(typeof esm.createClient, 'function');
  assert.equal(esm.createClient, cjs.createClient);
  const mwEsm = await import('@birdfeeder/client/middleware');
  const mwCjs = require('@birdfeeder/client/middleware');
  assert.equal(mwEsm.middleware, cjs.middleware);
  assert.equal(mwCjs.annotate, cjs.annotate);
  assert.equal(require('@birdfeeder/client/package.json').name, pkg.name);
});

test('CommonJS type declarations are the ESM ones', () => {
  const body = (f) => readFileSync(join(PKG, f), 'utf8').split('\n').slice(2).join('\n');
  assert.equal(body('index.d.cts'), body('index.d.ts'));
  assert.equal(body('middleware.d.cts'), body('middleware.d.ts').replaceAll("'./index.js'", "'./index.cjs'"));
});

test('declarations name every runtime export', () => {
  const dts = readFileSync(join(PKG, 'index.d.ts'), 'utf8');
  for (const name of Object.keys(require('../index.cjs'))) {
    if (name === 'default') continue;
    assert.match(dts, new RegExp(`export declare (function|const|class) ${name}\\b`), name);
  }
});

// What `npm pack` puts in the tarball: the license the package.json names,
// the npm conventions (repository, homepage, bugs, publishConfig), and a
// README whose relative links resolve inside the tarball. npm pack
// --dry-run writes nothing and needs no registry.
import { execFileSync } from 'node:child_process';

test('the tarball: LICENSE, npm fields, README links that resolve in it', () => {
  const out = execFileSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'],
                           { cwd: PKG, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  const files = new Set(JSON.parse(out)[0].files.map((f) => f.path));
  for (const f of ['LICENSE', 'README.md', 'package.json', 'index.d.ts', 'index.d.cts'])
    assert.ok(files.has(f), `${f} is not in the tarball`);
  assert.ok(![...files].some((f) => f.startsWith('test/') || f.startsWith('tools/')));

  const license = readFileSync(join(PKG, 'LICENSE'), 'utf8');
  assert.equal(pkg.license, 'MIT');
  assert.match(license, /^MIT License\n/);
  assert.equal(license, readFileSync(join(PKG, '..', '..', 'LICENSE'), 'utf8'),
               'client-shim/node/LICENSE is a copy of the repository LICENSE');

  const repo = pkg.repository.url.replace(/^git\+/, '').replace(/\.git$/, '');
  assert.equal(pkg.repository.type, 'git');
  assert.equal(pkg.repository.directory, 'client-shim/node');
  assert.ok(pkg.homepage.startsWith(repo + '/'), pkg.homepage);
  assert.equal(pkg.bugs.url, repo + '/issues');
  assert.equal(pkg.publishConfig.access, 'public');  // a scoped package is private by default

  const readme = readFileSync(join(PKG, 'README.md'), 'utf8');
  const links = [...readme.matchAll(/\]\(([^)\s]+)\)/g)].map((m) => m[1]);
  assert.ok(links.length >= 3, 'README links');
  for (const link of links) {
    if (/^https?:/.test(link)) {
      assert.ok(link.startsWith(repo + '/'), `${link}: not the repository`);
      // The file it names exists in this checkout.
      const m = link.match(/\/blob\/main\/(.+?)(#.*)?$/);
      assert.ok(m && existsSync(join(PKG, '..', '..', m[1])), link);
    } else {
      const path = link.replace(/^\.\//, '').replace(/#.*$/, '');
      assert.ok(files.has(path), `${link} does not resolve inside the tarball`);
    }
  }
});

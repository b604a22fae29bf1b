// tests/tools/check_datafiles.mjs: the project's Tinybird datafiles through
// Tinybird's own parser, then Tinybird's naming rules on what it read.
//
//   node tests/tools/check_datafiles.mjs TOOLS_DIR PROJECT_DIR
//
// TOOLS_DIR holds node_modules with @tinybirdco/sdk (tests/tools/npm_tools.py
// installs it); PROJECT_DIR holds datasources/ and pipes/ (the repository's
// tinybird/, or a copy a test broke on purpose).
//
// 1. `tinybird migrate --dry-run` on every datafile: strict (a resource it
//    cannot read fails it), and it writes nothing.
// 2. `tinybird migrate --out` into a temporary directory, and the TypeScript
//    it writes loaded through the SDK's own defineDatasource / definePipe /
//    node (which check names and shapes again), transpiled by the esbuild
//    the SDK depends on.
// 3. The rules from Tinybird's guidance on what that gives: a node's name
//    differs from its pipe's and from every datasource and pipe of the
//    project, and is used once in the project ("There is already a Node
//    with name ..."); a template parameter's name differs from every column
//    (of the datasources, and of the pipe's output).
//
// Prints one JSON object (datasources, pipes, problems) on stdout; exit 0
// when there is no problem, 1 when there are, 2 when migrate failed.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';

const [tools, project] = process.argv.slice(2).map((p) => resolve(p));
if (!tools || !project) {
  console.error('usage: node check_datafiles.mjs TOOLS_DIR PROJECT_DIR');
  process.exit(2);
}
const bin = join(tools, 'node_modules', '@tinybirdco', 'sdk', 'bin', 'tinybird.js');
const patterns = ['datasources/*.datasource', 'pipes/*.pipe', 'kafka/*.connection',
                  'kafka/*.datasource', 'kafka/*.pipe'];

function migrate(extra) {
  const p = spawnSync(process.execPath, [bin, 'migrate', ...extra, ...patterns],
                      { cwd: project, encoding: 'utf8', timeout: 120000 });
  return { status: p.status, out: (p.stdout || '') + (p.stderr || '') };
}

const dry = migrate(['--dry-run']);
if (dry.status !== 0) {
  console.log(JSON.stringify({ migrate: dry.out }));
  process.exit(2);
}
const work = mkdtempSync(join(tmpdir(), 'bf-migrate-'));
let defs;
try {
  const ts = join(work, 'migration.ts');
  const written = migrate(['--out', ts]);
  if (written.status !== 0) {
    console.log(JSON.stringify({ migrate: written.out }));
    process.exit(2);
  }
  // The module imports "@tinybirdco/sdk": it must sit where node_modules is.
  const esbuild = createRequire(join(tools, 'package.json'))('esbuild');
  const js = esbuild.transformSync(readFileSync(ts, 'utf8'), { loader: 'ts', format: 'esm' });
  const mod = join(tools, `.check-${process.pid}.mjs`);
  writeFileSync(mod, js.code);
  try {
    defs = await import(pathToFileURL(mod).href);
  } finally {
    rmSync(mod, { force: true });
  }
} finally {
  rmSync(work, { recursive: true, force: true });
}

const datasources = [];
const pipes = [];
for (const d of Object.values(defs)) {
  if (d && d._type === 'datasource')
    datasources.push({ name: d._name, columns: Object.keys(d._schema || {}) });
  else if (d && d._type === 'pipe')
    pipes.push({ name: d._name, nodes: (d.options.nodes || []).map((n) => n._name),
                 params: Object.keys(d._params || {}), output: Object.keys(d._output || {}) });
}

const problems = [];
const resources = new Set([...datasources, ...pipes].map((r) => r.name));
const columns = new Set(datasources.flatMap((d) => d.columns));
const nodeOwner = new Map();
for (const p of pipes) {
  for (const n of p.nodes) {
    if (n === p.name)
      problems.push(`pipe ${p.name}: node ${n} is named like its pipe`);
    else if (resources.has(n))
      problems.push(`pipe ${p.name}: node ${n} is named like a datasource or pipe`);
    if (nodeOwner.has(n))
      problems.push(`pipe ${p.name}: node ${n} is also a node of ${nodeOwner.get(n)}`);
    nodeOwner.set(n, p.name);
  }
  const own = new Set(p.output);
  for (const prm of p.params)
    if (columns.has(prm) || own.has(prm))
      problems.push(`pipe ${p.name}: parameter ${prm} is named like a column`);
}

console.log(JSON.stringify({ migrate: dry.out.trim(), datasources, pipes, problems }, null, 1));
process.exit(problems.length ? 1 : 0);

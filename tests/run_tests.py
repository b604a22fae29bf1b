#!/usr/bin/env python3
"""Runs every test of the project and ends with one summary line.

  unit         build/unit-tests (Check, one suite per module)
  integration  tests/integration/test_*.py (unittest) against the real
               binaries and tests/fake_tinybird.py
  node         node --test for client-shim/node, when it exists
  fuzz-seeds   each fuzz target (tests/fuzz/, built without libFuzzer in
               BUILD/fuzz-replay/) over its seed corpus: the vectors and
               the seeds of tests/fuzz/gen_seeds.py, once each

BUILD (environment) picks the build directory, so `make test-asan` runs the
same tests against the sanitizer build. Exit status 1 on any failure.
"""
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BUILD = REPO / os.environ.get('BUILD', 'build')


def run(name, cmd, env=None, parse=None):
    print(f'== {name}: {" ".join(map(str, cmd))}', flush=True)
    t0 = time.monotonic()
    p = subprocess.run(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
    sys.stdout.write(p.stdout)
    passed, failed = parse(p.stdout) if parse else (0, 0)
    if p.returncode != 0 and failed == 0:
        failed = 1  # crashed or failed before reporting
    print(f'== {name}: {passed} passed, {failed} failed '
          f'({time.monotonic() - t0:.1f}s, exit {p.returncode})', flush=True)
    return passed, failed


def parse_check(out):
    m = re.search(r'Checks: (\d+), Failures: (\d+), Errors: (\d+)', out)
    if not m:
        return 0, 1
    total, fails, errs = map(int, m.groups())
    return total - fails - errs, fails + errs


def parse_unittest(out):
    m = re.search(r'^Ran (\d+) tests?', out, re.M)
    if not m:
        return 0, 1
    total = int(m.group(1))
    fm = re.search(r'^FAILED \((.*)\)', out, re.M)
    failed = 0
    if fm:
        for part in fm.group(1).split(','):
            k, _, v = part.strip().partition('=')
            if k in ('failures', 'errors'):
                failed += int(v)
    skipped = re.search(r'skipped=(\d+)', out)
    skipped = int(skipped.group(1)) if skipped else 0
    return total - failed - skipped, failed


def parse_node(out):
    p = re.search(r'^# pass (\d+)', out, re.M)
    f = re.search(r'^# fail (\d+)', out, re.M)
    if not p:
        return 0, 1
    return int(p.group(1)), int(f.group(1)) if f else 0


def run_fuzz_seeds(env):
    """Every replay binary over its seeds; one result line per target."""
    bins = sorted((BUILD / 'fuzz-replay').glob('fuzz_*'))
    if not bins:
        print('== fuzz-seeds: no targets built (make fuzz-replay)')
        return 0, 1
    passed = failed = 0
    with tempfile.TemporaryDirectory(prefix='bf-seeds-') as seeds:
        subprocess.run([sys.executable, str(REPO / 'tests' / 'fuzz' / 'gen_seeds.py'), seeds],
                       check=True)
        for b in bins:
            p, f = run(f'fuzz-seeds {b.name[5:]}', [b, Path(seeds) / b.name[5:]], env,
                       lambda out: (1, 0) if re.search(r': \d+ inputs$', out, re.M) else (0, 1))
            passed += p
            failed += f
    return passed, failed


def main():
    env = dict(os.environ)
    env['BIRDFEEDER_BUILD_DIR'] = str(BUILD)
    env['BIRDFEEDER_REQUIRE_BINARIES'] = '1'  # a missing binary fails, never skips
    # Sanitizer builds: fail on the first report, leaks included.
    env.setdefault('ASAN_OPTIONS', 'detect_leaks=1:abort_on_error=0')
    env.setdefault('UBSAN_OPTIONS', 'print_stacktrace=1:halt_on_error=1')
    only = sys.argv[1:]
    results = []
    if not only or 'unit' in only:
        results.append(run('unit', [BUILD / 'unit-tests'], env, parse_check))
    if not only or 'integration' in only:
        results.append(run('integration',
                           [sys.executable, '-m', 'unittest', 'discover', '-v',
                            '-s', 'tests/integration', '-p', 'test_*.py'],
                           env, parse_unittest))
    if not only or 'fuzz-seeds' in only:
        results.append(run_fuzz_seeds(env))
    node_dir = REPO / 'client-shim' / 'node'
    if (not only or 'node' in only) and (node_dir / 'package.json').exists():
        results.append(run('node', ['node', '--test', 'client-shim/node/test/'],
                           env, parse_node))
    passed = sum(p for p, _ in results)
    failed = sum(f for _, f in results)
    print(f'{passed} passed, {failed} failed')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())

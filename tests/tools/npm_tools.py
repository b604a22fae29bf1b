#!/usr/bin/env python3
"""The test tools of tests/tools/package.json, installed from the npm registry.

    python3 tests/tools/npm_tools.py     install them now (make test runs this)
    from npm_tools import ensure         in a test: the tools' directory, or
                                         unittest.SkipTest when npm or its
                                         registry cannot be reached

What: Tinybird's datafile parser (`tinybird migrate`, npm package
@tinybirdco/sdk) and TypeScript, at the versions package-lock.json pins.
Where: one directory per lock file under $BIRDFEEDER_TOOLS_DIR, else
${XDG_CACHE_HOME:-~/.cache}/birdfeeder/npm-tools/, so `make test` and
`make test-asan` share one install and a changed lock file gets a new one.
`npm ci` installs into a temporary directory that is renamed into place
when complete, so two runs at once never see half an install.

A missing npm, or a registry npm cannot reach (`npm ping` fails), is a skip
with the reason; an install that fails while the registry answers is an
error. Python 3 standard library only.
"""
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parent
FILES = ('package.json', 'package-lock.json')
MARKER = '.installed'


def tools_dir():
    """Where this lock file's tools live (installed or not)."""
    digest = hashlib.sha256()
    for name in FILES:
        digest.update((HERE / name).read_bytes())
    base = os.environ.get('BIRDFEEDER_TOOLS_DIR')
    if not base:
        cache = os.environ.get('XDG_CACHE_HOME') or os.path.join(Path.home(), '.cache')
        base = os.path.join(cache, 'birdfeeder', 'npm-tools')
    return Path(base) / digest.hexdigest()[:16]


class Unreachable(Exception):
    """npm is not installed, or cannot reach its registry."""


def _npm(args, cwd, timeout):
    return subprocess.run(['npm', *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def install(log=sys.stderr):
    """Install unless done; returns the tools directory. Raises Unreachable
    (npm missing, registry down) or RuntimeError (npm ci failed while the
    registry answers)."""
    dest = tools_dir()
    if (dest / MARKER).exists():
        return dest
    if not shutil.which('npm') or not shutil.which('node'):
        raise Unreachable('npm or node is not installed')
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix='.tmp-', dir=dest.parent))
    try:
        for name in FILES:
            shutil.copy(HERE / name, tmp / name)
        print(f'npm_tools: installing {", ".join(_wanted())} into {dest}', file=log)
        try:
            p = _npm(['ci', '--no-audit', '--no-fund', '--ignore-scripts',
                      '--loglevel=error'], tmp, 600)
        except subprocess.TimeoutExpired:
            p = None
        if p is None or p.returncode != 0:
            why = 'timed out' if p is None else (p.stderr.strip() or p.stdout.strip())
            try:
                ping = _npm(['ping'], tmp, 60)
                reachable = ping.returncode == 0
                ping_err = ping.stderr.strip()
            except subprocess.TimeoutExpired:
                reachable, ping_err = False, 'npm ping timed out'
            if not reachable:
                lines = [x for x in ping_err.splitlines()
                         if 'error' in x and 'complete log of this run' not in x]
                raise Unreachable('the npm registry is unreachable (%s)'
                                  % (lines[0] if lines else 'npm ping failed'))
            raise RuntimeError(f'npm ci failed in {tmp}: {why}')
        (tmp / MARKER).write_text('ok\n')
        try:
            tmp.rename(dest)
        except OSError:
            if not (dest / MARKER).exists():   # not another run's install
                raise
        return dest
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _wanted():
    import json
    deps = json.loads((HERE / 'package.json').read_text())['devDependencies']
    return [f'{k}@{v}' for k, v in deps.items()]


_unreachable = None  # once npm could not be reached, this run does not ask again


def ensure():
    """For tests: the tools directory, or unittest.SkipTest naming why not."""
    global _unreachable
    if _unreachable is None:
        try:
            return install()
        except Unreachable as e:
            _unreachable = str(e)
    raise unittest.SkipTest(f'npm test tools not installed: {_unreachable}')


def main():
    try:
        d = install()
    except Unreachable as e:
        print(f'npm_tools: skipped: {e}; the tests that need them will say so',
              file=sys.stderr)
        return 0
    except RuntimeError as e:
        print(f'npm_tools: {e}', file=sys.stderr)
        return 1
    print(f'npm_tools: {", ".join(_wanted())} in {d}', file=sys.stderr)
    return 0


if __name__ == '__main__':
    sys.exit(main())

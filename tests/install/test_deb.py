#!/usr/bin/env python3
"""make test-deb: the Debian packages of build/, installed and purged for real.

Needs root and changes the system: run by CI (.ci/run) on its own machine,
not by `make test`. The packages must not be installed before. Steps, in
order; a failed step stops the ones that depend on it, and whatever was
installed is purged in any case:

  lintian   no errors (warnings and information are printed)
  fields    Depends: names the daemon's runtime libraries (dpkg-shlibdeps)
  install   apt-get install ./build/birdfeeder_V_A.deb and the two library
            packages: dependencies come from the Debian archive
  files     daemon, CLI, man pages, the conffile, catalog, units under
            /usr/lib/systemd/system, sysctl and sysusers drop-ins, the shim
  group     the group birdfeeder exists (systemd-sysusers in postinst)
  units     enabled (deb-systemd-helper); they wait for the token file
  check     /usr/sbin/birdfeederd --check-config with the installed config
  run       the installed daemon receives an event from a sender built with
            the system's pkg-config and libbirdfeeder-dev, and the CLI's
  purge     dpkg --purge: no file of the packages, no config, token, state,
            runtime directory or unit enablement is left; the group stays

Ends with one line: N passed, N failed.
"""
import glob
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get('BUILD', REPO / 'build'))
if not BUILD.is_absolute():
    BUILD = REPO / BUILD
PACKAGES = ['birdfeeder', 'libbirdfeeder1', 'libbirdfeeder-dev']
RUNTIME_LIBS = ['libuv1', 'libcurl4', 'libjansson4', 'libssl3', 'libsystemd0', 'zlib1g',
                'libmicrohttpd12']
RMEM_MAX = Path('/proc/sys/net/core/rmem_max')
DGRAM_QLEN = Path('/proc/sys/net/unix/max_dgram_qlen')
# Where a leftover could hide; the purge check compares a listing of every
# name containing "birdfeeder" outside these before install and after purge.
PRUNE = ['/proc', '/sys', '/dev', '/tmp', '/var/tmp', '/work', '/root', '/home',
         str(REPO), str(BUILD)]


def run(cmd, check=True, quiet=False, **kw):
    """Run cmd, print it and its output (the report shows what was done)."""
    print(f'$ {" ".join(map(str, cmd))}', flush=True)
    p = subprocess.run([str(c) for c in cmd], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=kw.pop('timeout', 600),
                       **kw)
    if not quiet and p.stdout.strip():
        print(p.stdout.rstrip(), flush=True)
    if check and p.returncode != 0:
        if quiet:
            print(p.stdout.rstrip())
        raise AssertionError(f'exit {p.returncode}: {" ".join(map(str, cmd))}')
    return p


def version_arch():
    m = re.search(r'^VERSION\s*=\s*(\S+)$', (REPO / 'Makefile').read_text(), re.M)
    arch = subprocess.run(['dpkg', '--print-architecture'], capture_output=True, text=True,
                          check=True).stdout.strip()
    return m.group(1), arch


def debs():
    version, arch = version_arch()
    out = [BUILD / f'{p}_{version}_{arch}.deb' for p in PACKAGES]
    for d in out:
        if not d.exists():
            raise AssertionError(f'{d} is missing: run make deb first')
    return out


def installed(pkg):
    p = subprocess.run(['dpkg-query', '-W', '-f=${db:Status-Status}', pkg],
                       capture_output=True, text=True)
    return p.returncode == 0 and p.stdout.strip() not in ('', 'not-installed')


def birdfeeder_names():
    cmd = ['find', '/', '-xdev', '(']
    for i, p in enumerate(PRUNE):
        cmd += (['-o'] if i else []) + ['-path', p]
    cmd += [')', '-prune', '-o', '-name', '*birdfeeder*', '-print']
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300).stdout
    names = set(out.split('\n')) - {''}
    # Other mounts (/run is often one): the places the package could use.
    for p in ['/run/birdfeeder', '/var/lib/private/birdfeeder']:
        if os.path.lexists(p):
            names.add(p)
    return names


def group_exists(name):
    return subprocess.run(['getent', 'group', name], capture_output=True).returncode == 0


def free_udp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def wait_for(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f'{what}: not within {timeout}s')
        time.sleep(0.05)


class Scenario:
    def __init__(self):
        self.passed, self.failed = 0, 0
        self.before = set()
        self.rmem_max = RMEM_MAX.read_text().strip() if RMEM_MAX.exists() else None
        self.qlen = DGRAM_QLEN.read_text().strip() if DGRAM_QLEN.exists() else None
        self.tmp = Path(tempfile.mkdtemp(prefix='bf-deb-'))
        self.had_private = os.path.lexists('/var/lib/private')

    def step(self, name, fn):
        print(f'\n== {name}', flush=True)
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - every failure is reported, then counted
            print(f'== {name}: FAILED: {e}', flush=True)
            self.failed += 1
            return False
        print(f'== {name}: ok', flush=True)
        self.passed += 1
        return True

    # -- before install ---------------------------------------------------------

    def lintian(self):
        version, arch = version_arch()
        changes = BUILD / 'deb' / f'birdfeeder_{version}_{arch}.changes'
        p = run(['lintian', '--info', '--display-info', '--fail-on', 'error', changes],
                check=False)
        tags = re.findall(r'^([EWIPX]): ', p.stdout, re.M)
        print(f'lintian: {tags.count("E")} errors, {tags.count("W")} warnings, '
              f'{tags.count("I")} information')
        if p.returncode != 0 or 'E' in tags:
            raise AssertionError('lintian reports errors')

    def fields(self):
        deb = debs()[0]
        depends = run(['dpkg-deb', '-f', deb, 'Depends']).stdout
        for lib in RUNTIME_LIBS:
            if not re.search(rf'(^|[ ,]){re.escape(lib)}\b', depends):
                raise AssertionError(f'Depends lacks {lib}: {depends}')
        shim = run(['dpkg-deb', '-f', debs()[1], 'Depends']).stdout
        if 'libuv' in shim or 'libcurl' in shim or 'libjansson' in shim:
            raise AssertionError(f'libbirdfeeder1 must need libc only: {shim}')
        run(['dpkg-deb', '-I', deb])

    def install(self):
        for pkg in PACKAGES:
            if installed(pkg):
                raise AssertionError(f'{pkg} is installed already; this test purges what it '
                                     'installs, so it will not touch an existing install')
        self.before = birdfeeder_names()
        env = dict(os.environ, DEBIAN_FRONTEND='noninteractive')
        run(['apt-get', 'install', '-y', '--no-install-recommends',
             '-o', 'DPkg::Lock::Timeout=300', *[f'./{d.relative_to(REPO)}' for d in debs()]],
            cwd=REPO, env=env)
        for pkg in PACKAGES:
            if not installed(pkg):
                raise AssertionError(f'{pkg} not installed')

    # -- installed ----------------------------------------------------------------

    def files(self):
        listed = set(run(['dpkg', '-L', 'birdfeeder', 'libbirdfeeder1', 'libbirdfeeder-dev'],
                         quiet=True).stdout.split())
        multiarch = run(['dpkg-architecture', '-qDEB_HOST_MULTIARCH'], quiet=True).stdout.strip()
        want = [
            '/usr/sbin/birdfeederd', '/usr/bin/birdfeeder',
            '/usr/share/man/man8/birdfeederd.8.gz', '/usr/share/man/man1/birdfeeder.1.gz',
            '/usr/share/man/man7/birdfeeder-protocol.7.gz',
            '/etc/birdfeeder/birdfeeder.json', '/usr/share/birdfeeder/catalog.json',
            '/usr/lib/systemd/system/birdfeeder.service',
            '/usr/lib/systemd/system/birdfeeder.socket',
            '/usr/lib/sysctl.d/99-birdfeeder.conf', '/usr/lib/sysusers.d/birdfeeder.conf',
            '/usr/include/birdfeeder/bf_client.h', '/usr/include/birdfeeder/bf_proto.h',
            f'/usr/lib/{multiarch}/libbirdfeeder.so.1', f'/usr/lib/{multiarch}/libbirdfeeder.so',
            f'/usr/lib/{multiarch}/libbirdfeeder.a',
            f'/usr/lib/{multiarch}/pkgconfig/birdfeeder.pc',
            '/usr/share/doc/birdfeeder/copyright',
        ]
        missing = [f for f in want if f not in listed]
        if missing:
            raise AssertionError(f'not installed: {missing}')
        conffiles = Path('/var/lib/dpkg/info/birdfeeder.conffiles').read_text().split()
        if conffiles != ['/etc/birdfeeder/birdfeeder.json']:
            raise AssertionError(f'conffiles: {conffiles}')
        unit = Path('/usr/lib/systemd/system/birdfeeder.service').read_text()
        if not re.search(r'(?m)^ExecStart=/usr/sbin/birdfeederd ', unit):
            raise AssertionError('ExecStart is not /usr/sbin/birdfeederd')
        conf = json.loads(Path('/etc/birdfeeder/birdfeeder.json').read_text())
        if conf.get('catalog', '/usr/share/birdfeeder/').startswith('/usr/local'):
            raise AssertionError(f'the config points at /usr/local: {conf["catalog"]}')
        run(['man', '-w', 'birdfeederd'])
        if self.rmem_max is not None and os.access(RMEM_MAX, os.W_OK):
            print(f'net.core.rmem_max = {RMEM_MAX.read_text().strip()} (was {self.rmem_max})')

    def group(self):
        if not group_exists('birdfeeder'):
            raise AssertionError('no group birdfeeder after install')
        run(['getent', 'group', 'birdfeeder'])

    def units(self):
        # deb-systemd-helper enabled them as systemctl enable would (it
        # answers was-enabled only to maintainer scripts): the [Install] links.
        for unit, target in (('birdfeeder.service', 'multi-user.target'),
                             ('birdfeeder.socket', 'sockets.target')):
            link = Path(f'/etc/systemd/system/{target}.wants/{unit}')
            if not link.is_symlink():
                raise AssertionError(f'{unit} is not enabled: no {link}')
            print(f'{link} -> {os.readlink(link)}')
            text = Path('/usr/lib/systemd/system', unit).read_text()
            if not re.search(r'(?m)^ConditionPathExists=/etc/birdfeeder/', text):
                raise AssertionError(f'{unit} would start without a token')
        if os.path.isdir('/run/systemd/system'):
            run(['systemctl', 'is-active', 'birdfeeder.service'], check=False)

    def check_config(self):
        run(['/usr/sbin/birdfeederd', '--check-config'])
        run(['/usr/bin/birdfeeder', '--version'])

    def send_and_receive(self):
        """The installed daemon on a loopback port (its state in this test's
        temp dir), an event from a sender built against libbirdfeeder-dev
        with pkg-config, another from the installed CLI."""
        sender = self.tmp / 'sender'
        flags = run(['pkg-config', '--cflags', '--libs', 'birdfeeder']).stdout.split()
        run(['cc', '-o', sender, REPO / 'tests/install/sender.c', *flags])
        port = free_udp_port()
        rows = self.tmp / 'rows.ndjson'
        state = self.tmp / 'state'
        state.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith(('TINYBIRD_', 'BIRDFEEDER_'))}
        with open(self.tmp / 'daemon.log', 'wb') as log:
            d = subprocess.Popen(['/usr/sbin/birdfeederd', '--listen', f'127.0.0.1:{port}',
                                  '--out', rows, '--flush-interval-ms', '100',
                                  '--stats-socket', state / 'stats.sock',
                                  '--spool-dir', state / 'spool',
                                  '--ip-hash-key-file', state / 'ip-hash.key'],
                                 stdout=subprocess.DEVNULL, stderr=log, env=env)
        try:
            logf = self.tmp / 'daemon.log'
            wait_for(lambda: 'event=listening' in logf.read_text() or d.poll() is not None,
                     10, 'the daemon listening')
            if d.poll() is not None:
                raise AssertionError(f'birdfeederd exited: {logf.read_text()}')
            run([sender, f'127.0.0.1:{port}', 'deb-sender-1'])
            run(['sh', '-c', 'echo \'{"dataset":"llm_events","model":"gpt-5-nano",'
                 '"id":"deb-cli-1"}\' | /usr/bin/birdfeeder send --to 127.0.0.1:' + str(port)])
            wait_for(lambda: rows.exists() and 'deb-sender-1' in rows.read_text()
                     and 'deb-cli-1' in rows.read_text(), 10, 'both events in the output')
            print(rows.read_text().rstrip())
        finally:
            d.terminate()
            d.wait(timeout=10)

    # -- purge ----------------------------------------------------------------------

    def purge(self):
        # What an administrator and a run under systemd leave: the token, the
        # state behind DynamicUser='s link, the runtime directory.
        Path('/etc/birdfeeder/token').write_text('p.test-token\n')
        os.chmod('/etc/birdfeeder/token', 0o600)
        Path('/var/lib/private/birdfeeder/spool').mkdir(parents=True, exist_ok=True)
        Path('/var/lib/private/birdfeeder/ip-hash.key').write_bytes(b'k' * 32)
        if not os.path.lexists('/var/lib/birdfeeder'):
            os.symlink('private/birdfeeder', '/var/lib/birdfeeder')
        Path('/run/birdfeeder').mkdir(exist_ok=True)
        shipped = set(run(['dpkg', '-L', *PACKAGES], quiet=True).stdout.split())
        run(['dpkg', '--purge', *PACKAGES])
        for pkg in PACKAGES:
            if installed(pkg):
                raise AssertionError(f'{pkg} still installed')
        left = [f for f in shipped if os.path.lexists(f) and not os.path.isdir(f)]
        if left:
            raise AssertionError(f'files of the packages left: {sorted(left)}')
        for p in ['/etc/birdfeeder', '/var/lib/birdfeeder', '/var/lib/private/birdfeeder',
                  '/run/birdfeeder', '/usr/share/birdfeeder', '/usr/include/birdfeeder']:
            if os.path.lexists(p):
                raise AssertionError(f'{p} left behind')
        enabled = glob.glob('/etc/systemd/system/*/birdfeeder.*') + \
            glob.glob('/var/lib/systemd/deb-systemd-helper-enabled/**/*birdfeeder*',
                      recursive=True)
        if enabled:
            raise AssertionError(f'unit enablement left: {enabled}')
        new = sorted(birdfeeder_names() - self.before)
        if new:
            raise AssertionError(f'left behind: {new}')
        if not group_exists('birdfeeder'):
            raise AssertionError('the group birdfeeder went (Debian leaves system groups)')
        print('nothing left behind; the group birdfeeder stays')

    def cleanup(self):
        if any(installed(p) for p in PACKAGES):
            subprocess.run(['dpkg', '--purge', *PACKAGES], capture_output=True)
        for path, was in ((RMEM_MAX, self.rmem_max), (DGRAM_QLEN, self.qlen)):
            if was is not None and path.read_text().strip() != was:
                try:  # the package raised it for the daemon; put back the machine's value
                    path.write_text(was)
                except OSError:
                    pass
        if not self.had_private:  # made by purge() to play systemd
            try:
                os.rmdir('/var/lib/private')
            except OSError:
                pass
        shutil.rmtree(self.tmp, ignore_errors=True)


def main():
    if os.geteuid() != 0:
        print('test-deb: skipped: needs root (installs the packages with apt-get, purges them)')
        return 0
    s = Scenario()
    try:
        s.step('lintian', s.lintian)
        s.step('fields', s.fields)
        if s.step('install', s.install):
            s.step('files', s.files)
            s.step('group', s.group)
            s.step('units', s.units)
            s.step('check-config', s.check_config)
            s.step('send and receive', s.send_and_receive)
            s.step('purge', s.purge)
    finally:
        s.cleanup()
    print(f'test-deb: {s.passed} passed, {s.failed} failed')
    return 1 if s.failed else 0


if __name__ == '__main__':
    sys.exit(main())

"""make install and uninstall into a DESTDIR, and the C shim as a library.

  layout     PREFIX=/usr puts the units, sysctl and sysusers drop-ins under
             /usr/lib; /usr/local (the default) puts them under /etc
  uninstall  removes every file install put there; an edited config stays
  no build   install with nothing built fails with a message and builds nothing;
             a build for another PREFIX is refused too
  library    libbirdfeeder.so.1: its soname, libc as its only dependency,
             exports exactly the API declared in bf_client.h and bf_proto.h
  pkg-config a sender built with `pkg-config --cflags --libs birdfeeder`
             against the installed tree delivers an event to a daemon

Runs make in the source tree against the build directory under test
(BIRDFEEDER_BUILD_DIR), never as a sub-make of the one running the tests.
"""
import os
import re
import shutil
import subprocess
import sys
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from harness import (BUILD, REPO, BirdfeederTestCase, _require,  # noqa: E402
                     wait_until)

SHIM_SO = BUILD / 'libbirdfeeder.so.1'
HEADERS = [REPO / 'client-shim' / 'c' / 'bf_client.h', REPO / 'proto' / 'bf_proto.h']
SENDER_C = REPO / 'tests' / 'install' / 'sender.c'


def make(*args, check=True, build=BUILD):
    """make in the source tree with this test's build directory; MAKEFLAGS of
    an outer make (jobserver fds this process does not pass on) are dropped."""
    env = {k: v for k, v in os.environ.items()
           if k not in ('MAKEFLAGS', 'MFLAGS', 'MAKELEVEL', 'MAKEOVERRIDES')}
    p = subprocess.run(['make', '--no-print-directory', '-C', str(REPO),
                        f'BUILD={build}', *args],
                       capture_output=True, text=True, timeout=120, env=env)
    if check and p.returncode != 0:
        raise AssertionError(f'make {" ".join(args)} failed ({p.returncode}):\n'
                             f'{p.stdout}\n{p.stderr}')
    return p


def tree(root):
    """Every file and symlink under root, as paths relative to it."""
    return sorted(str(p.relative_to(root)) for p in Path(root).rglob('*')
                  if p.is_symlink() or not p.is_dir())


def declared_api():
    """Functions and data the public headers declare (not macros, types, or
    static inline helpers)."""
    names = set()
    for h in HEADERS:
        text = re.sub(r'/\*.*?\*/', '', h.read_text(), flags=re.S)
        text = re.sub(r'(?m)^#.*(\\\n.*)*$', '', text)  # preprocessor lines
        for decl in text.split(';'):
            decl = ' '.join(decl.split())
            if decl.startswith(('typedef', 'struct', 'enum', 'static')) or '{' in decl:
                continue
            m = re.search(r'\b(bf_\w+)\s*(\(|\[)', decl)
            if m:
                names.add(m.group(1))
    return names


def readelf_dynamic(path):
    out = subprocess.run(['readelf', '-d', str(path)], capture_output=True, text=True,
                         timeout=10, check=True).stdout
    needed = re.findall(r'\(NEEDED\)\s+Shared library: \[(.*?)\]', out)
    soname = re.findall(r'\(SONAME\)\s+Library soname: \[(.*?)\]', out)
    return needed, soname, out


def sanitizer_flags():
    """The -fsanitize flags the build under test used (test-asan): a program
    linking its library needs the same runtime."""
    flags = (BUILD / '.flags').read_text() if (BUILD / '.flags').exists() else ''
    return [f for f in flags.split() if f.startswith('-fsanitize')]


class InstallTestCase(BirdfeederTestCase):
    tmp_prefix = 'bf-inst-'

    def setUp(self):
        super().setUp()
        for tool in ('make', 'readelf', 'nm', 'pkg-config', 'cc'):
            if not shutil.which(tool):
                self.skipTest(f'{tool} is not installed (Debian: build-essential, pkg-config)')


class TestLayout(InstallTestCase):
    def test_prefix_usr_puts_units_and_dropins_under_usr_lib(self):
        """The text files alone (install-ops needs no build), as a package
        stages them; then uninstall leaves no file."""
        d = self.tmpdir()
        make('install-ops', f'DESTDIR={d}', 'PREFIX=/usr')
        files = tree(d)
        for f in ('usr/lib/systemd/system/birdfeeder.service',
                  'usr/lib/systemd/system/birdfeeder.socket',
                  'usr/lib/sysctl.d/99-birdfeeder.conf',
                  'usr/lib/sysusers.d/birdfeeder.conf',
                  'usr/share/man/man8/birdfeederd.8'):
            self.assertIn(f, files)
        self.assertFalse([f for f in files if f.startswith('etc/')], files)
        unit = (d / 'usr/lib/systemd/system/birdfeeder.service').read_text()
        self.assertRegex(unit, r'(?m)^ExecStart=/usr/sbin/birdfeederd ')
        self.assertNotIn('/usr/local', (d / 'usr/share/man/man8/birdfeederd.8').read_text())
        make('uninstall', f'DESTDIR={d}', 'PREFIX=/usr')
        self.assertEqual(tree(d), [])

    def test_install_usr_local_then_uninstall(self):
        _require(SHIM_SO)
        d = self.tmpdir()
        make('install', f'DESTDIR={d}')
        files = tree(d)
        expected = [
            'etc/birdfeeder/birdfeeder.json',
            'etc/sysctl.d/99-birdfeeder.conf',
            'etc/systemd/system/birdfeeder.service',
            'etc/systemd/system/birdfeeder.socket',
            'etc/sysusers.d/birdfeeder.conf',
            'usr/local/bin/birdfeeder',
            'usr/local/include/birdfeeder/bf_client.h',
            'usr/local/include/birdfeeder/bf_proto.h',
            'usr/local/include/birdfeeder/fields.def',
            'usr/local/include/birdfeeder/reasons.def',
            'usr/local/lib/libbirdfeeder.a',
            'usr/local/lib/libbirdfeeder.so',
            'usr/local/lib/libbirdfeeder.so.1',
            'usr/local/lib/pkgconfig/birdfeeder.pc',
            'usr/local/sbin/birdfeederd',
            'usr/local/share/birdfeeder/catalog.json',
            'usr/local/share/man/man1/birdfeeder.1',
            'usr/local/share/man/man7/birdfeeder-protocol.7',
            'usr/local/share/man/man8/birdfeederd.8',
        ]
        self.assertEqual(files, expected)
        so = d / 'usr/local/lib/libbirdfeeder.so'
        self.assertEqual(os.readlink(so), 'libbirdfeeder.so.1')
        unit = (d / 'etc/systemd/system/birdfeeder.service').read_text()
        self.assertRegex(unit, r'(?m)^ExecStart=/usr/local/sbin/birdfeederd ')
        self.assertEqual((d / 'usr/local/sbin/birdfeederd').stat().st_mode & 0o777, 0o755)
        # An edited config survives uninstall; everything else goes.
        conf = d / 'etc/birdfeeder/birdfeeder.json'
        conf.write_text(conf.read_text().replace('"info"', '"debug"'))
        p = make('uninstall', f'DESTDIR={d}')
        self.assertIn('keeping', p.stdout)
        self.assertEqual(tree(d), ['etc/birdfeeder/birdfeeder.json'])
        # A second install keeps it too (never over an existing one).
        make('install', f'DESTDIR={d}')
        self.assertIn('"debug"', conf.read_text())
        conf.unlink()
        make('uninstall', f'DESTDIR={d}')
        make('install', f'DESTDIR={d}')
        make('uninstall', f'DESTDIR={d}')
        self.assertEqual(tree(d), [])


class TestInstallDoesNotBuild(InstallTestCase):
    def test_nothing_built_fails_with_a_message(self):
        empty = self.tmpdir()
        d = self.tmpdir()
        p = make('install', f'DESTDIR={d}', build=empty, check=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("run 'make' first", p.stderr)
        self.assertEqual(list(empty.iterdir()), [], 'install built something')
        self.assertEqual(tree(d), [])

    def test_build_for_another_prefix_is_refused(self):
        _require(SHIM_SO)
        d = self.tmpdir()
        p = make('install', f'DESTDIR={d}', 'PREFIX=/opt/bf', check=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn('was built for PREFIX=/usr/local', p.stderr)
        self.assertEqual(tree(d), [])


class TestSharedLibrary(InstallTestCase):
    def test_soname_and_libc_only(self):
        _require(SHIM_SO)
        needed, soname, out = readelf_dynamic(SHIM_SO)
        self.assertEqual(soname, ['libbirdfeeder.so.1'])
        # Sanitizer builds add their runtimes; a service links libc only.
        needed = [n for n in needed if not re.match(r'lib(a|ub)san\.so', n)]
        self.assertEqual(needed, ['libc.so.6'], out)
        self.assertNotIn('TEXTREL', out, 'not position-independent')

    def test_exports_exactly_the_public_api(self):
        _require(SHIM_SO)
        out = subprocess.run(['nm', '-D', '--defined-only', str(SHIM_SO)], capture_output=True,
                             text=True, timeout=10, check=True).stdout
        exported = set()
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[1] != 'A':  # A: the version node itself
                name, _, version = parts[2].partition('@')
                exported.add(name)
                self.assertEqual(version.lstrip('@'), 'BIRDFEEDER_1', line)
        api = declared_api()
        self.assertIn('bf_client_open', api)
        self.assertIn('bf_fields', api)
        self.assertEqual(exported, api)


class TestPkgConfigSender(InstallTestCase):
    def test_sender_built_with_pkg_config_delivers(self):
        """`make install DESTDIR=`, then a sender built only from what
        pkg-config says about that tree (PKG_CONFIG_SYSROOT_DIR prefixes the
        paths with DESTDIR), linked against libbirdfeeder.so.1, sends an event
        that the daemon writes out."""
        _require(SHIM_SO)
        d = self.tmpdir()
        make('install', f'DESTDIR={d}')
        env = dict(os.environ, PKG_CONFIG_PATH=str(d / 'usr/local/lib/pkgconfig'),
                   PKG_CONFIG_SYSROOT_DIR=str(d), PKG_CONFIG_LIBDIR='')
        pc = subprocess.run(['pkg-config', '--cflags', '--libs', 'birdfeeder'],
                            capture_output=True, text=True, timeout=10, env=env)
        self.assertEqual(pc.returncode, 0, pc.stderr)
        flags = pc.stdout.split()
        self.assertIn(f'-I{d}/usr/local/include', flags)
        self.assertIn('-lbirdfeeder', flags)
        ver = subprocess.run(['pkg-config', '--modversion', 'birdfeeder'], capture_output=True,
                             text=True, timeout=10, env=env).stdout.strip()
        self.assertRegex(ver, r'^\d+\.\d+\.\d+$')

        sender = d / 'sender'
        cc = subprocess.run(['cc', '-o', str(sender), str(SENDER_C), *flags,
                             *sanitizer_flags()],
                            capture_output=True, text=True, timeout=60, cwd=d)
        self.assertEqual(cc.returncode, 0, cc.stderr)
        needed, _, _ = readelf_dynamic(sender)
        self.assertIn('libbirdfeeder.so.1', needed)

        out = d / 'rows.ndjson'
        daemon = self.daemon(['--out', str(out), '--flush-interval-ms', '100'])
        run = subprocess.run([str(sender), daemon.addr, 'pc-sender-1'], capture_output=True,
                             text=True, timeout=10,
                             env=dict(os.environ, LD_LIBRARY_PATH=str(d / 'usr/local/lib')))
        self.assertEqual(run.returncode, 0, run.stdout + run.stderr)
        self.assertIn('sent=1 ', run.stdout)
        wait_until(lambda: out.exists() and '"pc-sender-1"' in out.read_text(),
                   timeout=10, msg='the event in the daemon output')



class TestDebianCopyright(unittest.TestCase):
    def test_copyright_is_the_license(self):
        """debian/copyright states LICENSE: the same holder and years, the
        same MIT text (word for word; the file format indents it)."""
        lic = (REPO / 'LICENSE').read_text()
        deb = (REPO / 'debian' / 'copyright').read_text()
        holder = re.search(r'^Copyright \(c\) (.+)$', lic, re.M).group(1)
        self.assertIn(f'Copyright: {holder}\n', deb)
        self.assertRegex(lic, r'^MIT License')
        self.assertIn('License: MIT\n', deb)
        body = lic[lic.index('Permission is hereby granted'):].split()
        text = deb[deb.index('Permission is hereby granted'):]
        text = [w for w in text.split() if w != '.']
        self.assertEqual(text, body)


if __name__ == '__main__':
    unittest.main()

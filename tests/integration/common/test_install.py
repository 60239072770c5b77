#!/usr/bin/env python3
"""`cmake --install` of the already built tree into a temporary prefix, then what a user of the
installed library does: build a small program (install_consumer/consumer.c) with pkg-config and
with find_package(tailcut), run it, and check what it prints. Also: exactly the public headers
are installed, the shared library has its soname and exports only tc_ names, and a tree
configured with -DBUILD_TESTING=OFF needs neither cmocka nor python3."""
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from tchelpers import SANITIZED, SLOW, Proc, Watchdog  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
CONSUMER = os.path.join(HERE, "install_consumer")
SAN_FLAGS = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined"] if SANITIZED else []


def cmake_lists():
    with open(os.path.join(SRC, "CMakeLists.txt"), encoding="utf-8") as f:
        return f.read()


def project_version():
    return re.search(r"project\(tailcut VERSION (\d+)\.(\d+)\.(\d+)", cmake_lists()).groups()


def run(argv, **kw):
    r = subprocess.run(argv, capture_output=True, text=True, timeout=120 * SLOW, **kw)
    if r.returncode != 0:
        raise AssertionError("%s: exit %d\n%s%s" % (argv, r.returncode, r.stdout, r.stderr[-4000:]))
    return r.stdout


class InstallTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.watchdog = Watchdog(180 * SLOW)
        cls.tmp = tempfile.mkdtemp(prefix="tc-install-")
        cls.prefix = os.path.join(cls.tmp, "prefix")
        cls.build = os.path.dirname(os.path.abspath(Proc.bin()))
        run(["cmake", "--install", cls.build, "--prefix", cls.prefix])
        cls.files = sorted(os.path.relpath(os.path.join(d, f), cls.prefix)
                           for d, _, fs in os.walk(cls.prefix) for f in fs)
        pcs = glob.glob(os.path.join(cls.prefix, "lib*", "**", "pkgconfig", "tailcut.pc"),
                        recursive=True)
        assert len(pcs) == 1, cls.files
        cls.pcdir = os.path.dirname(pcs[0])
        cls.libdir = os.path.dirname(cls.pcdir)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)
        cls.watchdog.cancel()

    def check_consumer_output(self, out):
        major, minor, patch = project_version()
        version = "%s.%s.%s" % (major, minor, patch)
        number = (int(major) << 16) | (int(minor) << 8) | int(patch)
        self.assertEqual(out.splitlines(), [
            "headers %s %s" % (version, version),
            "library %s 0x%06x match=1" % (version, number),
            "with_timeout: ETIMEDOUT (timed out)",
            "inner: cancelled",
        ])

    def test_installed_files(self):
        lib = os.path.relpath(self.libdir, self.prefix)
        public = sorted(os.path.basename(h)
                        for h in glob.glob(os.path.join(SRC, "include", "tailcut", "*.h")))
        headers = sorted(f[len("include/tailcut/"):] for f in self.files
                         if f.startswith("include/"))
        self.assertEqual(headers, sorted(public + ["version.h"]))
        for f in ("bin/tailcut", lib + "/libtailcut.a", lib + "/libtailcut.so",
                  lib + "/pkgconfig/tailcut.pc", lib + "/cmake/tailcut/tailcutConfig.cmake",
                  lib + "/cmake/tailcut/tailcutConfigVersion.cmake",
                  lib + "/cmake/tailcut/tailcutTargets.cmake",
                  "share/doc/tailcut/examples/tailcut.service",
                  "share/doc/tailcut/examples/tailcut.yaml",
                  "share/doc/tailcut/examples/kubernetes.yaml"):
            self.assertIn(f, self.files)
        for page in ("tailcut", "tailcut-serve", "tailcut-upstream", "tailcut-fetch"):
            self.assertIn("share/man/man1/%s.1" % page, self.files)
        self.assertFalse([f for f in self.files if "internal" in f or f.endswith(".in")])
        # The prefix given at install time, not the configured one, is in tailcut.pc.
        with open(os.path.join(self.pcdir, "tailcut.pc"), encoding="utf-8") as f:
            self.assertIn("prefix=%s\n" % self.prefix, f.read())
        first = run([os.path.join(self.prefix, "bin", "tailcut"), "--version"]).splitlines()[0]
        self.assertEqual(first, "tailcut %s.%s.%s" % project_version())

    def test_shared_library_soname_and_exports(self):
        sover = re.search(r"set\(TC_SOVERSION (\d+)\)", cmake_lists()).group(1)
        so = os.path.join(self.libdir, "libtailcut.so")
        dyn = run(["readelf", "-d", so])
        self.assertIn("Library soname: [libtailcut.so.%s]" % sover, dyn)
        self.assertEqual(os.readlink(os.path.join(self.libdir, "libtailcut.so.%s" % sover)),
                         "libtailcut.so.%s.%s.%s" % project_version())
        names = [line.split()[-1] for line in
                 run(["nm", "-D", "--defined-only", so]).splitlines() if line.strip()]
        self.assertIn("tc_version", names)
        self.assertIn("tc_server_new", names)
        self.assertEqual([n for n in names if not re.match(r"tc_[^_]", n)], [])

    def test_pkg_config_build(self):
        env = dict(os.environ, PKG_CONFIG_PATH=self.pcdir)
        flags = run(["pkg-config", "--cflags", "--libs", "tailcut"], env=env).split()
        self.assertIn("-D_POSIX_C_SOURCE=200809L", flags)  # <uv.h> under -std=c11
        exe = os.path.join(self.tmp, "consumer_pc")
        run(["cc", "-std=c11", "-pedantic", "-Wall", "-Wextra", "-Werror"] + SAN_FLAGS
            + [os.path.join(CONSUMER, "consumer.c"), "-o", exe] + flags
            + ["-Wl,-rpath," + self.libdir])
        self.assertIn(os.path.join(self.libdir, "libtailcut.so.0"), run(["ldd", exe]))
        self.check_consumer_output(run([exe]))

    def test_find_package_build(self):
        b = os.path.join(self.tmp, "cmake-consumer")
        run(["cmake", "-S", CONSUMER, "-B", b, "-DCMAKE_PREFIX_PATH=" + self.prefix,
             "-DCMAKE_C_FLAGS=" + " ".join(SAN_FLAGS)])
        run(["cmake", "--build", b])
        self.check_consumer_output(run([os.path.join(b, "consumer")]))
        self.check_consumer_output(run([os.path.join(b, "consumer_static")]))

    def test_configure_without_tests_needs_no_cmocka(self):
        # A pkg-config view of this machine without cmocka: every .pc file but cmocka's.
        view = os.path.join(self.tmp, "pc-view")
        os.mkdir(view)
        for d in run(["pkg-config", "--variable", "pc_path", "pkg-config"]).strip().split(":"):
            for pc in glob.glob(os.path.join(d, "*.pc")):
                name = os.path.basename(pc)
                if name != "cmocka.pc" and not os.path.exists(os.path.join(view, name)):
                    os.symlink(pc, os.path.join(view, name))
        env = dict(os.environ, PKG_CONFIG_LIBDIR=view, PKG_CONFIG_PATH="")
        b = os.path.join(self.tmp, "no-tests")
        run(["cmake", "-S", SRC, "-B", b, "-DBUILD_TESTING=OFF"], env=env)
        with open(os.path.join(b, "CMakeCache.txt"), encoding="utf-8") as f:
            cache = f.read()
        self.assertNotIn("CMOCKA", cache)
        self.assertNotIn("PYTHON3", cache)
        self.assertFalse(os.path.exists(os.path.join(b, "CTestTestfile.cmake")))
        # The same view makes a tree with tests fail loudly, so the view really hides cmocka.
        r = subprocess.run(["cmake", "-S", SRC, "-B", os.path.join(self.tmp, "with-tests")],
                           env=env, capture_output=True, text=True, timeout=120 * SLOW)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("cmocka", r.stdout + r.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)

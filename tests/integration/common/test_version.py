#!/usr/bin/env python3
"""`tailcut --version`: the first line is `tailcut X.Y.Z` (X.Y.Z from project(VERSION) in
CMakeLists.txt), then one `NAME VERSION` line per library, each the version the library reports
at run time, checked here against what the system's own tools report for the same packages."""
import os
import re
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from tchelpers import SLOW, Proc, Watchdog  # noqa: E402

SRC = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))


def tool(*argv):
    return subprocess.run(argv, capture_output=True, text=True, check=True,
                          timeout=30 * SLOW).stdout.strip()


class VersionTest(unittest.TestCase):
    def setUp(self):
        self.addCleanup(Watchdog(60 * SLOW).cancel)
        r = subprocess.run([Proc.bin(), "--version"], capture_output=True, text=True,
                           timeout=30 * SLOW)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stderr, "")
        self.lines = r.stdout.splitlines()
        self.libs = {}
        for line in self.lines[1:]:
            m = re.fullmatch(r"(\S+) (\S+)( \(.*\))?", line)
            self.assertIsNotNone(m, "not NAME VERSION: %r" % line)
            self.libs[m.group(1)] = m.group(2)

    def test_first_line_is_the_project_version(self):
        with open(os.path.join(SRC, "CMakeLists.txt"), encoding="utf-8") as f:
            version = re.search(r"project\(tailcut VERSION (\d+\.\d+\.\d+)", f.read()).group(1)
        self.assertEqual(self.lines[0], "tailcut " + version)

    def test_one_line_per_library(self):
        names = list(self.libs)
        self.assertEqual(names[:2], ["libuv", "libcurl"])
        self.assertEqual(names[3:], ["http-parser", "jansson"])
        for name, version in self.libs.items():
            self.assertRegex(version, r"^\d+\.\d+(\.\d+)?[a-z]?$", name)
        self.assertIn("(libcurl's TLS library)", self.lines[3])

    def test_versions_match_the_installed_packages(self):
        self.assertEqual(self.libs["libuv"], tool("pkg-config", "--modversion", "libuv"))
        self.assertEqual(self.libs["libcurl"], tool("pkg-config", "--modversion", "libcurl"))
        self.assertEqual(self.libs["jansson"], tool("pkg-config", "--modversion", "jansson"))
        # scripts/install-deps installs libcurl4-openssl-dev; `openssl version` says
        # "OpenSSL 3.0.11 19 Sep 2023 (Library: OpenSSL 3.0.11 19 Sep 2023)".
        self.assertEqual(self.lines[3].split()[0], "OpenSSL")
        self.assertEqual(self.libs["OpenSSL"], tool("openssl", "version").split()[1])
        # http-parser has no .pc file: its soname is libhttp_parser.so.MAJOR.MINOR, and Debian's
        # package version starts with the full version.
        pkg = tool("dpkg-query", "-W", "-f=${Version}", "libhttp-parser2.9")
        self.assertTrue(pkg.startswith(self.libs["http-parser"]), pkg)

    def test_usage_names_version(self):
        r = subprocess.run([Proc.bin(), "--help"], capture_output=True, text=True,
                           timeout=30 * SLOW)
        self.assertIn("--version", r.stdout)


if __name__ == "__main__":
    unittest.main(verbosity=2)

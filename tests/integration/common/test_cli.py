"""One option parser for every subcommand (issue 11, docs/serve.md): full names only,
the last value of a repeated flag wins, --name=VALUE and --name VALUE alike, and --help says so.
"""
import os
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from tchelpers import SLOW, Proc, Watchdog, get_json  # noqa: E402


def run(*args, stdin=None):
    return subprocess.run([Proc.bin(), *args], capture_output=True, text=True,
                          timeout=30 * SLOW, stdin=stdin or subprocess.DEVNULL)


class OptionTest(unittest.TestCase):
    def setUp(self):
        self.addCleanup(Watchdog(120 * SLOW).cancel)

    def test_abbreviations_are_errors_naming_the_flag(self):
        # Each would be a valid flag if abbreviations were taken; --help after it would exit 0.
        cases = [
            ("serve", "--hedge-del=5", "--hedge-del"),
            ("serve", "--hedge-del=abc", "--hedge-del"),
            ("serve", "--work", "--work"),
            ("serve", "--lis=127.0.0.1:0", "--lis"),
            ("upstream", "--prof=fixed:1", "--prof"),
            ("upstream", "--se", "--se"),
            ("fetch", "--conc=5", "--conc"),
            ("fetch", "--time", "--time"),
            ("fetch", "--bod", "--bod"),
        ]
        for cmd, arg, named in cases:
            r = run(cmd, arg, "1", "--help")
            self.assertEqual(r.returncode, 2, (cmd, arg, r.stdout[:200], r.stderr))
            lines = r.stderr.splitlines()
            self.assertEqual(len(lines), 1, r.stderr)
            self.assertIn("'%s'" % named, lines[0])

    def test_help_says_the_last_value_wins(self):
        for cmd in ("serve", "upstream", "fetch"):
            r = run(cmd, "--help")
            self.assertEqual(r.returncode, 0)
            self.assertIn("last value", r.stdout, cmd)
            self.assertIn("--name=VALUE", r.stdout, cmd)

    def test_http_engine(self):
        # Bad values are one line naming the flag, exit 2.
        for cmd in ("serve", "fetch"):
            for bad in ("", "Native", "libcurl", "h2"):
                r = run(cmd, "--http-engine", bad, "--help")
                self.assertEqual(r.returncode, 2, (cmd, bad, r.stderr))
                self.assertEqual(len(r.stderr.splitlines()), 1, r.stderr)
                self.assertIn("--http-engine", r.stderr)
        # Both engines carry fetch's requests; the last value wins.
        up = Proc("upstream", "--profile", "fixed:1")
        self.addCleanup(up.kill)
        url = "http://127.0.0.1:%d/api/work" % up.port
        for args in (["--http-engine", "curl"], ["--http-engine=curl", "--http-engine=native"]):
            r = run("fetch", "--no-progress", *args, url, url)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(r.stdout.count('"status":200'), 2, r.stdout)

    def test_last_value_wins(self):
        p = Proc("upstream", "--profile", "fixed:5000", "--profile=fixed:1")
        self.addCleanup(p.kill)
        status, _, body = get_json(p.port, "/api/work")
        self.assertEqual(status, 200)
        self.assertEqual(body, {"time": 1})
        # fetch: -i given twice reads the second file; --timeout 1 would not matter anyway
        with tempfile.TemporaryDirectory() as d:
            urls = os.path.join(d, "urls")
            with open(urls, "w") as f:
                f.write("http://127.0.0.1:%d/api/work\n" % p.port)
            r = run("fetch", "--no-progress", "-i", os.path.join(d, "missing"), "-i", urls,
                    "-c", "7", "--concurrency=1")
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn('"status":200', r.stdout)
        p.stop()


if __name__ == "__main__":
    unittest.main(verbosity=2)

#!/usr/bin/env python3
"""The docs/examples programs that need nothing outside the loopback run and succeed: CMake
builds every example (example_<name> next to the tailcut binary), this runs the self-contained
ones. docs/examples/client_get is run against TLS servers by test_client_tls.py."""
import os
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from tchelpers import SLOW, Proc, Watchdog  # noqa: E402


class ExamplesTest(unittest.TestCase):
    def setUp(self):
        self.addCleanup(Watchdog(60 * SLOW).cancel)

    def example(self, name):
        exe = os.path.join(os.path.dirname(os.path.abspath(Proc.bin())), "example_" + name)
        self.assertTrue(os.access(exe, os.X_OK), "example not built: %s" % exe)
        return exe

    def test_hello_umbrella_answers_itself(self):
        r = subprocess.run([self.example("hello_umbrella")], capture_output=True, text=True,
                           timeout=30 * SLOW)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn('status=200 body={"hello":"world"}', r.stdout)


if __name__ == "__main__":
    unittest.main(verbosity=2)

"""Every benchmark program is a build target (issue 11): each bench/<benchmark>/<program>.c is
built by `make` into <build>/bench/<program>, it starts, and no bench script compiles by hand.
"""
import glob
import os
import re
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from tchelpers import SLOW, Proc, Watchdog  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..")


class BenchProgramsTest(unittest.TestCase):
    def setUp(self):
        self.addCleanup(Watchdog(60 * SLOW).cancel)

    def test_every_program_is_built_and_starts(self):
        sources = sorted(glob.glob(os.path.join(ROOT, "bench", "*", "*.c")))
        self.assertTrue(sources)
        bindir = os.path.join(os.path.dirname(Proc.bin()), "bench")
        for src in sources:
            name = os.path.splitext(os.path.basename(src))[0]
            exe = os.path.join(bindir, name)
            self.assertTrue(os.access(exe, os.X_OK), "bench program not built: %s" % exe)
            # Without arguments each prints its usage and exits 2: it links and runs.
            r = subprocess.run([exe], capture_output=True, text=True, timeout=30 * SLOW)
            self.assertEqual(r.returncode, 2, (name, r.stderr))
            self.assertIn("usage:", r.stderr)

    def test_no_script_compiles_by_hand(self):
        for script in glob.glob(os.path.join(ROOT, "bench", "*", "run")):
            with open(script) as f:
                text = f.read()
            self.assertIsNone(re.search(r"^\s*(cc|gcc|clang)\s", text, re.M), script)


if __name__ == "__main__":
    unittest.main(verbosity=2)

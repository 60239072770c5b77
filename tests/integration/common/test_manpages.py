#!/usr/bin/env python3
"""The man pages under docs/man/ cannot rot: each one is clean under `mandoc -T lint` and groff's
warnings (`man --warnings -l`), has the sections a reader looks for, and lists exactly the flags
(long and short) that `tailcut CMD --help` prints, in both directions."""
import os
import re
import shutil
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from tchelpers import SLOW, Proc, Watchdog  # noqa: E402

MAN = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..",
                                   "docs", "man"))
PAGES = {"tailcut": None, "tailcut-serve": "serve", "tailcut-upstream": "upstream",
         "tailcut-fetch": "fetch"}
SECTIONS = ["NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "SIGNALS", "ENVIRONMENT", "FILES",
            "EXIT STATUS", "EXAMPLES", "SEE ALSO"]
# A flag in a --help option line or in a man page tag: -x or --long-name.
FLAG_RE = re.compile(r"(?:^|[\s,\[])(--?[A-Za-z0-9][A-Za-z0-9-]*)")


def page_path(name):
    return os.path.join(MAN, name + ".1")


def roff_text(line):
    """A roff line as plain text: font escapes dropped, \\- as -, macro quotes removed."""
    line = re.sub(r"\\f[BIRP]", "", line).replace("\\-", "-").replace("\\e", "\\")
    return line.replace('"', " ")


def sections(name):
    """{SECTION: [lines]} of a man page's source."""
    out, cur = {}, None
    with open(page_path(name), encoding="utf-8") as f:
        for line in f.read().splitlines():
            m = re.match(r'\.SH\s+"?([^"]+)"?$', line)
            if m:
                cur = m.group(1)
                out[cur] = []
            elif cur:
                out[cur].append(line)
    return out


def man_flags(name):
    """Flags named in the tags (the line after each .TP) of the OPTIONS section."""
    lines = sections(name)["OPTIONS"]
    flags = set()
    for i, line in enumerate(lines[:-1]):
        if line.strip() == ".TP":
            tag = roff_text(lines[i + 1])
            if tag.startswith("."):  # a macro line such as .B -x
                tag = tag.split(None, 1)[1] if " " in tag else ""
            flags.update(FLAG_RE.findall(tag))
    return flags


def help_flags(cmd):
    """Flags of the option lines of `tailcut CMD --help` ("  -x, --name VALUE  text")."""
    r = subprocess.run([Proc.bin(), cmd, "--help"], capture_output=True, text=True,
                       timeout=30 * SLOW)
    assert r.returncode == 0, r.stderr
    flags = set()
    for line in r.stdout.splitlines():
        m = re.match(r"^ {2}(-[A-Za-z0-9])(?:,\s+(--[a-z0-9][a-z0-9-]*))?(?:\s|$)", line) or \
            re.match(r"^ {6}(--[a-z0-9][a-z0-9-]*)(?:\s|$)", line)
        if m:
            flags.update(g for g in m.groups() if g)
    return flags


class ManPagesTest(unittest.TestCase):
    def setUp(self):
        self.addCleanup(Watchdog(60 * SLOW).cancel)

    def test_mandoc_lint(self):
        if not shutil.which("mandoc"):
            self.skipTest("mandoc not installed (scripts/install-deps installs it)")
        for name in PAGES:
            r = subprocess.run(["mandoc", "-T", "lint", "-W", "warning", page_path(name)],
                               capture_output=True, text=True, timeout=30 * SLOW)
            self.assertEqual((r.returncode, r.stdout + r.stderr), (0, ""), name)

    def test_groff_warnings(self):
        if not shutil.which("man"):
            self.skipTest("man-db not installed")
        env = dict(os.environ, MANWIDTH="80", LC_ALL="C.UTF-8", MANPAGER="cat", PAGER="cat")
        for name in PAGES:
            r = subprocess.run(["man", "--warnings=all", "-l", page_path(name)], env=env,
                               capture_output=True, text=True, timeout=30 * SLOW)
            self.assertEqual(r.returncode, 0, name + r.stderr)
            self.assertEqual(r.stderr, "", name)
            self.assertIn("SYNOPSIS", r.stdout)

    def test_sections(self):
        for name, cmd in PAGES.items():
            want = SECTIONS + (["ENDPOINTS"] if cmd in ("serve", "upstream") else [])
            self.assertEqual(sorted(set(want) - set(sections(name))), [], name)

    def test_top_level_flags(self):
        r = subprocess.run([Proc.bin(), "--help"], capture_output=True, text=True,
                           timeout=30 * SLOW)
        usage = set(FLAG_RE.findall(r.stdout.splitlines()[0]))
        self.assertEqual(usage, {"--version", "--help"})
        self.assertEqual(man_flags("tailcut"), {"--version", "--help", "-h"})

    def test_each_command_lists_the_flags_of_its_help(self):
        problems = []
        for name, cmd in PAGES.items():
            if cmd is None:
                continue
            helped, manned = help_flags(cmd), man_flags(name)
            self.assertIn("--help", helped)  # the --help parser found the option lines
            if manned - helped:
                problems.append("%s: in the man page but not in --help: %s"
                                % (cmd, " ".join(sorted(manned - helped))))
            if helped - manned:
                problems.append("%s: in --help but not in the man page: %s"
                                % (cmd, " ".join(sorted(helped - manned))))
        self.assertEqual(problems, [], "\n" + "\n".join(problems))


if __name__ == "__main__":
    unittest.main(verbosity=2)

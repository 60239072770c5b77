#!/usr/bin/env python3
"""The man pages under docs/man/ cannot rot: each one is clean under `mandoc -T lint` and groff's
warnings (`man --warnings -l`), has the sections a reader looks for, lists exactly the flags
(long and short) that `tailcut CMD --help` prints, in both directions, with the same defaults, and
its OPTIONS list is the one the settings table gives (`tailcut --man-options CMD`, written into
the page by `make man`)."""
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


BEGIN = ".\\\" BEGIN OPTIONS:"
END = ".\\\" END OPTIONS"
DEFAULT_RE = re.compile(r"\[([^\[\]]*)\]$")


def squeeze(text):
    return " ".join(text.split())


def man_entries(name):
    """{flag: text of its entry} for the .TP entries of the OPTIONS section (macro lines as their
    words, font escapes dropped)."""
    lines = sections(name)["OPTIONS"]
    entries, flags, depth = {}, None, 0  # depth: inside .RS ... .RE, a .TP is the entry's own
    for i, line in enumerate(lines):
        depth += (line.strip() == ".RS") - (line.strip() == ".RE")
        if line.strip() == ".TP" and depth == 0:
            flags = FLAG_RE.findall(roff_text(lines[i + 1]))
            for flag in flags:
                entries[flag] = []
        elif flags and lines[i - 1].strip() != ".TP" and not line.startswith(".\\\""):
            text = roff_text(line)
            if text.startswith("."):
                text = text.split(None, 1)[1] if " " in text else ""
            for flag in flags:
                entries[flag].append(text)
    return {flag: squeeze(" ".join(text)) for flag, text in entries.items()}


def help_entries(cmd):
    """{flag: its help text} of `tailcut CMD --help`, continuation lines joined."""
    r = subprocess.run([Proc.bin(), cmd, "--help"], capture_output=True, text=True,
                       timeout=30 * SLOW)
    entries, flags = {}, []
    for line in r.stdout.splitlines():
        m = re.match(r"^ {2}(-[A-Za-z0-9])(?:,\s+(--[a-z0-9][a-z0-9-]*))?(?:\s|$)", line) or \
            re.match(r"^ {6}(--[a-z0-9][a-z0-9-]*)(?:\s|$)", line)
        if m:
            flags = [g for g in m.groups() if g]
            for flag in flags:
                entries[flag] = [line[29:]]
        elif line.startswith(" " * 29) and flags:
            for flag in flags:
                entries[flag].append(line[29:])
        else:
            flags = []
    return {flag: squeeze(" ".join(text)) for flag, text in entries.items()}


def default_of(text):
    """The [default] that ends an option's text, or None."""
    text = re.sub(r"\s*\(repeatable\)$", "", text)
    text = re.sub(r"\s*Repeatable\.$", "", text)
    m = DEFAULT_RE.search(text)
    return m.group(1) if m else None


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

    def test_options_come_from_the_settings_table(self):
        """The OPTIONS list of each page is what the settings table gives: edit the table and run
        `make man`, never the page."""
        for name, cmd in PAGES.items():
            if cmd is None:
                continue
            r = subprocess.run([Proc.bin(), "--man-options", cmd], capture_output=True, text=True,
                               timeout=30 * SLOW)
            self.assertEqual(r.returncode, 0, r.stderr)
            with open(page_path(name), encoding="utf-8") as f:
                lines = f.read().split("\n")
            begin = [i for i, line in enumerate(lines) if line.startswith(BEGIN)]
            end = [i for i, line in enumerate(lines) if line == END]
            self.assertEqual((len(begin), len(end)), (1, 1), name)
            committed = "\n".join(lines[begin[0] + 1:end[0]]) + "\n"
            self.assertEqual(committed, r.stdout,
                             "%s: the page differs from its settings table: run make man" % name)

    def test_defaults_agree_with_help(self):
        """Each flag has the same default (or none) in --help and in its man page."""
        problems = []
        for name, cmd in PAGES.items():
            if cmd is None:
                continue
            helped, manned = help_entries(cmd), man_entries(name)
            self.assertIn("--help", helped)
            self.assertTrue(any(default_of(t) for t in helped.values()), cmd)
            for flag, text in helped.items():
                want, got = default_of(text), default_of(manned.get(flag, ""))
                if want != got:
                    problems.append("%s %s: --help says [%s], the man page [%s]"
                                    % (cmd, flag, want, got))
        self.assertEqual(problems, [], "\n" + "\n".join(problems))

    def test_documented_defaults(self):
        """A few defaults of the contract, as both --help and the man pages show them."""
        want = {("serve", "--hedge-delay"): "300", ("serve", "--max-timeout"): "60000",
                ("serve", "--max-body"): "1048576", ("serve", "--drain-timeout"): "10000",
                ("serve", "--workers"): "online CPUs", ("serve", "--listen"): "127.0.0.1:8080",
                ("upstream", "--listen"): "127.0.0.1:9000", ("upstream", "--profile"): "exponea",
                ("fetch", "--concurrency"): "100", ("fetch", "--timeout"): "30000",
                ("fetch", "-o"): "stdout"}
        for (cmd, flag), default in want.items():
            self.assertEqual(default_of(help_entries(cmd)[flag]), default, (cmd, flag))
            self.assertEqual(default_of(man_entries("tailcut-" + cmd)[flag]), default,
                             (cmd, flag))


if __name__ == "__main__":
    unittest.main(verbosity=2)

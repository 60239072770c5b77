"""A `--listen` address that cannot be bound (issue 11, docs/serve.md): every server subcommand,
with one worker and with several, prints one line `tailcut: cannot listen on HOST:PORT: REASON`
in the system's words and exits 1, run after run, never with a crash or a core dump.

The foreign address is 192.0.2.1 (TEST-NET-1): only bind() is tried on it, nothing is sent.
"""
import errno
import os
import socket
import subprocess
import sys
import unittest
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from tchelpers import SLOW, Proc, Watchdog  # noqa: E402

RUNS = 20
# Both upstreams are named, so that serve embeds nothing and has nothing else to say.
SERVE = ["serve", "--upstream", "http://127.0.0.1:1/api/work",
         "--metadata-upstream", "http://127.0.0.1:1/api/metadata"]
COMMANDS = {
    "serve": SERVE,
    "serve --workers 1": SERVE + ["--workers", "1"],
    "serve --workers 3": SERVE + ["--workers", "3"],
    "upstream": ["upstream"],
}


def nonlocal_bind_allowed():
    try:
        with open("/proc/sys/net/ipv4/ip_nonlocal_bind") as f:
            return f.read().strip() != "0"
    except OSError:
        return False


class ListenErrorTest(unittest.TestCase):
    def expect_refusal(self, listen, reason):
        want = "tailcut: cannot listen on %s: %s" % (listen, reason.lower())

        def one(argv):
            r = subprocess.run([Proc.bin(), *argv, "--listen", listen], capture_output=True,
                               text=True, timeout=30 * SLOW, stdin=subprocess.DEVNULL)
            return argv, r

        jobs = [argv for argv in COMMANDS.values() for _ in range(RUNS)]
        with ThreadPoolExecutor(max_workers=4) as pool:
            for argv, r in pool.map(one, jobs):
                lines = r.stderr.splitlines()
                self.assertEqual(r.returncode, 1, "%s: %r" % (argv, r.stderr))
                self.assertEqual(len(lines), 1, "%s: %r" % (argv, r.stderr))
                self.assertEqual(lines[0].lower(), want, argv)
                self.assertEqual(r.stdout, "")

    def setUp(self):
        self.addCleanup(Watchdog(300 * SLOW).cancel)

    def test_busy_port(self):
        s = socket.socket()
        self.addCleanup(s.close)
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        self.expect_refusal("127.0.0.1:%d" % port, os.strerror(errno.EADDRINUSE))

    @unittest.skipIf(nonlocal_bind_allowed(), "the kernel allows binding foreign addresses")
    def test_address_not_on_this_machine(self):
        self.expect_refusal("192.0.2.1:80", os.strerror(errno.EADDRNOTAVAIL))


class ListenValueTest(unittest.TestCase):
    """A HOST:PORT value whose HOST is not an IP address (or localhost) is a bad value, not a
    failure to listen: one stderr line naming the flag and the value, exit 2, for every
    subcommand and flag that takes one (CONTRACT §0)."""

    FLAGS = [("serve", SERVE, "--listen"), ("serve", SERVE, "--admin-listen"),
             ("upstream", ["upstream"], "--listen")]
    BAD = ["foo:80", "example.com:8080", "foo:0", "256.1.1.1:80", "1.2.3:80", "[foo]:80",
           "[127.0.0.1]:80", "[localhost]:80"]

    def setUp(self):
        self.addCleanup(Watchdog(120 * SLOW).cancel)

    def test_host_that_is_not_an_address(self):
        for cmd, argv, flag in self.FLAGS:
            for value in self.BAD:
                r = subprocess.run([Proc.bin(), *argv, flag, value], capture_output=True,
                                   text=True, timeout=30 * SLOW, stdin=subprocess.DEVNULL)
                what = (cmd, flag, value, r.stderr)
                self.assertEqual(r.returncode, 2, what)
                self.assertEqual(r.stderr.splitlines(),
                                 ["tailcut %s: invalid value '%s' for %s: HOST must be an IP "
                                  "address (127.0.0.1, [::1]) or localhost" % (cmd, value, flag)],
                                 what)
                self.assertEqual(r.stdout, "", what)

    def test_addresses_and_localhost_still_listen(self):
        for cmd, argv, flag in self.FLAGS:
            for value in ("127.0.0.1:0", "localhost:0", "[::1]:0"):
                if value == "[::1]:0" and not socket.has_ipv6:
                    continue
                if flag == "--listen":
                    p = Proc(argv[0], *argv[1:], listen=value)
                else:
                    p = Proc(argv[0], *argv[1:], flag, value)
                    self.assertIsNotNone(p.admin_port, (flag, value, p.stderr_text()))
                self.assertIsNotNone(p.port, (flag, value, p.stderr_text()))
                p.stop(expect=0)


if __name__ == "__main__":
    unittest.main(verbosity=2)

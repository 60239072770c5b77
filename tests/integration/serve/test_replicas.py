#!/usr/bin/env python3
"""Hedging across replicas (CONTRACT section 7, docs/serve.md "Replicas"): `tailcut serve` with
several `--upstream` URLs, each a `tailcut upstream` simulator, and with `--upstream-discovery
dns`.

- Extras land on the other replicas: each simulator's /stats counts the X-Tailcut-Attempt values
  it saw, and a request's attempts never meet twice on one replica while another is untried.
- A replica killed (SIGKILL) under load costs no client error: its refused or reset attempts fire
  the extras at once, to the others, and it is ejected; restarted, it is probed after its
  ejection (10 s) and serves again.
- A slow replica gets almost nothing (power of two choices on the peak-sensitive average) and is
  ejected for latency.
- DNS discovery: `localhost` gives a replica per address (127.0.0.1, and ::1 where localhost has
  it); with a private /etc/hosts (a mount namespace; skipped where one cannot be made), an
  address that appears becomes a replica, one that disappears stops getting attempts, a failed
  resolution keeps the last good set and is counted, and a name that does not resolve at start
  is said on stderr and retried every second while serve answers.
- Every metric name and label, the json access log's "replica", a metadata call re-sent to the
  other metadata replica, and bad flag values (exit 2 naming the flag).

Timing: bounds are generous (stretched under sanitizers by th.SLOW) and nothing asserts speed.
"""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import tchelpers as th  # noqa: E402
from smart_fixture import Metrics, request  # noqa: E402
from test_attempt_once import KeepAliveUpstream, ok, reset  # noqa: E402


def upstream(profile, listen="127.0.0.1:0"):
    return th.Proc("upstream", "--access-log", "off", "--profile", profile, listen=listen)


def work_url(port, host="127.0.0.1"):
    return "http://%s:%d/api/work" % (host, port)


def label(port, host="127.0.0.1"):
    return "http://%s:%d" % (host, port)


def stats(up):
    """The simulator's /stats, on the address it listens on."""
    host = up.argv[up.argv.index("--listen") + 1].rpartition(":")[0].strip("[]")
    st, _, body = th.http_request(up.port, "GET", "/stats", timeout=10 * th.SLOW, host=host)
    assert st == 200, (st, body)
    return json.loads(body)


def serve(*args, **kw):
    return th.Proc("serve", "--access-log", kw.pop("access_log", "off"), *args, **kw)


def load(port, n, rate, path="/api/smart", concurrency=64, timeout_ms=10000):
    """n requests to path at `rate` a second (open loop, `tailcut fetch --rate`); returns the
    status of each ({"status": 0, "error": ...} for one that got no answer)."""
    with tempfile.TemporaryDirectory() as d:
        urls = os.path.join(d, "urls")
        with open(urls, "w") as f:
            f.write(("http://127.0.0.1:%d%s\n" % (port, path)) * n)
        r = subprocess.run([th.Proc.bin(), "fetch", "-c", str(concurrency), "--rate", str(rate),
                            "--timeout", str(timeout_ms), "--no-progress", "-i", urls],
                           capture_output=True, timeout=60 + 3 * n / rate * th.SLOW)
        return [json.loads(line) for line in r.stdout.decode().splitlines()]


def failed(lines):
    return [x for x in lines if x["status"] != 200]


def localhost_addresses():
    return {ai[4][0] for ai in socket.getaddrinfo("localhost", 80, 0, socket.SOCK_STREAM)}


def connections_to(host, port):
    """Established TCP connections whose far end is host:port (IPv4), from /proc/net/tcp; None
    where the kernel does not show it."""
    far = "%s:%04X" % (socket.inet_aton(host)[::-1].hex().upper(), port)
    try:
        with open("/proc/net/tcp") as f:
            rows = [line.split() for line in f.readlines()[1:]]
    except OSError:
        return None
    return sum(1 for r in rows if len(r) > 3 and r[2] == far and r[3] == "01")


def free_port_on(*hosts):
    """A port free on every host given (each an address to bind), or None."""
    for _ in range(50):
        socks = []
        try:
            s0 = socket.socket(socket.AF_INET6 if ":" in hosts[0] else socket.AF_INET)
            socks.append(s0)
            s0.bind((hosts[0], 0))
            port = s0.getsockname()[1]
            for h in hosts[1:]:
                s = socket.socket(socket.AF_INET6 if ":" in h else socket.AF_INET)
                socks.append(s)
                s.bind((h, port))
            return port
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    return None


class Replicas(unittest.TestCase):
    def setUp(self):
        self.addCleanup(th.Watchdog(120 * th.SLOW).cancel)

    def start(self, *profiles):
        ups = [upstream(p) for p in profiles]
        for u in ups:
            self.addCleanup(u.stop, 30, None)  # one may have been killed
        return ups

    def test_extras_land_on_the_other_replicas(self):
        # Every upstream answers after 200 ms, the hedge delay is 20 ms: each /api/smart request
        # fires its two extras, and they go to the two replicas it has not tried. /api/first's
        # three attempts likewise go to three different replicas.
        ups = self.start("fixed:200", "fixed:200", "fixed:200")
        n = 12
        with serve("--workers", "1", "--hedge-delay", "20",
                   *[a for u in ups for a in ("--upstream", work_url(u.port))]) as srv:
            for path in ("/api/smart", "/api/first"):
                for u in ups:
                    th.http_request(u.port, "POST", "/reset")
                for _ in range(n):
                    r = request(srv.port, "GET", path + "?timeout=5000")
                    self.assertEqual(r.status, 200, r)
                    self.assertEqual(r.headers["x-tailcut-attempts"], "3")
                seen = [stats(u) for u in ups]
                # one request after the other: each replica saw each request exactly once
                self.assertEqual([s["work_requests"] for s in seen], [n] * 3, (path, seen))
                numbers = {}
                for s in seen:
                    for k, v in th.attempts_by_value(s).items():
                        numbers[k] = numbers.get(k, 0) + v
                self.assertEqual(numbers, {"1": n, "2": n, "3": n}, path)
            m = Metrics(srv.port)
            for u in ups:
                self.assertEqual(m.get("tailcut_upstream_replica_attempts_total", set="upstream",
                                       replica=label(u.port), outcome="success")
                                 + m.get("tailcut_upstream_replica_attempts_total",
                                         set="upstream", replica=label(u.port),
                                         outcome="cancelled"), 2 * n)

    def test_killed_replica_costs_no_error_and_comes_back(self):
        ups = self.start("uniform:5:15", "uniform:5:15", "uniform:5:15")
        victim = ups[2]
        port = victim.port
        with serve("--workers", "2", "--hedge-delay", "100",
                   *[a for u in ups for a in ("--upstream", work_url(u.port))]) as srv:
            # killed a second into three seconds of 150 requests/s
            killer = threading.Timer(1.0, victim.kill)
            killer.start()
            lines = load(srv.port, 450, 150)
            killer.join()
            self.assertEqual(len(lines), 450)
            self.assertEqual(failed(lines), [])
            m = Metrics(srv.port)
            self.assertGreaterEqual(
                m.get("tailcut_upstream_replica_ejections_total", set="upstream",
                      replica=label(port), reason="failures"), 1)
            self.assertEqual(m.get("tailcut_upstream_replicas", set="upstream", state="ejected"),
                             1)
            self.assertGreater(m.get("tailcut_upstream_replica_attempts_total", set="upstream",
                                     replica=label(port), outcome="failure"), 0)

            # restarted on its port: ejected for 10 s (its first ejection), then probed, and
            # back to serving
            back = upstream("uniform:5:15", listen="127.0.0.1:%d" % port)
            self.addCleanup(back.stop)
            deadline = time.monotonic() + 30 * th.SLOW
            while time.monotonic() < deadline and stats(back)["work_requests"] == 0:
                self.assertEqual(failed(load(srv.port, 50, 50)), [])
            self.assertGreater(stats(back)["work_requests"], 0, "never probed: %s" % {
                k: v for k, v in Metrics(srv.port).values.items()
                if label(port) in str(k) or k[0] == "tailcut_upstream_replicas"})
            th.wait_for(lambda: Metrics(srv.port).get("tailcut_upstream_replicas",
                                                      set="upstream", state="available") == 3,
                        10 * th.SLOW)
            self.assertEqual(Metrics(srv.port).get("tailcut_upstream_replicas", set="upstream",
                                                   state="available"), 3)
            before = stats(back)["work_requests"]
            self.assertEqual(failed(load(srv.port, 150, 150)), [])
            self.assertGreater(stats(back)["work_requests"], before, "not serving again")

    def test_slow_replica_gets_almost_nothing(self):
        # A hedge cancels the slow replica's attempt at about the delay, and a cancelled
        # attempt is its sample: its average is about 1 s. The fast ones' averages are
        # peak-sensitive: on a loaded machine one hiccup lifts one to 100 ms or more for
        # seconds, and the median of three is then the higher fast one. 1 s stays above
        # 2 x that (a 300 ms replica, a 100 ms delay and the default factor 5 were not
        # ejected at load 5).
        fast1, fast2, slow = self.start("uniform:5:10", "uniform:5:10", "fixed:3000")
        with serve("--workers", "1", "--hedge-delay", "1000", "--eject-latency-factor", "2",
                   *[a for u in (fast1, fast2, slow) for a in ("--upstream",
                                                               work_url(u.port))]) as srv:
            self.assertEqual(failed(load(srv.port, 600, 150)), [])
            got = [stats(u)["work_requests"] for u in (fast1, fast2, slow)]
            total = sum(got)
            self.assertGreaterEqual(total, 600)
            self.assertLessEqual(got[2], 0.05 * total, got)  # at most 5% of the upstream calls
            self.assertGreaterEqual(min(got[:2]), 0.3 * total, got)
            # its average stays above 2 x the others' median: ejected for latency (the check
            # runs on the set's calls, a scrape among them)
            th.wait_for(lambda: Metrics(srv.port).get(
                "tailcut_upstream_replica_ejections_total", set="upstream",
                replica=label(slow.port), reason="latency") >= 1, 10 * th.SLOW)
            self.assertGreaterEqual(Metrics(srv.port).get(
                "tailcut_upstream_replica_ejections_total", set="upstream",
                replica=label(slow.port), reason="latency"), 1, {
                    k: v for k, v in Metrics(srv.port).values.items()
                    if "replica" in k[0] or "panic" in k[0]})

    def test_metric_names_and_labels(self):
        a, b = self.start("fixed:5", "fixed:5")
        dead = free_port_on("127.0.0.1")
        # a URL with credentials and a query: its label never shows them; an IPv6 literal's is
        # bracketed (nothing listens there: its attempts fail, the others answer)
        secret = "http://user:pw-123@127.0.0.1:%d/api/work?key=s3cret-456" % b.port
        with serve("--workers", "2", "--hedge-delay", "50", "--upstream", work_url(a.port),
                   "--upstream", secret, "--upstream", "http://[::1]:%d/api/work" % dead,
                   "--metadata-upstream", "http://127.0.0.1:%d/api/metadata" % a.port) as srv:
            for _ in range(10):
                self.assertEqual(request(srv.port, "GET", "/api/first?timeout=5000").status, 200)
            self.assertEqual(request(srv.port, "GET", "/api/metadata/x").status, 200)
            r = request(srv.port, "GET", "/metrics")
            text = r.body.decode()
            for word in ("pw-123", "s3cret-456", "user:"):
                self.assertNotIn(word, text)
            for fam, kind in (("tailcut_upstream_replicas", "gauge"),
                              ("tailcut_upstream_replica_attempts_total", "counter"),
                              ("tailcut_upstream_replica_ejections_total", "counter"),
                              ("tailcut_upstream_replica_latency_seconds", "gauge"),
                              ("tailcut_upstream_replica_in_flight", "gauge"),
                              ("tailcut_upstream_panic_total", "counter"),
                              ("tailcut_dns_failures_total", "counter")):
                self.assertIn("# TYPE %s %s\n" % (fam, kind), text)
            m = th.parse_metrics(text)
            replicas = {"upstream": [label(a.port), label(b.port), "http://[::1]:%d" % dead],
                        "metadata": [label(a.port)]}
            series = {(name, labels) for name, labels in m}
            for s, labels in replicas.items():
                for state in ("available", "ejected", "probing"):
                    self.assertIn(("tailcut_upstream_replicas",
                                   frozenset({"set": s, "state": state}.items())), series)
                self.assertEqual(sum(th.metric(m, "tailcut_upstream_replicas", set=s, state=st)
                                     for st in ("available", "ejected", "probing")),
                                 len(labels))
                for name in ("tailcut_upstream_panic_total", "tailcut_dns_failures_total"):
                    self.assertIn((name, frozenset({"set": s}.items())), series)
                for lb in labels:
                    for o in ("success", "failure", "cancelled", "not_sent"):
                        self.assertIn(("tailcut_upstream_replica_attempts_total", frozenset(
                            {"set": s, "replica": lb, "outcome": o}.items())), series)
                    for reason in ("failures", "latency"):
                        self.assertIn(("tailcut_upstream_replica_ejections_total", frozenset(
                            {"set": s, "replica": lb, "reason": reason}.items())), series)
                    for name in ("tailcut_upstream_replica_latency_seconds",
                                 "tailcut_upstream_replica_in_flight"):
                        self.assertIn((name, frozenset({"set": s, "replica": lb}.items())),
                                      series)
            # no other replica label anywhere
            shown = {dict(labels).get("replica") for name, labels in m} - {None}
            self.assertEqual(shown, set(replicas["upstream"]))
            # what the attempts did: the dead one failed, the others answered
            self.assertGreater(th.metric(m, "tailcut_upstream_replica_attempts_total",
                                         set="upstream", replica=replicas["upstream"][2],
                                         outcome="failure"), 0)
            for lb in replicas["upstream"][:2]:
                self.assertGreater(th.metric(m, "tailcut_upstream_replica_latency_seconds",
                                             set="upstream", replica=lb), 0)
            self.assertEqual(th.metric(m, "tailcut_upstream_replica_attempts_total",
                                       set="metadata", replica=label(a.port), outcome="success"),
                             1)
            stats_text = request(srv.port, "GET", "/dashboard/stats").body.decode()
            for word in ("pw-123", "s3cret-456"):
                self.assertNotIn(word, stats_text)
            s = json.loads(stats_text)
            self.assertEqual([(r["set"], r["replica"]) for r in s["replicas"]],
                             [("upstream", lb) for lb in replicas["upstream"]]
                             + [("metadata", label(a.port))])

    def test_access_log_names_the_replica(self):
        fast, slow = self.start("fixed:5", "fixed:400")
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "access.log")
            with serve("--workers", "1", "--access-log-format", "json", "--upstream",
                       work_url(fast.port), "--upstream", work_url(slow.port),
                       access_log=path) as srv:
                targets = ["/api/first?timeout=5000", "/api/all?timeout=5000",
                           "/api/within-timeout?timeout=1000", "/api/smart?timeout=5000",
                           "/nope"]
                for t in targets:
                    request(srv.port, "GET", t)
            with open(path) as f:
                lines = [json.loads(x) for x in f]
        self.assertEqual([x["target"] for x in lines], targets)
        for x in lines:
            self.assertEqual(list(x)[-1], "replica")
        # the winner (first), the first success (all, within-timeout): the fast one
        self.assertEqual([x["replica"] for x in lines],
                         [label(fast.port)] * 4 + [None])

    def test_access_log_text_is_unchanged(self):
        a, b = self.start("fixed:5", "fixed:5")
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "access.log")
            with serve("--workers", "1", "--upstream", work_url(a.port), "--upstream",
                       work_url(b.port), access_log=path) as srv:
                self.assertEqual(request(srv.port, "GET", "/api/first").status, 200)
            with open(path) as f:
                fields = f.read().split()
        self.assertEqual(len(fields), 10, fields)
        self.assertNotIn("127.0.0.1:%d" % a.port, " ".join(fields))

    def test_metadata_call_goes_once_more_to_the_other_replica(self):
        # Both metadata replicas hold a pooled connection; the next call's replica resets it
        # before any answer byte: the call goes once more, to the other replica (whose reused
        # connection dies too: the client's own re-send then opens a fresh one).
        ups = [KeepAliveUpstream(), KeepAliveUpstream()]
        for u in ups:
            self.addCleanup(u.stop)
        results = b'{"results":{"k":%d}}'
        with serve("--workers", "1", "--upstream", "http://127.0.0.1:1/api/work",
                   *[a for u in ups for a in ("--metadata-upstream",
                                              "http://127.0.0.1:%d/m" % u.port)]) as srv:
            for u in ups:
                u.play([])
            for i in range(40):
                if all(u.seen() for u in ups):
                    break
                request(srv.port, "GET", "/api/metadata/k%d" % i)
            self.assertTrue(all(u.seen() for u in ups), "a replica never got a call")
            before = Metrics(srv.port).get("tailcut_upstream_stale_retries_total")
            for u in ups:
                u.play([reset(0.050), ok(0, results % 7)])
            r = request(srv.port, "GET", "/api/metadata/k?timeout=5000")
            self.assertEqual((r.status, r.body), (200, b"7"), r)
            seen = sorted((u.seen() for u in ups), key=len)
            self.assertEqual([[a.action[0] for a in s] for s in seen],
                             [["reset"], ["reset", "answer"]], seen)
            self.assertGreater(seen[0][0].nth, 1)  # the first send was on a reused connection
            self.assertNotEqual(seen[1][0].conn, seen[1][1].conn)
            th.wait_for(lambda: Metrics(srv.port).get(
                "tailcut_upstream_stale_retries_total") - before == 2, 5 * th.SLOW)
            self.assertEqual(Metrics(srv.port).get("tailcut_upstream_stale_retries_total")
                             - before, 2)

    def test_bad_values_exit_2_naming_the_flag(self):
        cases = [("--eject-failures", "0"), ("--eject-failures", "1001"),
                 ("--eject-failures", "x"), ("--eject-latency-factor", "1.4"),
                 ("--eject-latency-factor", "100.5"), ("--eject-latency-factor", "5x"),
                 ("--eject-latency-factor", "-5"), ("--max-ejected", "101"),
                 ("--max-ejected", "-1"), ("--dns-refresh", "999"),
                 ("--dns-refresh", "3600001"), ("--upstream-discovery", "srv"),
                 ("--upstream", "ftp://x/")]
        for flag, value in cases:
            with self.subTest(flag=flag, value=value):
                r = subprocess.run([th.Proc.bin(), "serve", "--upstream", "http://127.0.0.1:1/",
                                    flag, value], capture_output=True, timeout=10 * th.SLOW)
                self.assertEqual(r.returncode, 2, r.stderr)
                err = r.stderr.decode().splitlines()
                self.assertEqual(len(err), 1, err)
                self.assertIn(flag, err[0])


def check_one_replica_per_address(test, name, hosts):
    """test.serve(url) (serve with --upstream-discovery dns) with one URL naming `name` on a port
    free on every address of hosts, a simulator on each: every address is a replica labelled
    with it, and /api/all reaches each."""
    port = free_port_on(*hosts)
    test.assertIsNotNone(port)
    ups = []
    for h in hosts:
        u = upstream("fixed:5", listen=("[%s]:%d" if ":" in h else "%s:%d") % (h, port))
        test.addCleanup(u.stop)
        ups.append(u)
    with test.serve("http://%s:%d/api/work" % (name, port)) as srv:
        # /api/all: three attempts, every one awaited (with /api/first the faster address could
        # win every time and the other count only cancelled attempts); the extras go to the
        # addresses not tried yet, so each one gets at least one success a request
        for _ in range(3):
            test.assertEqual(request(srv.port, "GET", "/api/all?timeout=5000").status, 200)
        m = Metrics(srv.port)
        for h, u in zip(hosts, ups):
            lb = "http://[%s]:%d" % (h, port) if ":" in h else label(port, h)
            test.assertGreater(m.get("tailcut_upstream_replica_attempts_total", set="upstream",
                                     replica=lb, outcome="success"), 0, lb)
            test.assertGreater(stats(u)["work_requests"], 0)
        test.assertEqual(m.get("tailcut_upstream_replicas", set="upstream", state="available"),
                         len(hosts))
        test.assertEqual(m.get("tailcut_dns_failures_total", set="upstream"), 0)


class Discovery(unittest.TestCase):
    """`localhost` through the system's own resolver."""

    def setUp(self):
        self.addCleanup(th.Watchdog(120 * th.SLOW).cancel)

    def serve(self, url):
        return serve("--workers", "1", "--upstream-discovery", "dns", "--upstream", url)

    def test_localhost(self):
        check_one_replica_per_address(self, "localhost", sorted(localhost_addresses()))

    def test_localhost_has_both_addresses(self):
        if "::1" not in localhost_addresses():
            self.skipTest("localhost has no ::1 here (%s)" % sorted(localhost_addresses()))
        check_one_replica_per_address(self, "localhost", ["127.0.0.1", "::1"])


NAME = "tailcut-replicas.test"


class DiscoveryFollowsTheName(unittest.TestCase):
    """serve runs in a mount namespace of its own where /etc/hosts is a file the test rewrites:
    NAME's addresses change under it. The simulators listen on 127.0.0.2 and 127.0.0.3 (one
    port for both, as the URL names one)."""

    def setUp(self):
        self.addCleanup(th.Watchdog(120 * th.SLOW).cancel)
        self.tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.tmp)
        self.hosts = os.path.join(self.tmp, "hosts")
        self.write_hosts([])
        # names from that file only: no DNS server is asked (a test must not wait on one)
        nsswitch = os.path.join(self.tmp, "nsswitch.conf")
        with open(nsswitch, "w") as f:
            f.write("hosts: files\n")
        mounts = 'mount --bind "$0" /etc/hosts && mount --bind "$1" /etc/nsswitch.conf'
        probe = subprocess.run(["unshare", "-m", "sh", "-c", mounts, self.hosts, nsswitch],
                               capture_output=True, timeout=10) if shutil.which("unshare") else None
        if probe is None or probe.returncode != 0:
            self.skipTest("cannot bind a private /etc/hosts (unshare -m): %s"
                          % (probe.stderr.decode().strip() if probe else "no unshare"))
        self.wrapper = os.path.join(self.tmp, "in-namespace")
        with open(self.wrapper, "w") as f:
            f.write("#!/bin/sh\nexec unshare -m sh -c '%s && shift && exec \"$@\"' "
                    '"%s" "%s" "%s" "$@"\n'
                    % (mounts, self.hosts, nsswitch, os.path.abspath(th.Proc.bin())))
        os.chmod(self.wrapper, 0o755)
        self.port = free_port_on("127.0.0.2", "127.0.0.3")
        self.ups = {}
        for h in ("127.0.0.2", "127.0.0.3"):
            u = upstream("fixed:5", listen="%s:%d" % (h, self.port))
            self.addCleanup(u.stop)
            self.ups[h] = u
        self.assertIsNotNone(self.port)

    def write_hosts(self, addresses):
        # in place: the bind mount is of this inode
        with open(self.hosts, "w") as f:
            f.write("127.0.0.1 localhost\n" + "".join("%s %s\n" % (a, NAME) for a in addresses))

    def serve(self, url=None):
        srv = th.Proc("serve", "--access-log", "off", "--workers", "2", "--upstream-discovery",
                      "dns", "--dns-refresh", "1000", "--upstream",
                      url or "http://%s:%d/api/work" % (NAME, self.port), binary=self.wrapper)
        self.addCleanup(srv.stop)
        return srv

    def test_a_name_with_an_ipv4_and_an_ipv6_address(self):
        # what `localhost` is on most machines: 127.0.0.1 and ::1
        with open(self.hosts, "w") as f:
            f.write("127.0.0.1 %s\n::1 %s\n" % (NAME, NAME))
        check_one_replica_per_address(self, NAME, ["127.0.0.1", "::1"])

    def available(self, srv):
        m = Metrics(srv.port)
        return {dict(labels)["replica"] for (name, labels), v in m.values.items()
                if name == "tailcut_upstream_replica_in_flight"}

    def replicas_become(self, srv, want):
        th.wait_for(lambda: self.available(srv) == want, 10 * th.SLOW)
        self.assertEqual(self.available(srv), want)

    def test_addresses_come_and_go(self):
        self.write_hosts(["127.0.0.2"])
        srv = self.serve()
        lb2, lb3 = label(self.port, "127.0.0.2"), label(self.port, "127.0.0.3")
        self.assertEqual(self.available(srv), {lb2})
        self.assertEqual(request(srv.port, "GET", "/api/first").status, 200)

        self.write_hosts(["127.0.0.2", "127.0.0.3"])  # appears
        self.replicas_become(srv, {lb2, lb3})
        # /api/all reaches both and cancels no attempt: every connection stays in the pools
        # (with /api/first, a loser's is closed, and 127.0.0.3 could win every time)
        for _ in range(4):
            self.assertEqual(request(srv.port, "GET", "/api/all").status, 200)
        self.assertGreater(stats(self.ups["127.0.0.3"])["work_requests"], 0)

        # serve keeps connections to 127.0.0.2 in its pools (each answer's, kept alive)
        kept = connections_to("127.0.0.2", self.port)
        if kept is not None:
            self.assertGreater(kept, 0)
        self.write_hosts(["127.0.0.3"])  # disappears
        self.replicas_become(srv, {lb3})
        if kept is not None:  # every worker closed its idle ones at once
            th.wait_for(lambda: connections_to("127.0.0.2", self.port) == 0, 5 * th.SLOW)
            self.assertEqual(connections_to("127.0.0.2", self.port), 0)
        gone = stats(self.ups["127.0.0.2"])["work_requests"]
        for _ in range(6):
            self.assertEqual(request(srv.port, "GET", "/api/first").status, 200)
        self.assertEqual(stats(self.ups["127.0.0.2"])["work_requests"], gone)

        self.write_hosts([])  # fails: the last good set stays, the failures are counted
        th.wait_for(lambda: Metrics(srv.port).get("tailcut_dns_failures_total",
                                                  set="upstream") >= 2, 10 * th.SLOW)
        self.assertGreaterEqual(Metrics(srv.port).get("tailcut_dns_failures_total",
                                                      set="upstream"), 2)
        self.assertEqual(self.available(srv), {lb3})
        self.assertEqual(request(srv.port, "GET", "/api/first").status, 200)

    def test_a_name_that_does_not_resolve_at_start(self):
        srv = self.serve()  # NAME is not in the file yet
        err = srv.stderr_text()
        self.assertEqual(len(re.findall("cannot resolve %s" % re.escape(NAME), err)), 1, err)
        # no replica: attempts fail as connect errors, serve answers
        r = request(srv.port, "GET", "/api/smart?timeout=2000")
        self.assertEqual(r.status, 502, r)
        self.write_hosts(["127.0.0.2"])  # tried every second
        th.wait_for(lambda: request(srv.port, "GET", "/api/smart?timeout=2000").status == 200,
                    10 * th.SLOW)
        self.assertEqual(request(srv.port, "GET", "/api/smart?timeout=2000").status, 200)
        self.assertGreaterEqual(Metrics(srv.port).get("tailcut_dns_failures_total",
                                                      set="upstream"), 1)
        self.assertEqual(len(re.findall("cannot resolve", srv.stderr_text())), 1)


if __name__ == "__main__":
    unittest.main(verbosity=2)

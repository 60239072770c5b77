#!/usr/bin/env python3
"""The live dashboard of `tailcut serve` (docs/dashboard.md): GET /dashboard is one
self-contained page whose Content-Security-Policy admits exactly its own inline style and script
(by their SHA-256), GET /dashboard/stats counts a known batch of requests exactly (window totals,
per-second history, attempts, hedges, latency within the histogram's resolution), and
--admin-listen moves /metrics and the dashboard to a listener of their own (the main one answers
them 404), which also answers /healthz and /readyz, stays open while the main listener drains,
and refuses a busy port with the same one line as --listen.

The browser's view of the page is tests/integration/test_dashboard_browser.py.
"""
import base64
import errno
import hashlib
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import tchelpers as th  # noqa: E402

UPSTREAM_MS = 20


def csp_hash(text):
    return "'sha256-%s'" % base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


def wait_next_second(t0):
    """Sleeps until the second holding t0 is complete on the server (the window shows complete
    seconds only), with a margin."""
    time.sleep(max(0.0, t0 + 1.1 - time.monotonic()))


class Dashboard(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.watchdog = th.Watchdog(120 * th.SLOW)
        cls.up = th.Proc("upstream", "--profile", "fixed:%d" % UPSTREAM_MS)
        cls.srv = th.Proc("serve", "--workers", "2", "--access-log", "off",
                          "--upstream", "http://127.0.0.1:%d/api/work" % cls.up.port,
                          "--metadata-upstream", "http://127.0.0.1:%d/api/metadata" % cls.up.port,
                          "--hedge-delay", "5000", "--hedge-budget", "50")

    @classmethod
    def tearDownClass(cls):
        cls.srv.stop()
        cls.up.stop()
        cls.watchdog.cancel()

    def test_page_and_its_policy(self):
        st, hdrs, body = th.http_request(self.srv.port, "GET", "/dashboard")
        self.assertEqual(st, 200)
        self.assertEqual(hdrs["content-type"], "text/html; charset=utf-8")
        page = body.decode()
        styles = re.findall(r"<style>(.*?)</style>", page, re.S)
        scripts = re.findall(r"<script>(.*?)</script>", page, re.S)
        self.assertEqual(len(styles), 1)
        self.assertEqual(len(scripts), 1)
        self.assertIn("/dashboard/stats", page)
        csp = dict(d.strip().split(" ", 1) for d in hdrs["content-security-policy"].split(";"))
        self.assertEqual(csp["default-src"], "'none'")
        self.assertEqual(csp["script-src"], csp_hash(scripts[0]))
        self.assertEqual(csp["style-src"], csp_hash(styles[0]))
        self.assertEqual(csp["connect-src"], "'self'")
        self.assertEqual(hdrs["x-content-type-options"], "nosniff")
        # nothing from outside: no URL with a scheme or a host, no external script or sheet
        self.assertNotRegex(page, r"(?i)(src|href)\s*=\s*[\"'](?!data:)")
        self.assertNotRegex(page, r"(?i)https?://(?!www\.w3\.org/2000/svg)")
        self.assertNotRegex(page, r"(?i)\sstyle\s*=")  # inline style attributes would be refused
        st, hdrs, body = th.http_request(self.srv.port, "HEAD", "/dashboard")
        self.assertEqual((st, body), (200, b""))
        self.assertEqual(int(hdrs["content-length"]), len(page.encode()))

    def test_stats_count_a_known_batch(self):
        port = self.srv.port
        wait_next_second(time.monotonic())  # what other cases did is complete in `before`
        _, _, before = th.get_json(port, "/dashboard/stats")
        for _ in range(12):
            self.assertEqual(th.http_request(port, "GET", "/api/smart")[0], 200)
        for _ in range(3):
            self.assertEqual(th.http_request(port, "GET", "/api/smart?timeout=abc")[0], 400)
        for _ in range(2):
            self.assertEqual(th.http_request(port, "GET", "/api/first")[0], 200)
        self.assertEqual(th.http_request(port, "GET", "/no/such/path")[0], 404)
        wait_next_second(time.monotonic())
        st, hdrs, s = th.get_json(port, "/dashboard/stats")
        self.assertNotIn("routes", s)  # without --config: the snapshot as it always was
        self.assertEqual(st, 200)
        self.assertEqual(hdrs["content-type"], "application/json")
        self.assertGreater(s["seq"], before["seq"])
        self.assertEqual(s["window_s"], 300)
        self.assertEqual(s["workers"], 2)

        def count(doc, ep, status):
            return sum(r["count"] for r in doc["window"]["requests"]
                       if r["endpoint"] == ep and r["status"] == status)

        # other cases of this class may have run first: compare with the snapshot before
        self.assertEqual(count(s, "smart", 200) - count(before, "smart", 200), 12)
        self.assertEqual(count(s, "smart", 400) - count(before, "smart", 400), 3)
        self.assertEqual(count(s, "first", 200) - count(before, "first", 200), 2)
        self.assertEqual(count(s, "other", 404) - count(before, "other", 404), 1)
        # the dashboard's own requests are never counted
        eps = {r["endpoint"] for r in s["window"]["requests"]}
        self.assertNotIn("dashboard_stats", eps)
        self.assertNotIn("dashboard", eps)
        w, bw = s["window"], before["window"]
        self.assertEqual(w["requests_total"], sum(r["count"] for r in w["requests"]))
        # /api/smart: one attempt each (the hedge delay is 5 s); /api/first: three, one wins
        def attempts(doc):
            return sum(doc["window"]["attempts"].values())

        self.assertEqual(attempts(s) - attempts(before), 12 + 3 * 2)
        self.assertGreaterEqual(w["attempts"]["success"] - bw["attempts"]["success"], 12 + 2)
        self.assertEqual(w["hedges"]["fired"] - bw["hedges"]["fired"], 0)
        self.assertEqual(w["latency_ms"]["count"] - bw["latency_ms"]["count"], 12 + 3 + 2)
        # the history holds the same figures second by second
        for r in w["requests"]:
            hist = [h for h in s["history"]["requests"]
                    if (h["endpoint"], h["status"]) == (r["endpoint"], r["status"])]
            self.assertEqual(len(hist), 1)
            self.assertEqual(len(hist[0]["per_second"]), 300)
            self.assertEqual(sum(hist[0]["per_second"]), r["count"])
        for k, v in w["attempts"].items():
            self.assertEqual(sum(s["history"]["attempts"][k]), v, k)
        self.assertEqual(sum(s["history"]["latency_ms"]["count"]), w["latency_ms"]["count"])
        # seconds without requests have no percentiles; the others do
        lat = s["history"]["latency_ms"]
        for i in range(300):
            self.assertEqual(lat["p50"][i] is None, lat["count"][i] == 0)
        # the successful requests took the upstream's 20 ms and a little more; the 400s nothing
        if before["window"]["latency_ms"]["count"] == 0:
            self.assertLess(w["latency_ms"]["p50"], UPSTREAM_MS * 1.07 + 30 * th.SLOW)
            self.assertGreaterEqual(w["latency_ms"]["p99"], UPSTREAM_MS * (1 - 1 / 16))
        self.assertEqual(s["now"]["in_flight"], 0)
        self.assertEqual(s["now"]["pool"]["max"], 1024 * 2)
        self.assertGreaterEqual(s["now"]["pool"]["open"], 1)
        self.assertEqual(s["now"]["hedge_delay_ms"], 5000)
        self.assertEqual(s["now"]["hedge_delay_mode"], "fixed")
        self.assertEqual(s["now"]["budget"]["percent"], 50)
        self.assertEqual(s["now"]["budget"]["allowed"],
                         s["now"]["budget"]["smart_requests"] * 50 // 100 + 1)
        # the same figures as /metrics
        st, _, text = th.http_request(port, "GET", "/metrics")
        m = th.parse_metrics(text.decode())
        if before["window"]["requests_total"] == 0:
            self.assertEqual(th.metric(m, "tailcut_requests_total", endpoint="smart",
                                       status="200"), 12)

    def test_in_flight(self):
        """A request held by the upstream shows in now.in_flight while it waits."""
        port = self.srv.port
        done = threading.Event()

        def slow():
            th.http_request(port, "GET", "/api/smart?timeout=%d" % (UPSTREAM_MS + 1500),
                            timeout=10 * th.SLOW)
            done.set()

        # a scenario step holds the next attempt for 1.5 s
        st, _, _ = th.http_request(self.up.port, "POST", "/scenario",
                                   body='[{"delay_ms":1500}]')
        self.assertEqual(st, 200)
        t = threading.Thread(target=slow)
        t.start()
        seen = th.wait_for(lambda: th.get_json(port, "/dashboard/stats")[2]["now"]["in_flight"]
                           == 1, 1.2, 0.05)
        t.join(10 * th.SLOW)
        self.assertTrue(seen)
        self.assertTrue(done.is_set())
        self.assertTrue(th.wait_for(
            lambda: th.get_json(port, "/dashboard/stats")[2]["now"]["in_flight"] == 0, 2))


class DashboardRoutes(unittest.TestCase):
    """With --config, /dashboard/stats has "routes": each route's name, prefix, kind, hedge delay,
    hedges fired/won/denied (last second and since it began), budget, pool and replicas; without
    it, none (Dashboard above: the snapshot as before)."""

    def test_two_routes(self):
        self.addCleanup(th.Watchdog(120 * th.SLOW).cancel)
        tmp = tempfile.TemporaryDirectory(prefix="tailcut-dash-")
        self.addCleanup(tmp.cleanup)
        a = th.Proc("upstream", "--access-log", "off", "--profile", "fixed:%d" % UPSTREAM_MS)
        self.addCleanup(a.stop)
        b = th.Proc("upstream", "--access-log", "off", "--profile", "fixed:%d" % UPSTREAM_MS)
        self.addCleanup(b.stop)
        work = "http://127.0.0.1:%d/api/work"
        path = os.path.join(tmp.name, "two.yaml")
        with open(path, "w") as f:
            f.write("access_log: off\n"
                    "routes:\n"
                    "  - {prefix: /api/, kind: api, upstreams: ['%s'],\n"
                    "     hedge: {delay: 5000, budget_percent: 50}}\n"
                    "  - {prefix: /b/, kind: api, name: bee, upstreams: ['%s', '%s'],\n"
                    "     hedge: {delay: 5, extra: 1, budget_percent: off}}\n"
                    % (work % a.port, work % a.port, work % b.port))
        srv = th.Proc("serve", "--config", path, "--workers", "2")
        self.addCleanup(srv.stop)
        for _ in range(4):
            self.assertEqual(th.http_request(srv.port, "GET", "/api/smart")[0], 200)
        for _ in range(6):  # the upstream takes 20 ms: each hedges at 5 ms
            self.assertEqual(th.http_request(srv.port, "GET", "/b/smart")[0], 200)
        s = th.get_json(srv.port, "/dashboard/stats")[2]
        self.assertIn("now", s)  # the snapshot as before, and the routes after it
        routes = s["routes"]
        self.assertEqual([(r["name"], r["prefix"], r["kind"], r["hedge_delay_ms"],
                           r["hedge_delay_mode"]) for r in routes],
                         [("/api/", "/api/", "api", 5000, "fixed"), ("bee", "/b/", "api", 5,
                                                                       "fixed")])
        api, bee = routes
        self.assertEqual(api["hedges_total"], {"fired": 0, "won": 0, "denied": 0,
                                               "extra_attempts": 0})
        self.assertEqual(bee["hedges_total"]["fired"], 6)
        self.assertEqual(bee["hedges_total"]["extra_attempts"], 6)
        self.assertEqual(bee["hedges_total"]["denied"], 0)
        self.assertLessEqual(bee["hedges_total"]["won"], 6)
        for r in routes:
            self.assertEqual(set(r["hedges"]), {"fired", "won", "denied", "extra_attempts"})
        self.assertEqual(api["budget"]["percent"], 50)
        self.assertEqual(set(api["budget"]), {"percent", "smart_requests", "extra_attempts",
                                              "allowed", "denied"})
        self.assertIsNone(bee["budget"])
        label = "http://127.0.0.1:%d"
        self.assertEqual([(x["set"], x["replica"]) for x in api["replicas"]],
                         [("upstream", label % a.port)])
        self.assertEqual(sorted(x["replica"] for x in bee["replicas"]),
                         sorted([label % a.port, label % b.port]))
        self.assertEqual(bee["replica_sets"]["upstream"]["available"], 2)
        self.assertIsNone(bee["replica_sets"]["metadata"])
        self.assertEqual(api["pool_max"], 1024 * 1 * 2)  # per replica, per worker
        self.assertEqual(bee["pool_max"], 1024 * 2 * 2)
        # the last second's figures come from a sample a second: within a few seconds the
        # second that held bee's hedges shows them, and the next one shows none
        seen = []

        def last_fired():
            seen.append(th.get_json(srv.port, "/dashboard/stats")[2]["routes"][1]["hedges"])
            return seen[-1]["fired"] == 0 and any(x["fired"] > 0 for x in seen)
        self.assertTrue(th.wait_for(last_fired, 5 * th.SLOW, 0.2), seen)
        self.assertLessEqual(max(x["fired"] for x in seen), 6)
        # the page has the route table
        page = th.http_request(srv.port, "GET", "/dashboard")[2].decode()
        self.assertIn('id="routes-body"', page)


SERVE = ["serve", "--workers", "2", "--upstream", "http://127.0.0.1:1/api/work",
         "--metadata-upstream", "http://127.0.0.1:1/api/metadata"]


class AdminListen(unittest.TestCase):
    def setUp(self):
        self.addCleanup(th.Watchdog(60 * th.SLOW).cancel)

    def test_moves_the_three_paths(self):
        with th.Proc(*SERVE, "--admin-listen", "127.0.0.1:0", "--access-log", "off") as p:
            self.assertIsNotNone(p.admin_port)
            self.assertNotEqual(p.admin_port, p.port)
            lines = p.stderr_text().splitlines()
            self.assertEqual(lines[-2:], ["tailcut: admin listening on http://127.0.0.1:%d"
                                          % p.admin_port,
                                          "tailcut: listening on http://127.0.0.1:%d" % p.port])
            for path in ("/metrics", "/dashboard", "/dashboard/stats"):
                st, hdrs, body = th.http_request(p.port, "GET", path)
                self.assertEqual(st, 404, path)
                self.assertEqual(th.Resp(st, hdrs, body, 0).json()["error"], "not_found")
            self.assertEqual(th.http_request(p.port, "GET", "/healthz")[0], 200)
            st, hdrs, _ = th.http_request(p.admin_port, "GET", "/metrics")
            self.assertEqual((st, hdrs["content-type"]), (200, "text/plain; version=0.0.4"))
            st, hdrs, _ = th.http_request(p.admin_port, "GET", "/dashboard")
            self.assertEqual((st, hdrs["content-type"]), (200, "text/html; charset=utf-8"))
            self.assertIn("content-security-policy", hdrs)
            st, _, s = th.get_json(p.admin_port, "/dashboard/stats")
            self.assertEqual(st, 200)
            # the main listener's 404s for the moved paths are counted as "other" 404s
            time.sleep(1.2)
            s = th.get_json(p.admin_port, "/dashboard/stats")[2]
            self.assertEqual(sum(r["count"] for r in s["window"]["requests"]
                                 if (r["endpoint"], r["status"]) == ("other", 404)), 3)
            st, _, body = th.get_json(p.admin_port, "/healthz")
            self.assertEqual((st, body), (200, {"status": "ok"}))
            # /readyz answers on the admin listener exactly as on the main one
            main_ready = th.http_request(p.port, "GET", "/readyz")
            admin_ready = th.http_request(p.admin_port, "GET", "/readyz")
            self.assertEqual((main_ready[0], main_ready[2]), (admin_ready[0], admin_ready[2]))
            # nothing else is on the admin listener
            for path in ("/api/smart", "/api/metadata/x", "/", "/dashboardx"):
                self.assertEqual(th.http_request(p.admin_port, "GET", path)[0], 404, path)

    def test_stays_open_while_draining(self):
        """The main listener drains (a request still waits for its slow upstream); the admin
        listener answers throughout, until the process exits."""
        up = th.Proc("upstream", "--profile", "fixed:1500")
        try:
            p = th.Proc("serve", "--workers", "1", "--access-log", "off",
                        "--upstream", "http://127.0.0.1:%d/api/work" % up.port,
                        "--metadata-upstream", "http://127.0.0.1:%d/api/metadata" % up.port,
                        "--hedge-extra", "0", "--admin-listen", "127.0.0.1:0")
            got = []
            t = threading.Thread(target=lambda: got.append(
                th.http_request(p.port, "GET", "/api/smart", timeout=10 * th.SLOW)[0]))
            t.start()
            th.wait_for(lambda: th.get_json(p.admin_port, "/dashboard/stats")[2]["now"]
                        ["in_flight"] == 1, 5)
            p.proc.send_signal(15)
            self.assertTrue(th.wait_for(lambda: "draining" in p.stderr_text(), 5))
            with self.assertRaises(OSError):  # the main listener no longer accepts
                th.http_request(p.port, "GET", "/healthz", timeout=1)
            self.assertEqual(th.http_request(p.admin_port, "GET", "/healthz")[0], 200)
            self.assertEqual(th.http_request(p.admin_port, "GET", "/metrics")[0], 200)
            t.join(10 * th.SLOW)
            self.assertEqual(got, [200])
            self.assertEqual(p.proc.wait(10 * th.SLOW), 0)  # drained: exits, the admin too
            p.stop()
        finally:
            up.stop()

    def test_busy_admin_port(self):
        s = socket.socket()
        self.addCleanup(s.close)
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        r = subprocess.run([th.Proc.bin(), *SERVE, "--listen", "127.0.0.1:0",
                            "--admin-listen", "127.0.0.1:%d" % port],
                           capture_output=True, text=True, timeout=30 * th.SLOW,
                           stdin=subprocess.DEVNULL)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertEqual(r.stderr.lower().splitlines(),
                         ["tailcut: cannot listen on 127.0.0.1:%d: %s"
                          % (port, os.strerror(errno.EADDRINUSE).lower())])
        self.assertEqual(r.stdout, "")

    def test_bad_value_and_help(self):
        r = subprocess.run([th.Proc.bin(), "serve", "--admin-listen", "nowhere"],
                           capture_output=True, text=True, timeout=30 * th.SLOW)
        self.assertEqual(r.returncode, 2)
        self.assertEqual(len(r.stderr.splitlines()), 1)
        self.assertIn("--admin-listen", r.stderr)
        r = subprocess.run([th.Proc.bin(), "serve", "--help"], capture_output=True, text=True,
                           timeout=30 * th.SLOW)
        self.assertIn("--admin-listen HOST:PORT", r.stdout)


if __name__ == "__main__":
    unittest.main(verbosity=2)

#!/usr/bin/env python3
"""The dashboard in a real browser (docs/dashboard.md): headless Chromium loads /dashboard from a
running `tailcut serve` after a fixed, finished batch of requests, lets the page's timers run
(--virtual-time-budget) and dumps the rendered DOM. The page writes every figure it shows into a
data-stat/data-value pair and the snapshot's sequence number into #dash[data-seq]; this test
checks that every figure equals the same figure of /dashboard/stats (read before and after the
browser: the batch is finished, so both agree), that the script ran and the stylesheet applied
under the page's Content-Security-Policy, and that the charts drew the points the history holds.
A second run saves a screenshot, dashboard.png, next to the binary (the build tree);
`make screenshot` copies it to docs/. Every latency figure has three decimals (LatencyPrecision
checks one whose value ends in zeros, which parsed JSON drops).

TC_DASHBOARD_SECONDS=N (for `make screenshot`) spreads the traffic over N seconds, with a slow
upstream (a brownout) in the middle third, so the charts have something to show.
"""
import html.parser
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import tchelpers as th  # noqa: E402

SECONDS = int(os.environ.get("TC_DASHBOARD_SECONDS", "0"))
BUDGET_MS = 2500  # virtual time the page runs: two or three polls
# Gauges of the moment, which the page's own connections move (upper bounds, not equality):
# client connections, and the upstream connections kept open.
MOMENTARY = {"now.connections": 8, "now.pool.open": 64, "now.pool.busy": 0}
# What the replicas panel shows of each replica of /dashboard/stats (its id is not shown).
REPLICA_FIELDS = ("set", "replica", "state", "attempts_per_s", "success_ratio", "average_ms",
                  "in_flight")


def chromium():
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    raise AssertionError("chromium is not installed: run scripts/install-deps")


class DomReader(html.parser.HTMLParser):
    """Collects the figures (data-stat elements with their value and text), #dash's attributes
    and each chart's data-points and polyline points."""

    def __init__(self):
        super().__init__()
        self.figures = []  # [path, data-value, text]
        self.dash = {}
        self.charts = {}  # id -> {"points": data-points, "drawn": points in its polylines}
        self._open = []  # figures whose text is being read, with their tag
        self._chart = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id") == "dash":
            self.dash = a
        if tag == "svg" and "data-points" in a:
            self._chart = a["id"]
            self.charts[self._chart] = {"points": int(a["data-points"]), "drawn": 0}
        if tag == "polyline" and self._chart:
            self.charts[self._chart]["drawn"] += len(a["points"].split())
        if tag == "circle" and self._chart:  # a lone point
            self.charts[self._chart]["drawn"] += 1
        if "data-stat" in a:
            fig = [a["data-stat"], a.get("data-value"), ""]
            self.figures.append(fig)
            self._open.append((tag, fig))
        elif self._open:
            self._open.append((tag, None))

    def handle_endtag(self, tag):
        if tag == "svg":
            self._chart = None
        if self._open:
            self._open.pop()

    def handle_data(self, data):
        for _, fig in self._open:
            if fig is not None:
                fig[2] += data


def view_of(s):
    """The figures a snapshot gives, by the page's data-stat paths."""
    v = {}

    def flat(prefix, obj):
        if isinstance(obj, dict):
            for k, x in obj.items():
                flat(prefix + "." + k, x)
        else:
            v[prefix] = obj

    flat("now", s["now"])
    v["window.requests_total"] = s["window"]["requests_total"]
    for k in ("attempts", "hedges", "latency_ms"):
        flat("window." + k, s["window"][k])
    for r in s["window"]["requests"]:
        v["window.requests.%s.%s.count" % (r["endpoint"], r["status"])] = r["count"]
    total = 0
    for r in s["history"]["requests"]:
        v["last.requests.%s.%s" % (r["endpoint"], r["status"])] = r["per_second"][-1]
        total += r["per_second"][-1]
    v["last.requests_total"] = total
    for k in ("attempts", "hedges"):
        for name, series in s["history"][k].items():
            v["last.%s.%s" % (k, name)] = series[-1]
    # the replicas panel: every replica of both sets, and each set's counts
    for i, r in enumerate(s["replicas"]):
        for k in REPLICA_FIELDS:
            v["replicas.%d.%s" % (i, k)] = r[k]
    for name, counts in s["replica_sets"].items():
        if counts is not None:
            for k, x in counts.items():
                v["replica_sets.%s.%s" % (name, k)] = x
    return v


def same(page_value, json_value):
    if json_value is None:
        return page_value == "null"
    if isinstance(json_value, str):
        return page_value == json_value
    return float(page_value) == float(json_value)


def browse(test, tmp, port, *args):
    """Runs headless Chromium on the dashboard at port with args; returns its stdout."""
    argv = [chromium(), "--headless", "--disable-gpu", "--disable-dev-shm-usage",
            "--no-first-run", "--hide-scrollbars", "--window-size=1280,1240",
            "--user-data-dir=" + os.path.join(tmp, "profile"),
            "--virtual-time-budget=%d" % BUDGET_MS, *args,
            "http://127.0.0.1:%d/dashboard" % port]
    if os.geteuid() == 0:
        argv.insert(1, "--no-sandbox")  # Chromium's sandbox refuses to run as root
    r = subprocess.run(argv, capture_output=True, timeout=60 * th.SLOW, stdin=subprocess.DEVNULL)
    test.assertEqual(r.returncode, 0, r.stderr.decode(errors="replace")[-2000:])
    return r.stdout.decode()


class DashboardInBrowser(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.watchdog = th.Watchdog(max(120, 3 * SECONDS) * th.SLOW)
        cls.tmp = tempfile.TemporaryDirectory()
        cls.up = th.Proc("upstream", "--profile", "mix:5:15:60:120:0.1", "--seed", "7")
        cls.srv = th.Proc("serve", "--workers", "2", "--access-log", "off", "--hedge-delay", "25",
                          "--hedge-budget", "20",
                          "--upstream", "http://127.0.0.1:%d/api/work" % cls.up.port,
                          "--metadata-upstream", "http://127.0.0.1:%d/api/metadata" % cls.up.port)

    @classmethod
    def tearDownClass(cls):
        cls.srv.stop()
        cls.up.stop()
        cls.tmp.cleanup()
        cls.watchdog.cancel()

    def batch(self, n, path="/api/smart"):
        urls = os.path.join(self.tmp.name, "urls")
        with open(urls, "w") as f:
            for i in range(n):
                f.write("http://127.0.0.1:%d%s\n" % (self.srv.port, path))
        r = subprocess.run([th.Proc.bin(), "fetch", "-c", "8", "--no-progress", "-i", urls,
                            "-o", os.devnull], capture_output=True, timeout=60 * th.SLOW)
        self.assertIn(r.returncode, (0, 3), r.stderr)

    def traffic(self):
        if SECONDS == 0:  # the test's fixed batch: three rounds, some failures among them
            for _ in range(3):
                self.batch(60)
                self.batch(3, "/api/first")
                self.batch(2, "/nope")
                time.sleep(0.3)
            return
        for sec in range(SECONDS):
            brownout = SECONDS // 3 <= sec < 2 * SECONDS // 3
            if sec in (SECONDS // 3, 2 * SECONDS // 3):
                profile = "mix:20:60:150:400:0.2" if brownout else "mix:5:15:60:120:0.1"
                th.http_request(self.up.port, "POST", "/profile",
                                body=json.dumps({"profile": profile}))
            t0 = time.monotonic()
            self.batch(120)
            if sec % 5 == 0:
                self.batch(2, "/nope")
            time.sleep(max(0.0, t0 + 1 - time.monotonic()))

    def browser(self, *args):
        return browse(self, self.tmp.name, self.srv.port, *args)

    def test_page_shows_the_snapshot(self):
        self.traffic()
        # The window no longer changes once the batch's last second is complete (1 s); the
        # "last second" figures once the newest complete second is after it (2 s): before
        # that, a browser that takes a while would see them move between its poll and `after`.
        time.sleep(2.1)
        before = th.get_json(self.srv.port, "/dashboard/stats")[2]
        dom = self.browser("--dump-dom")
        after = th.get_json(self.srv.port, "/dashboard/stats")[2]
        self.assertEqual(before["window"], after["window"], "the figures moved while it looked")

        page = DomReader()
        page.feed(dom)
        self.assertEqual(page.dash.get("data-loaded"), "1", "the script did not run: " + dom[:500])
        self.assertEqual(page.dash.get("data-css"), "1", "the stylesheet did not apply")
        seq = int(page.dash["data-seq"])
        self.assertTrue(before["seq"] < seq < after["seq"], (before["seq"], seq, after["seq"]))

        want = view_of(after)
        shown = {}
        for path, value, text in page.figures:
            self.assertIn(path, want, "the page shows a figure the snapshot lacks")
            if path in MOMENTARY:  # the browser's own connection is among them as it looks
                self.assertTrue(0 <= int(value) <= MOMENTARY[path], (path, value))
            else:
                self.assertTrue(same(value, want[path]), "%s: page %r, stats %r"
                                % (path, value, want[path]))
            self.assertEqual(text.strip(), "\u2013" if value == "null" else value, path)
            if path.startswith("window.latency_ms.p") and value != "null":
                self.assertRegex(value, r"^[0-9]+\.[0-9]{3}$", path)  # one precision for all
            shown[path] = value
        # every figure the snapshot has is on the page (the per-second history is in charts)
        self.assertEqual(set(want) - set(shown), set())
        w = after["window"]
        self.assertGreaterEqual(sum(r["count"] for r in w["requests"]
                                    if r["endpoint"] == "smart"), 180)
        self.assertGreater(w["hedges"]["fired"], 0)
        self.assertIsNotNone(w["latency_ms"]["p99"])
        # the replicas panel: the one upstream and the one metadata replica, both available
        # and idle now, each with the average latency its attempts gave it
        label = "http://127.0.0.1:%d" % self.up.port
        self.assertEqual([(r["set"], r["replica"], r["state"], r["in_flight"])
                          for r in after["replicas"]],
                         [("upstream", label, "available", 0), ("metadata", label, "available", 0)])
        self.assertEqual(after["replicas"][0]["attempts_per_s"], 0)  # nothing since the batch
        self.assertGreater(after["replicas"][0]["average_ms"], 0)
        self.assertEqual(after["replica_sets"]["upstream"],
                         {"available": 1, "ejected": 0, "probing": 0, "panics": 0,
                          "dns_failures": 0})

        # the charts: the points they claim are drawn (polyline vertices and lone-point circles),
        # and as many as the history has values
        h = after["history"]
        lat = page.charts["chart-latency"]
        self.assertEqual(lat["points"], lat["drawn"])
        self.assertEqual(lat["drawn"], sum(1 for q in ("p50", "p90", "p99", "p999")
                                           for x in h["latency_ms"][q] if x is not None))
        self.assertGreater(lat["drawn"], 0)
        req = page.charts["chart-requests"]
        endpoints = {r["endpoint"] for r in h["requests"]}
        self.assertEqual(req["drawn"], req["points"])
        self.assertEqual(req["drawn"], 300 * len(endpoints))
        self.assertEqual(page.charts["chart-hedges"]["drawn"], 300 * 3)
        self.assertGreater(page.charts["chart-attempts"]["drawn"], 0)

        shot = os.path.join(os.path.dirname(os.path.abspath(th.Proc.bin())), "dashboard.png")
        self.browser("--screenshot=" + shot)
        with open(shot, "rb") as f:
            self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")


class LatencyPrecision(unittest.TestCase):
    """Every latency figure on the page has the same three decimals, also when its value has
    trailing zeros. An upstream that always takes 800 ms puts every request in the histogram
    bucket whose midpoint is 819.200 ms, which JSON parsing turns into 819.2."""

    def setUp(self):
        self.addCleanup(th.Watchdog(120 * th.SLOW).cancel)
        self.tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self.tmp.cleanup)
        self.up = th.Proc("upstream", "--profile", "fixed:800", "--access-log", "off")
        self.addCleanup(self.up.stop)
        self.srv = th.Proc("serve", "--workers", "1", "--access-log", "off", "--hedge-delay",
                           "10000", "--upstream", "http://127.0.0.1:%d/api/work" % self.up.port,
                           "--metadata-upstream",
                           "http://127.0.0.1:%d/api/metadata" % self.up.port)
        self.addCleanup(self.srv.stop)

    def test_three_decimals(self):
        urls = os.path.join(self.tmp.name, "urls")
        with open(urls, "w") as f:
            f.write(("http://127.0.0.1:%d/api/smart\n" % self.srv.port) * 8)
        r = subprocess.run([th.Proc.bin(), "fetch", "-c", "8", "--no-progress", "-i", urls,
                            "-o", os.devnull], capture_output=True, timeout=60 * th.SLOW)
        self.assertEqual(r.returncode, 0, r.stderr)
        time.sleep(1.1)  # the requests' second is complete: the window no longer changes
        lat = th.get_json(self.srv.port, "/dashboard/stats")[2]["window"]["latency_ms"]
        self.assertEqual(lat["count"], 8)
        self.assertEqual(lat["p50"], 819.2, "the median left the 786..852 ms bucket: %r" % lat)

        page = DomReader()
        page.feed(browse(self, self.tmp.name, self.srv.port, "--dump-dom"))
        self.assertEqual(page.dash.get("data-loaded"), "1")
        shown = {path: (value, text.strip()) for path, value, text in page.figures
                 if path.startswith("window.latency_ms.p")}
        self.assertEqual(sorted(shown), ["window.latency_ms.p50", "window.latency_ms.p90",
                                         "window.latency_ms.p99", "window.latency_ms.p999"])
        for path, (value, text) in shown.items():
            want = "%.3f" % lat[path.rsplit(".", 1)[1]]
            self.assertEqual((value, text), (want, want), path)


if __name__ == "__main__":
    unittest.main(verbosity=2)

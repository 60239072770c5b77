#!/usr/bin/env python3
"""`tailcut serve --config FILE` (CONTRACT section 8, docs/serve.md "Configuration file"): the
file's errors word for word with file, line, column and key path; --check; the flags winning over
the file; route flags refused with --config; route matching (longest prefix, the prefix rules,
404, tailcut's own paths); two api routes each with its own upstream; SIGHUP reload: 20 reloads
under a steady load lose no request, an invalid file changes nothing, a listen change is refused,
an unchanged route keeps its state (an ejected replica stays ejected); the reload metric and the
stderr lines; the route label with --config and never without.

Timing: bounds are generous (stretched under sanitizers by th.SLOW) and nothing asserts speed.
"""
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import tchelpers as th  # noqa: E402


def upstream(profile="fixed:5"):
    return th.Proc("upstream", "--access-log", "off", "--profile", profile)


def work(up):
    return "http://127.0.0.1:%d/api/work" % up.port


def run(*args, timeout=30):
    p = subprocess.run([th.Proc.bin(), "serve", *args], stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=timeout * th.SLOW)
    return p.returncode, p.stderr.decode()


def metrics(port):
    st, _, body = th.http_request(port, "GET", "/metrics", timeout=10 * th.SLOW)
    assert st == 200, st
    return body.decode(), th.parse_metrics(body.decode())


class ConfigTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dog = th.Watchdog(360 * th.SLOW)
        cls.tmp = tempfile.TemporaryDirectory(prefix="tailcut-config-")

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()
        cls.dog.cancel()

    def write(self, name, text):
        path = os.path.join(self.tmp.name, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def check(self, text):
        path = self.write("c.yaml", text)
        rc, err = run("--config", path, "--check")
        return rc, err.replace(path, "F")

    # ---- --check and the errors ---------------------------------------------------------------

    def test_check_ok(self):
        rc, err = self.check("access_log: off\n"
                             "routes:\n"
                             "  - {prefix: /api/, kind: api, upstreams: [http://127.0.0.1:9/w]}\n")
        self.assertEqual((rc, err), (0, "tailcut: configuration ok: 1 route\n"))
        rc, err = self.check("routes:\n"
                             "  - prefix: /api/\n"
                             "    kind: api\n"
                             "    upstreams: [http://a.invalid/w]\n"
                             "    hedge: {delay: p99, budget_percent: off}\n"
                             "    discovery: dns\n"
                             "  - prefix: /v1\n"
                             "    kind: proxy\n"
                             "    name: v1\n"
                             "    upstreams: [http://a.invalid]\n")
        # nothing resolved, nothing bound
        self.assertEqual((rc, err), (0, "tailcut: configuration ok: 2 routes\n"))

    def test_errors(self):
        route = "routes:\n  - prefix: /a/\n    kind: api\n    upstreams: [http://x/w]\n"
        cases = [
            (route + "    hedge:\n      extra: 16\n",
             "F:6:14: routes[0].hedge.extra: must be 0 to 15"),
            (route + "    bogus: 1\n", "F:5:5: routes[0].bogus: unknown key"),
            (route + "    kind: api\n", "F:5:5: routes[0].kind: duplicate key (first at line 3)"),
            (route + "    hedge: 5\n", "F:5:12: routes[0].hedge: expected a mapping, not text"),
            (route + "    max_timeout_ms: [1]\n",
             "F:5:21: routes[0].max_timeout_ms: expected a value, not a list"),
            (route + "    upstreams: http://x/w\n",
             "F:5:5: routes[0].upstreams: duplicate key (first at line 4)"),
            ("routes:\n  - prefix: /a/\n    kind: api\n    upstreams: http://x/w\n",
             "F:4:16: routes[0].upstreams: expected a list, not text"),
            ("routes:\n  - prefix: /a/\n    upstreams: [http://x/w]\n",
             "F:2:5: routes[0]: missing key 'kind'"),
            ("listen: 127.0.0.1:0\n", "F:1:1: missing key 'routes'"),
            ("routes:\n  - prefix: /a\n    kind: api\n    upstreams: [http://x/w]\n",
             "F:2:13: routes[0].prefix: a kind: api prefix must end in /"),
            ("routes:\n  - prefix: a/\n    kind: api\n    upstreams: [http://x/w]\n",
             "F:2:13: routes[0].prefix: must start with /"),
            (route + "  - prefix: /a/\n    kind: proxy\n    upstreams: [http://y]\n",
             "F:5:13: routes[1].prefix: the same prefix as routes[0]"),
            (route + "    timeout_ms: 70000\n",
             "F:5:17: routes[0].timeout_ms: must be at most max_timeout_ms (60000)"),
            (route + "    upstreams_x: []\n", "F:5:5: routes[0].upstreams_x: unknown key"),
            ("routes:\n  - prefix: /p/\n    kind: proxy\n    upstreams: [http://x]\n"
             "    batch_max: 5\n", "F:5:5: routes[0].batch_max: unknown key for this kind of route"),
            (route + "upstreams: [http://x]\n",
             "F:5:1: upstreams: unknown key here (a route's key: it goes in a route)"),
            ("workers: {n: 1}\n" + route, "F:1:10: workers: expected a value, not a mapping"),
            ("workers: 0\n" + route, "F:1:10: workers: must be 1 to 256"),
            ("access_log_format: yaml\n" + route,
             "F:1:20: access_log_format: expected text or json"),
            (route + "    hedge: {budget_percent: 0}\n",
             "F:5:29: routes[0].hedge.budget_percent: expected a percentage above 0 and up to "
             "100, digits[.digits] (at most 6 decimals), or off"),
            (route + "    upstreams_file: &a x\n", "F:5:21: anchors and aliases are not supported"),
            ("a: 1\n---\nb: 2\n", "F:2:1: more than one document: a configuration is one"),
            ("- 1\n", "F:1:1: expected a mapping of settings (key: value) at the top"),
            ("", "F:1:1: expected a mapping of settings (key: value) at the top"),
            ("routes: [\n", "F:2:1: did not find expected node content while parsing a flow node"),
            (route + "    forward_headers: [Host]\n",
             "F:5:23: routes[0].forward_headers[0]: Host is never forwarded"),
            (route + "    upstreams: !!str x\n", "F:5:16: tags (tag:yaml.org,2002:str) are not "
             "supported: write the value, quoted if need be"),
        ]
        for text, want in cases:
            with self.subTest(want=want):
                rc, err = self.check(text)
                self.assertEqual(rc, 2, err)
                self.assertTrue(err.startswith("tailcut: " + want), err)
                self.assertEqual(err.count("\n"), 1, err)

    def test_scalars_are_read_as_their_keys_type(self):
        # off is the word off for access_log, and 0777 a number for workers: never YAML's types
        rc, err = self.check("access_log: off\nworkers: 0012\nroutes:\n"
                             "  - {prefix: /a/, kind: api, upstreams: [http://x/w], "
                             "hedge: {delay: 300, budget_percent: off}}\n")
        self.assertEqual(rc, 0, err)

    def test_command_line_rules(self):
        path = self.write("ok.yaml", "routes:\n  - {prefix: /a/, kind: api, "
                                     "upstreams: [http://x/w]}\n")
        rc, err = run("--check")
        self.assertEqual((rc, err), (2, "tailcut serve: --check needs --config FILE\n"))
        for flag, value in (("--upstream", "http://x/w"), ("--hedge-extra", "1"),
                            ("--max-body", "10"), ("--eject-failures", "2")):
            rc, err = run("--config", path, flag, value, "--check")
            self.assertEqual(rc, 2, err)
            self.assertEqual(err, "tailcut serve: %s cannot be combined with --config: it is a "
                                  "key of each route in the file\n" % flag)
        rc, err = run("--config", path, "--workers", "0", "--check")
        self.assertEqual(rc, 2)
        self.assertIn("--workers", err)
        rc, err = run("--config", os.path.join(self.tmp.name, "none.yaml"), "--check")
        self.assertEqual(rc, 2)
        self.assertIn("cannot read", err)

    # ---- serving ------------------------------------------------------------------------------

    def test_routes_and_flags_win(self):
        with upstream() as a, upstream() as b:
            path = self.write("routes.yaml", (
                "access_log_format: text\n"
                "routes:\n"
                "  - {prefix: /, kind: proxy, upstreams: [http://127.0.0.1:%d]}\n"
                "  - {prefix: /api/, kind: api, upstreams: [%s]}\n"
                "  - {prefix: /b/, kind: api, name: bee, upstreams: [%s],\n"
                "     metadata_upstreams: ['http://127.0.0.1:%d/api/metadata']}\n"
                "  - {prefix: /p, kind: proxy, name: pp, upstreams: [http://127.0.0.1:%d]}\n")
                % (a.port, work(a), work(b), b.port, b.port))
            with th.Proc("serve", "--config", path, "--access-log-format", "json") as s:
                def status(p):
                    return th.http_request(s.port, "GET", p, timeout=10 * th.SLOW)[0]
                self.assertEqual(status("/api/smart"), 200)
                self.assertEqual(status("/b/first"), 200)
                self.assertEqual(status("/b/metadata/x1"), 200)
                self.assertEqual(status("/api/metadata/x1"), 404)  # no metadata_upstreams
                self.assertEqual(status("/healthz"), 200)
                self.assertEqual(status("/metrics"), 200)
                # the longest prefix wins; "/p" matches /p and /p/..., never /px
                self.assertEqual(status("/b/nothing"), 404)
                for path_ in ("/p", "/p/x", "/px", "/other", "/api"):
                    # proxied: the upstream's own 404 (tailcut upstream has no such path), with
                    # the proxy's X-Tailcut-Attempts (tailcut's 404 has none)
                    st, hdrs, _ = th.http_request(s.port, "GET", path_, timeout=10 * th.SLOW)
                    self.assertEqual((st, hdrs.get("x-tailcut-attempts")), (404, "1"), path_)
                st, _, body = th.http_request(s.port, "GET", "/api/smart?timeout=0")
                self.assertEqual(st, 400)
                # each api route called its own upstream
                self.assertEqual(th.get_json(a.port, "/stats")[2]["work_requests"], 1)
                self.assertEqual(th.get_json(b.port, "/stats")[2]["work_requests"], 3)
                text, m = metrics(s.port)
                self.assertEqual(th.metric(m, "tailcut_requests_total", route="bee",
                                           endpoint="first", status="200"), 1)
                self.assertEqual(th.metric(m, "tailcut_requests_total", route="pp",
                                           endpoint="proxy", status="404"), 2)
                self.assertEqual(th.metric(m, "tailcut_requests_total", route="/",
                                           endpoint="proxy", status="404"), 3)
                self.assertEqual(th.metric(m, "tailcut_requests_total", route="",
                                           endpoint="healthz", status="200"), 1)
                self.assertGreater(th.metric(m, "tailcut_upstream_attempts_total", route="/api/",
                                             outcome="success"), 0)
                self.assertIn('tailcut_hedge_delay_seconds{route="bee"} 0.300', text)
                self.assertIn('tailcut_upstream_replicas{route="bee",set="metadata",'
                              'state="available"} 1', text)
                self.assertEqual(th.metric(m, "tailcut_config_reloads_total", result="ok"), 0)
                # the in-flight gauge and the metadata batch families name the route too
                self.assertEqual(th.metric(m, "tailcut_requests_in_flight", route="bee"), 0)
                self.assertEqual(th.metric(m, "tailcut_metadata_batches_total", route="bee"), 1)
                self.assertEqual(th.metric(m, "tailcut_metadata_batch_keys_total", route="bee"), 1)
                self.assertEqual(th.metric(m, "tailcut_metadata_batch_size_count", route="bee"),
                                 1)
                self.assertEqual(th.metric(m, "tailcut_metadata_batch_wait_seconds_count",
                                           route="bee"), 1)
                self.assertNotIn("tailcut_requests_in_flight 0", text)
            lines = [json.loads(x) for x in s.stdout_bytes().decode().splitlines()
                     if x.startswith("{")]
        routes = {x["target"]: x["route"] for x in lines}
        self.assertEqual(routes["/b/first"], "bee")
        self.assertEqual(routes["/api/smart"], "/api/")
        self.assertEqual(routes["/healthz"], "")
        self.assertEqual(routes["/p/x"], "pp")

    def test_timeout_header_on_api_routes(self):
        # kind: api reads X-Tailcut-Timeout-Ms too, by the rules of the `timeout` parameter, and
        # the parameter wins over it; with --config and without (the flags make one api route)
        with upstream("fixed:3000") as slow:
            path = self.write("hdr.yaml", "routes:\n  - {prefix: /api/, kind: api, "
                                          "upstreams: [%s]}\n" % work(slow))
            for args in (("--config", path), ("--upstream", work(slow))):
                with th.Proc("serve", *args) as s:
                    def ask(target, *values):
                        hdrs = [("X-Tailcut-Timeout-Ms", v) for v in values]
                        t0 = time.monotonic()
                        with th.connect(s.port, 30 * th.SLOW) as c:
                            c.sendall(("GET %s HTTP/1.1\r\nHost: x\r\n%sConnection: close\r\n"
                                       "\r\n" % (target, "".join("%s: %s\r\n" % kv
                                                                  for kv in hdrs))).encode())
                            st, _, body = th.read_response(c)
                        return st, json.loads(body), time.monotonic() - t0
                    st, body, took = ask("/api/smart", "200")
                    self.assertEqual((st, body["error"]), (504, "timeout"), args)
                    self.assertLess(took, 2.5 * th.SLOW)
                    st, body, _ = ask("/api/within-timeout", "100")
                    self.assertEqual((st, body), (200, []), args)
                    st, body, _ = ask("/api/smart?timeout=100", "0")  # the parameter wins
                    self.assertEqual((st, body["error"]), (504, "timeout"), args)
                    for bad in (("0",), ("60001",), ("abc",), ("+10",), ("100", "100")):
                        st, body, _ = ask("/api/first", *bad)
                        self.assertEqual((st, body["error"]), (400, "bad_request"), bad)
                    st, body, _ = ask("/api/within-timeout")
                    self.assertEqual((st, body["error"]), (400, "bad_request"), args)

    def test_no_route_label_without_config(self):
        with upstream() as a, th.Proc("serve", "--upstream", work(a)) as s:
            self.assertEqual(th.http_request(s.port, "GET", "/api/smart")[0], 200)
            text, _ = metrics(s.port)
            self.assertNotIn("route=", text)
            self.assertNotIn("tailcut_config_reloads_total", text)
            # no kind: proxy route without --config: nothing of the proxy's in the metrics
            self.assertNotIn("proxy", text)
            s.proc.send_signal(signal.SIGHUP)  # ignored without --config
            time.sleep(0.2)
            self.assertEqual(th.http_request(s.port, "GET", "/api/smart")[0], 200)
            self.assertNotIn("reload", s.stderr_text())

    def config(self, name, up, extra=""):
        return self.write(name, "routes:\n"
                                "  - prefix: /api/\n"
                                "    kind: api\n"
                                "    upstreams: [%s]\n%s" % (work(up), extra))

    def test_reload_under_load_loses_nothing(self):
        with upstream("uniform:1:20") as a:
            path = self.config("load.yaml", a)
            with th.Proc("serve", "--config", path, "--access-log", "off", "--workers", "2") as s:
                failures, done, stop = [], [0], threading.Event()

                def load():
                    deadline = time.monotonic() + 60 * th.SLOW
                    while not stop.is_set() and time.monotonic() < deadline and done[0] < 20000:
                        try:
                            st, _, body = th.http_request(s.port, "GET", "/api/first",
                                                          timeout=10 * th.SLOW)
                        except OSError as e:
                            failures.append(repr(e))
                            continue
                        if st != 200:
                            failures.append((st, body))
                        done[0] += 1

                threads = [threading.Thread(target=load) for _ in range(4)]
                for t in threads:
                    t.start()
                for i in range(20):
                    # every other reload changes the hedge settings (the route keeps its state)
                    self.config("load.yaml", a, "    hedge: {extra: %d}\n" % (1 + i % 2))
                    s.proc.send_signal(signal.SIGHUP)
                    self.assertTrue(th.wait_for(
                        lambda: s.stderr_text().count("configuration reloaded") > i,
                        10 * th.SLOW))
                    time.sleep(0.05)
                stop.set()
                for t in threads:
                    t.join(30 * th.SLOW)
                self.assertEqual(failures, [])
                self.assertGreater(done[0], 40)
                self.assertEqual(s.stderr_text().count(
                    "tailcut: configuration reloaded: 1 route\n"), 20)
                _, m = metrics(s.port)
                self.assertEqual(th.metric(m, "tailcut_config_reloads_total", result="ok"), 20)

    def test_invalid_reload_changes_nothing(self):
        with upstream() as a:
            path = self.config("inv.yaml", a)
            with th.Proc("serve", "--config", path) as s:
                self.write("inv.yaml", "routes:\n  - prefix: /x/\n    kind: api\n"
                                       "    upstreams: [%s]\n    hedge: {extra: 99}\n" % work(a))
                s.proc.send_signal(signal.SIGHUP)
                self.assertTrue(th.wait_for(lambda: "not reloaded" in s.stderr_text(),
                                            10 * th.SLOW))
                self.assertIn("tailcut: configuration not reloaded: %s:5:20: routes[0].hedge."
                              "extra: must be 0 to 15\n" % path, s.stderr_text())
                self.assertEqual(th.http_request(s.port, "GET", "/api/smart")[0], 200)
                self.assertEqual(th.http_request(s.port, "GET", "/x/smart")[0], 404)
                _, m = metrics(s.port)
                self.assertEqual(th.metric(m, "tailcut_config_reloads_total", result="error"), 1)
                self.assertEqual(th.metric(m, "tailcut_config_reloads_total", result="ok"), 0)
                # a valid file after it takes effect
                self.write("inv.yaml", "routes:\n  - {prefix: /x/, kind: api, upstreams: [%s]}\n"
                           % work(a))
                s.proc.send_signal(signal.SIGHUP)
                self.assertTrue(th.wait_for(lambda: "reloaded: 1 route" in s.stderr_text(),
                                            10 * th.SLOW))
                self.assertTrue(th.wait_for(
                    lambda: th.http_request(s.port, "GET", "/x/smart")[0] == 200, 5 * th.SLOW))
                self.assertEqual(th.http_request(s.port, "GET", "/api/smart")[0], 404)

    def test_listen_cannot_change_on_reload(self):
        with upstream() as a:
            base = "listen: 127.0.0.1:0\nroutes:\n  - {prefix: /api/, kind: api, upstreams: [%s]}\n"
            path = self.write("listen.yaml", base % work(a))
            s = th.Proc("serve", "--config", path, listen=None)
            try:
                self.assertTrue(th.wait_for(lambda: s.port is not None, 20 * th.SLOW))
                self.write("listen.yaml", (base % work(a)).replace(":0", ":1"))
                s.proc.send_signal(signal.SIGHUP)
                self.assertTrue(th.wait_for(lambda: "not reloaded" in s.stderr_text(),
                                            10 * th.SLOW))
                self.assertIn("tailcut: configuration not reloaded: %s: listen: cannot change on "
                              "reload (restart tailcut to change it)\n" % path, s.stderr_text())
                self.assertEqual(th.http_request(s.port, "GET", "/api/smart")[0], 200)
                s.stop()
            finally:
                s.kill()
        # set on the command line: the file's value is ignored, also on reload
        with upstream() as a:
            path = self.write("listen2.yaml", base % work(a))
            with th.Proc("serve", "--config", path) as s:
                self.write("listen2.yaml", (base % work(a)).replace(":0", ":1"))
                s.proc.send_signal(signal.SIGHUP)
                self.assertTrue(th.wait_for(lambda: "reloaded: 1 route" in s.stderr_text(),
                                            10 * th.SLOW))

    def test_unchanged_route_keeps_its_state(self):
        # a refused replica is ejected after one failure; a reload that keeps the route (same
        # name and upstreams, other hedge settings) keeps it ejected; a renamed route starts over
        with upstream() as a:
            dead = "http://127.0.0.1:1/api/work"
            extra = "    ejection: {failures: 1}\n    hedge: {extra: 2}\n"
            path = self.write("keep.yaml", "routes:\n  - prefix: /api/\n    kind: api\n"
                              "    upstreams: [%s, %s]\n%s" % (work(a), dead, extra))
            with th.Proc("serve", "--config", path) as s:
                def ejected(route):
                    return th.metric(metrics(s.port)[1], "tailcut_upstream_replicas",
                                     route=route, set="upstream", state="ejected")
                for _ in range(10):
                    self.assertEqual(th.http_request(s.port, "GET", "/api/first")[0], 200)
                self.assertEqual(ejected("/api/"), 1)
                self.write("keep.yaml", "routes:\n  - prefix: /api/\n    kind: api\n"
                           "    upstreams: [%s, %s]\n%s" % (work(a), dead,
                                                           extra.replace("2", "1")))
                s.proc.send_signal(signal.SIGHUP)
                self.assertTrue(th.wait_for(lambda: "reloaded" in s.stderr_text(), 10 * th.SLOW))
                time.sleep(0.2)
                self.assertEqual(ejected("/api/"), 1)
                self.write("keep.yaml", "routes:\n  - prefix: /api/\n    kind: api\n"
                           "    name: renamed\n    upstreams: [%s, %s]\n%s"
                           % (work(a), dead, extra))
                s.proc.send_signal(signal.SIGHUP)
                self.assertTrue(th.wait_for(
                    lambda: s.stderr_text().count("reloaded") == 2, 10 * th.SLOW))
                self.assertTrue(th.wait_for(lambda: ejected("renamed") == 0 and
                                            th.metric(metrics(s.port)[1],
                                                      "tailcut_upstream_replicas",
                                                      route="renamed", set="upstream",
                                                      state="available") == 2, 5 * th.SLOW))


if __name__ == "__main__":
    unittest.main(verbosity=2)

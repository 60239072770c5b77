#!/usr/bin/env python3
"""Integration tests of forwarding in `tailcut serve` (docs/serve.md "Forwarding", issue 15):
the client's query and the --forward-header headers go to every attempt, what never goes, the
request id, --upstream-header (flag and @FILE) on attempts and metadata batches, bad values, and
redacted upstream URLs on stderr.

One recording upstream written here (Python's http.server) answers every call 200 with JSON and
records what it received: method, request target and every header line in order. Each test tags
its requests with a `case` query parameter (forwarded like any other) and reads back the calls
that carry it. /api/all waits for its three attempts, so all three are recorded before the answer.
Every server is stopped with SIGTERM and must exit 0 (under sanitizers a leak fails the test).
"""
import json
import os
import subprocess
import sys
import tempfile
import threading
import unittest
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import tchelpers as th  # noqa: E402

HOST = "127.0.0.1"


class Recorder:
    """An upstream on 127.0.0.1 port 0 that records each call: (method, target, [(name,
    value)...]). Paths containing "meta" answer {"results": {...}} for their `id`s."""

    def __init__(self):
        self.lock = threading.Lock()
        self.calls = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                with outer.lock:
                    outer.calls.append((self.command, self.path, list(self.headers.items())))
                if "meta" in self.path:
                    q = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                    data = json.dumps({"results": {i: {"id": i} for i in q.get("id", [])}})
                else:
                    data = json.dumps({"ok": True})
                data = data.encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # an attempt cancelled because another won

            def log_message(self, *args):
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):
                pass  # resets of cancelled attempts are expected

        self.httpd = Server((HOST, 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def tagged(self, case):
        """The calls whose query has case=CASE."""
        with self.lock:
            calls = list(self.calls)
        return [c for c in calls if ("case=%s" % case) in c[1].split("?", 1)[-1].split("&")]

    def all_calls(self):
        with self.lock:
            return list(self.calls)


def raw_request(port, data):
    """Sends data as it is on a fresh connection; returns (status, headers, body)."""
    with th.connect(port) as s:
        s.sendall(data)
        return th.read_response(s)


def get(port, target, headers=()):
    """GET target with the header lines given (a list of (name, value): repeats allowed)."""
    raw = "GET %s HTTP/1.1\r\nHost: test\r\nConnection: close\r\n" % target
    raw += "".join("%s: %s\r\n" % kv for kv in headers) + "\r\n"
    return raw_request(port, raw.encode("latin-1"))


def values(call, name):
    return [v for k, v in call[2] if k.lower() == name.lower()]


def run_serve(*args):
    return subprocess.run([th.Proc.bin(), "serve", "--listen", "127.0.0.1:0", *args],
                          capture_output=True, text=True, timeout=30 * th.SLOW)


class ForwardTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.up = Recorder()
        cls.tmp = tempfile.TemporaryDirectory()
        cls.header_file = os.path.join(cls.tmp.name, "headers")
        with open(cls.header_file, "w") as f:
            f.write("# credentials for the upstream\r\n\r\nX-File-A: va\r\n  X-File-B:  v b  \n")
        base = "http://%s:%d" % (HOST, cls.up.port)
        cls.upstream = "http://user:pass@%s:%d/api/work?key=secret&fixed=1" % (HOST, cls.up.port)
        cls.srv = th.Proc("serve", "--workers", "1", "--access-log", "off",
                          "--upstream", cls.upstream,
                          "--metadata-upstream", base + "/meta?tok=hush",
                          "--forward-header", "X-Fwd", "--forward-header", "x-multi",
                          "--forward-header", "X-Api-Key", "--forward-header", "X-Fwd",
                          "--forward-header", "X-Request-Id",
                          "--upstream-header", "X-Api-Key: k1",
                          "--upstream-header", "@" + cls.header_file)
        cls.port = cls.srv.port

    @classmethod
    def tearDownClass(cls):
        cls.srv.stop()
        cls.tmp.cleanup()

    def all3(self, case, query="", headers=()):
        """GET /api/all?case=CASE&QUERY; returns the three recorded attempts, after checking that
        each carried the X-Request-Id the answer echoes, once."""
        target = "/api/all?case=%s%s" % (case, "&" + query if query else "")
        st, hdrs, body = get(self.port, target, headers)
        self.assertEqual(st, 200, body)
        calls = self.up.tagged(case)
        self.assertEqual(len(calls), 3, calls)
        self.assertEqual(sorted(values(c, "X-Tailcut-Attempt")[0] for c in calls),
                         ["1", "2", "3"])
        self.assertIn("x-request-id", hdrs)
        for c in calls:
            # the upstream URL's user:pass, as Basic authentication (libcurl carries such URLs)
            self.assertEqual(values(c, "Authorization"), ["Basic dXNlcjpwYXNz"], c)
            self.assertEqual(values(c, "X-Request-Id"), [hdrs["x-request-id"]], c)
        return calls

    def assert_upstream_origin(self, call):
        self.assertEqual(values(call, "Host"), ["%s:%d" % (HOST, self.up.port)], call)
        self.assertTrue(call[1].startswith("/api/work?key=secret&fixed=1&case="), call)

    # ---- the query -----------------------------------------------------------------------------

    def test_query_appended_in_order_timeout_not_forwarded(self):
        calls = self.all3("order", "b=2&a=1&timeout=5000&c=%2F%23x&a=0&empty=&flag&%2B=+")
        for c in calls:
            self.assertEqual(c[0], "GET")
            self.assertEqual(c[1], "/api/work?key=secret&fixed=1&case=order"
                                   "&b=2&a=1&c=%2F%23x&a=0&empty=&flag&%2B=+")
        # timeout under another spelling is still the timeout, never forwarded
        calls = self.all3("spelled", "%74imeout=5000&z=9")
        self.assertEqual(calls[0][1], "/api/work?key=secret&fixed=1&case=spelled&z=9")

    def test_configured_parameter_wins(self):
        calls = self.all3("wins", "fixed=evil&key=stolen&%6Bey=x&ke%79=y&fixed&keep=1")
        for c in calls:
            self.assertEqual(c[1], "/api/work?key=secret&fixed=1&case=wins&keep=1")

    def test_host_and_path_never_change(self):
        hostile = ["u=@evil.example/x", "@evil.example:1/", "x=http://evil.example/?a#frag",
                   "y=%0D%0AHost:%20evil.example%0D%0A", "z=/../../admin", "w=%23%3F%2F%40",
                   "q=a?b?c", "h=\"<>\\^`{|}"]
        for i, q in enumerate(hostile):
            case = "hostile%d" % i
            calls = self.all3(case, q)
            for c in calls:
                self.assert_upstream_origin(c)
                self.assertNotIn("#", c[1])
                self.assertNotIn("\r", c[1])
                self.assertNotIn(" ", c[1])
        # the escapes arrive exactly as sent; the fragment never leaves the client's side
        self.assertEqual(self.up.tagged("hostile3")[0][1],
                         "/api/work?key=secret&fixed=1&case=hostile3"
                         "&y=%0D%0AHost:%20evil.example%0D%0A")
        self.assertEqual(self.up.tagged("hostile2")[0][1],
                         "/api/work?key=secret&fixed=1&case=hostile2&x=http://evil.example/?a")
        # bytes that may not stand in a URL query are escaped, not passed raw
        self.assertEqual(self.up.tagged("hostile7")[0][1],
                         "/api/work?key=secret&fixed=1&case=hostile7"
                         "&h=%22%3C%3E%5C%5E%60%7B%7C%7D")
        # an absolute-form target names no upstream either
        before = len(self.up.all_calls())
        st, _, _ = raw_request(self.port, b"GET http://evil.example/api/all?case=abs HTTP/1.1\r\n"
                                          b"Host: evil.example\r\nConnection: close\r\n\r\n")
        for c in self.up.all_calls()[before:]:
            self.assert_upstream_origin(c)

    def test_long_query(self):
        pairs = ["p%d=%s" % (i, "v" * 40) for i in range(170)]  # about 7.6 KiB of target
        query = "&".join(pairs)
        self.assertLess(len("/api/all?case=long&" + query), 8 * 1024)
        calls = self.all3("long", query)
        for c in calls:
            self.assertEqual(c[1], "/api/work?key=secret&fixed=1&case=long&" + query)
        # over the 8 KiB URI limit: 414 and nothing reaches the upstream
        st, _, _ = get(self.port, "/api/all?case=toolong&" + query + "&" + query)
        self.assertEqual(st, 414)
        self.assertEqual(self.up.tagged("toolong"), [])

    def test_head_stays_a_get_upstream(self):
        raw = b"HEAD /api/all?case=head HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        with th.connect(self.port) as s:
            s.sendall(raw)
            st, _, body = th.read_response(s, head=True)
        self.assertEqual(st, 200)
        self.assertEqual([c[0] for c in self.up.tagged("head")], ["GET"] * 3)
        st, _, _ = raw_request(self.port, b"POST /api/all?case=post HTTP/1.1\r\nHost: t\r\n"
                                          b"Content-Length: 0\r\nConnection: close\r\n\r\n")
        self.assertEqual(st, 405)
        self.assertEqual(self.up.tagged("post"), [])

    # ---- headers -------------------------------------------------------------------------------

    def test_forwarded_headers_arrive(self):
        calls = self.all3("hdr", headers=[("X-Fwd", "hello world"), ("X-Multi", "1"),
                                          ("Accept-Language", "fr"), ("x-multi", "2")])
        for c in calls:
            self.assertEqual(values(c, "X-Fwd"), ["hello world"])
            self.assertEqual(values(c, "X-Multi"), ["1", "2"])  # every occurrence, in order
            self.assertEqual(values(c, "Accept-Language"), [])  # not named: not forwarded

    def test_never_forwarded_headers(self):
        sent = [("Keep-Alive", "timeout=5"), ("TE", "trailers"), ("Trailer", "X-T"),
                ("Upgrade", "h2c"), ("Proxy-Authorization", "Basic c2VjcmV0"),
                ("Proxy-Connection", "keep-alive"), ("X-Tailcut-Attempt", "99"),
                ("X-Tailcut-Attempt", "1"), ("X-Multi", "listed"), ("X-Fwd", "kept")]
        raw = ("GET /api/all?case=never HTTP/1.1\r\nHost: evil.example\r\n"
               "Connection: close, x-multi\r\n"
               + "".join("%s: %s\r\n" % kv for kv in sent) + "\r\n")
        st, _, body = raw_request(self.port, raw.encode())
        self.assertEqual(st, 200, body)
        calls = self.up.tagged("never")
        self.assertEqual(len(calls), 3)
        for c in calls:
            self.assert_upstream_origin(c)
            names = [k.lower() for k, _ in c[2]]
            for bad in ("keep-alive", "te", "trailer", "upgrade", "proxy-authorization",
                        "proxy-connection", "connection", "transfer-encoding"):
                self.assertNotIn(bad, names, c)
            self.assertEqual(values(c, "X-Multi"), [], c)  # listed in Connection: the hop's
            self.assertEqual(values(c, "X-Fwd"), ["kept"], c)
            self.assertEqual(len(values(c, "X-Tailcut-Attempt")), 1, c)
        self.assertEqual(sorted(values(c, "X-Tailcut-Attempt")[0] for c in calls),
                         ["1", "2", "3"])

    def test_crlf_in_a_forwarded_header_never_reaches_the_upstream(self):
        # obs-fold: the continuation becomes part of one value, never a header of its own
        st, _, body = raw_request(self.port, b"GET /api/all?case=fold HTTP/1.1\r\nHost: t\r\n"
                                             b"X-Fwd: a\r\n Injected: yes\r\n"
                                             b"Connection: close\r\n\r\n")
        # a bare CR, a NUL, a bare LF inside a forwarded header
        for case, line in (("cr", b"X-Fwd: a\rInjected: yes\r\n"),
                           ("nul", b"X-Fwd: a\x00Injected: yes\r\n"),
                           ("lf", b"X-Fwd: a\nInjected: yes\r\n")):
            raw_request(self.port, b"GET /api/all?case=" + case.encode() +
                        b" HTTP/1.1\r\nHost: t\r\n" + line + b"Connection: close\r\n\r\n")
        for case in ("fold", "cr", "nul", "lf"):
            for c in self.up.tagged(case):
                self.assertEqual(values(c, "Injected"), [], c)
                for v in values(c, "X-Fwd"):
                    self.assertNotIn("\r", v)
                    self.assertNotIn("\n", v)
                    self.assertNotIn("\x00", v)
        self.assertEqual(st, 200, body)
        self.assertEqual(len(self.up.tagged("fold")), 3)

    def test_request_id_goes_upstream(self):
        calls = self.all3("rid", headers=[("X-Request-Id", "abc-123_XYZ.=")])
        for c in calls:
            self.assertEqual(values(c, "X-Request-Id"), ["abc-123_XYZ.="])  # once, though named
        # not 1 to 128 visible ASCII characters: never sent as it came
        for i, bad in enumerate(("has space", "x" * 129, "caf\xe9")):
            calls = self.all3("badrid%d" % i, headers=[("X-Request-Id", bad)])
            for c in calls:  # a generated id instead, the same on every attempt (all3)
                self.assertRegex(values(c, "X-Request-Id")[0], r"^[0-9a-f]{32}$")

    def test_upstream_headers_on_attempts_and_batches(self):
        calls = self.all3("creds", headers=[("X-Api-Key", "from-client")])
        for c in calls:
            self.assertEqual(values(c, "X-Api-Key"), ["k1"])  # the configured value wins
            self.assertEqual(values(c, "X-File-A"), ["va"])
            self.assertEqual(values(c, "X-File-B"), ["v b"])
        st, _, body = get(self.port, "/api/metadata/abc?timeout=5000")
        self.assertEqual(st, 200, body)
        meta = [c for c in self.up.all_calls() if c[1].startswith("/meta?tok=hush&id=abc")]
        self.assertEqual(len(meta), 1, self.up.all_calls()[-3:])
        self.assertEqual(values(meta[0], "X-Api-Key"), ["k1"])
        self.assertEqual(values(meta[0], "X-File-A"), ["va"])
        self.assertEqual(values(meta[0], "X-File-B"), ["v b"])
        self.assertEqual(values(meta[0], "X-Tailcut-Attempt"), [])

    def test_stderr_never_shows_the_secrets(self):
        err = self.srv.stderr_text()
        for secret in ("pass", "secret", "hush", "user:", "k1"):
            self.assertNotIn(secret, err)


class FlagTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()

    def tearDown(self):
        self.tmp.cleanup()

    def file(self, text, mode="w"):
        fd, path = tempfile.mkstemp(dir=self.tmp.name)
        with os.fdopen(fd, mode) as f:
            f.write(text)
        return path

    def assert_usage_error(self, args, flag, secret=None):
        r = run_serve("--upstream", "http://127.0.0.1:9/x", *args)
        self.assertEqual(r.returncode, 2, (args, r.stderr))
        lines = r.stderr.strip().splitlines()
        self.assertEqual(len(lines), 1, r.stderr)
        self.assertIn(flag, lines[0])
        if secret is not None:
            self.assertNotIn(secret, r.stderr)

    def test_bad_forward_header(self):
        for name in ("Host", "content-length", "Transfer-Encoding", "Connection", "Keep-Alive",
                     "TE", "Trailer", "Upgrade", "Proxy-Authorization", "X-Tailcut-Attempt",
                     "Bad Name", "X:Y", ""):
            self.assert_usage_error(["--forward-header", name], "--forward-header")

    def test_bad_upstream_header(self):
        for value in ("NoColon", "Bad Name: s3cr3t", ": s3cr3t", "X-Key: s3cr3t\r\nHost: evil",
                      "X-Key: s3cr3t\nX: y", "Host: s3cr3t", "Content-Length: 5",
                      "X-Tailcut-Attempt: 7", "X-Request-Id: s3cr3t", "Proxy-Authorization: s3cr3t"):
            self.assert_usage_error(["--upstream-header", value], "--upstream-header", "s3cr3t")

    def test_bad_upstream_header_file(self):
        missing = os.path.join(self.tmp.name, "missing")
        self.assert_usage_error(["--upstream-header", "@" + missing], "--upstream-header")
        self.assert_usage_error(["--upstream-header", "@" + self.tmp.name], "--upstream-header")
        for text in ("X-Ok: 1\nnot a header s3cr3t\n", "X-Ok: 1\r\nX-Bad: s3cr3t\rx\n",
                     "Host: s3cr3t\n"):
            path = self.file(text)
            self.assert_usage_error(["--upstream-header", "@" + path], "--upstream-header",
                                    "s3cr3t")
        path = self.file(b"X-Key: s3cr3t\x00\n", "wb")
        self.assert_usage_error(["--upstream-header", "@" + path], "--upstream-header", "s3cr3t")
        path = self.file("X-Pad: " + "p" * (70 * 1024) + "\n")
        self.assert_usage_error(["--upstream-header", "@" + path], "--upstream-header")

    def test_bad_url_is_redacted(self):
        for flag in ("--upstream", "--metadata-upstream"):
            r = run_serve(flag, "ftp://user:pass@h/p?key=secret#frag")
            self.assertEqual(r.returncode, 2, r.stderr)
            lines = r.stderr.strip().splitlines()
            self.assertEqual(len(lines), 1, r.stderr)
            self.assertIn("'ftp://***@h/p?***' for %s" % flag, lines[0])
            for secret in ("pass", "secret", "user", "frag"):
                self.assertNotIn(secret, r.stderr)

    def test_help_lists_the_flags(self):
        r = subprocess.run([th.Proc.bin(), "serve", "--help"], capture_output=True, text=True,
                           timeout=30)
        self.assertEqual(r.returncode, 0)
        for flag in ("--forward-header", "--upstream-header"):
            line = [l for l in r.stdout.splitlines() if flag in l]
            self.assertTrue(line, r.stdout)
        self.assertIn("(repeatable)", r.stdout)


class RedactionTest(unittest.TestCase):
    def test_every_stderr_line_is_redacted(self):
        """A run whose upstreams carry credentials, whose attempts and batches fail, and that is
        stopped: no stderr line shows a userinfo or a query."""
        up = Recorder()
        dead = "http://admin:hunter2@127.0.0.1:9/never?api_key=topsecret"
        srv = th.Proc("serve", "--workers", "1", "--access-log", "off",
                      "--upstream", "http://user:pass@127.0.0.1:%d/w?key=secret" % up.port,
                      "--metadata-upstream", dead, "--hedge-delay", "10")
        try:
            st, _, _ = get(srv.port, "/api/smart?timeout=3000")
            self.assertEqual(st, 200)
            st, _, _ = get(srv.port, "/api/metadata/abc?timeout=3000")
            self.assertEqual(st, 502)
        finally:
            srv.stop()
        err = srv.stderr_text()
        self.assertIn("tailcut: listening on", err)
        for secret in ("user", "pass", "secret", "admin", "hunter2", "topsecret", "api_key"):
            self.assertNotIn(secret, err)


if __name__ == "__main__":
    watchdog = th.Watchdog(120 * th.SLOW)
    unittest.main(verbosity=2)

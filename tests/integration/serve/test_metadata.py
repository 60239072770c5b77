#!/usr/bin/env python3
"""Integration tests of batched lookups, `GET /api/metadata/ID` of `tailcut serve` (docs/serve.md
"Batched lookups", issue 6).

Three set-ups, each a `tailcut serve --workers 1` (one worker: one batcher, so upstream call
counts are exact) in front of a metadata upstream:
- the simulator, `tailcut upstream`, whose /stats lists the IDs of every call (metadata_ids);
- the simulator with --metadata-rate 1, so a second call within a second is answered 429;
- a small scripted upstream written here (Python's http.server), which answers each call as the
  test queued it (status, body, delay) and records each call's raw query string.

Concurrency: a test opens all its connections first, then writes every request in one go, so
the requests reach the server together; --batch-wait is long enough (stretched under
sanitizers) that a partial batch is never sent before the last of them arrived.

Timing: lower bounds are the semantics (a deadline never passes early, up to libuv's millisecond
timer granularity); upper bounds are generous and stretched under sanitizers (th.SLOW). Nothing
asserts speed. Every server is stopped with SIGTERM and must exit 0 (under sanitizers a leak
fails the test).
"""
import asyncio
import json
import os
import sys
import threading
import time
import unittest
import urllib.parse
from http.server import ThreadingHTTPServer

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import tchelpers as th  # noqa: E402

HOST = "127.0.0.1"
# Long enough for every request of a test to arrive before a partial batch goes out.
BATCH_WAIT_MS = int(300 * th.SLOW)
EARLY = 0.003  # libuv timers count whole milliseconds of cached loop time
SLACK = 1.0 * th.SLOW


async def _read_response(reader, timeout):
    """Reads one response. Returns (status, headers, body), or (None, {}, b"") if the connection
    closed before a complete response."""
    deadline = asyncio.get_running_loop().time() + timeout
    try:
        return await th.aio_read_response(reader, deadline)
    except EOFError:
        return None, {}, b""
    except asyncio.TimeoutError:
        raise AssertionError("no complete response within %.1fs" % timeout) from None


def concurrent_get(port, paths, timeout=20 * th.SLOW, close_after=None):
    """GETs every path at once, one connection each: connects all first, then writes all.
    close_after maps an index to seconds after which that client closes its connection without
    reading (its result is then None). Returns a list of Resp in the order of paths."""

    async def main():
        loop = asyncio.get_running_loop()
        conns = await asyncio.gather(*[asyncio.open_connection(HOST, port) for _ in paths])
        t0 = loop.time()
        for (_, writer), path in zip(conns, paths):
            writer.write(("GET %s HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
                          % path).encode())

        async def one(i, reader, writer):
            try:
                if close_after and i in close_after:
                    await asyncio.sleep(close_after[i])
                    return None
                st, hdrs, body = await _read_response(reader, timeout)
                return th.Resp(st, hdrs, body, loop.time() - t0)
            finally:
                await th.aio_close(writer)

        return await asyncio.gather(*[one(i, r, w) for i, (r, w) in enumerate(conns)])

    return asyncio.run(main())


def get(port, path, method="GET"):
    return th.timed_request(port, method, path, timeout=20 * th.SLOW)


def metrics(port):
    r = get(port, "/metrics")
    assert r.status == 200, r
    return th.parse_metrics(r.body.decode())


metric = th.metric


def serve(metadata_url, *args):
    return th.Proc("serve", "--workers", "1", "--metadata-upstream", metadata_url,
                   "--upstream", "http://127.0.0.1:9/unused", "--access-log", "off",
                   "--batch-wait", str(BATCH_WAIT_MS), *args)


class ScriptedUpstream:
    """A metadata upstream on 127.0.0.1 port 0. Each call pops the next queued step
    (status, body, delay_s); with none queued it answers 200 with results for every ID that does
    not begin with "missing". Records each call's raw query string."""

    def __init__(self):
        self.lock = threading.Lock()
        self.queries = []
        self.steps = []
        outer = self

        class Handler(th.QuietHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                query = urllib.parse.urlsplit(self.path).query
                ids = urllib.parse.parse_qs(query).get("id", [])
                with outer.lock:
                    outer.queries.append(query)
                    step = outer.steps.pop(0) if outer.steps else None
                if step is None:
                    results = {i: {"id": i, "n": len(i)} for i in ids if not i.startswith("missing")}
                    step = (200, json.dumps({"results": results}), 0)
                status, body, delay = step
                if delay:
                    time.sleep(delay)
                data = body.encode() if isinstance(body, str) else body
                try:
                    self.send_body(status, data)
                except (ConnectionError, OSError):
                    pass

        self.httpd = ThreadingHTTPServer((HOST, 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = th.serve_in_thread(self.httpd)

    def queue(self, *steps):
        with self.lock:
            self.steps.extend(steps)

    def calls(self):
        with self.lock:
            return list(self.queries)

    def reset(self):
        with self.lock:
            self.queries = []
            self.steps = []

    def close(self):
        th.stop_server(self.httpd, self.thread)


def id_list(query):
    """The id values of a raw query, in order."""
    return [urllib.parse.unquote(v) for k, v in
            (p.partition("=")[::2] for p in query.split("&")) if k == "id"]


class MetadataBase(th.ErrorAsserts, unittest.TestCase):
    def assert_api(self, r, status, attempts=None):
        """A response, its status and its JSON Content-Type (the metadata endpoint makes no
        attempts of its own to count: `attempts` is never given)."""
        self.assertIsNotNone(r, "client got no response")
        self.assertEqual(r.status, status, r)
        self.assertEqual(r.headers.get("content-type"), "application/json", r)

    def assert_item(self, r, ident):
        """A 200 from the simulator for ident: its results[ident] object."""
        self.assert_api(r, 200)
        self.assertEqual(r.json(), {"id": ident, "name": "item " + ident}, r)


class WithSimulator(MetadataBase):
    """`tailcut upstream` behind `tailcut serve --workers 1 --batch-max 50`."""

    @classmethod
    def setUpClass(cls):
        cls.up = th.Proc("upstream", "--access-log", "off")
        cls.srv = th.start_in_front(cls.up.kill, lambda: serve(
            "http://127.0.0.1:%d/api/metadata" % cls.up.port,
            "--batch-max", "50", "--max-timeout", "30000"))

    @classmethod
    def tearDownClass(cls):
        th.stop_in_front(cls.srv, lambda: cls.up.stop(expect=0))

    def setUp(self):
        st, _, _ = th.http_request(self.up.port, "POST", "/reset", b"")
        self.assertEqual(st, 200)

    def stats(self):
        st, _, body = th.http_request(self.up.port, "GET", "/stats")
        self.assertEqual(st, 200)
        return json.loads(body)

    def test_120_distinct_ids_make_three_calls_of_50_50_20(self):
        before = metrics(self.srv.port)
        ids = ["id-%03d" % i for i in range(120)]
        rs = concurrent_get(self.srv.port, ["/api/metadata/" + i for i in ids])
        for i, r in zip(ids, rs):
            self.assert_item(r, i)
        s = self.stats()
        self.assertEqual(s["metadata_calls"], 3, s)
        self.assertEqual(sorted(len(c) for c in s["metadata_ids"]), [20, 50, 50], s)
        sent = [i for c in s["metadata_ids"] for i in c]
        self.assertEqual(sorted(sent), ids)  # each ID exactly once
        after = metrics(self.srv.port)
        d = lambda name, **kw: metric(after, name, **kw) - metric(before, name, **kw)  # noqa: E731
        self.assertEqual(d("tailcut_metadata_batches_total"), 3)
        self.assertEqual(d("tailcut_metadata_batch_keys_total"), 120)
        self.assertEqual(d("tailcut_metadata_dedup_hits_total"), 0)
        self.assertEqual(d("tailcut_metadata_batch_size_count"), 3)
        self.assertEqual(d("tailcut_metadata_batch_size_sum"), 120)
        self.assertEqual(d("tailcut_metadata_batch_size_bucket", le="20"), 1)
        self.assertEqual(d("tailcut_metadata_batch_size_bucket", le="50"), 3)
        self.assertEqual(d("tailcut_metadata_batch_wait_seconds_count"), 3)
        self.assertEqual(d("tailcut_requests_total", endpoint="metadata", status="200"), 120)

    def test_30_lookups_of_10_ids_make_one_call_of_10(self):
        before = metrics(self.srv.port)
        ids = ["dup-%d" % (i % 10) for i in range(30)]
        rs = concurrent_get(self.srv.port, ["/api/metadata/" + i for i in ids])
        for i, r in zip(ids, rs):
            self.assert_item(r, i)
        s = self.stats()
        self.assertEqual(s["metadata_calls"], 1, s)
        self.assertEqual(sorted(s["metadata_ids"][0]), sorted(set(ids)), s)
        after = metrics(self.srv.port)
        d = lambda name: metric(after, name) - metric(before, name)  # noqa: E731
        self.assertEqual(d("tailcut_metadata_batches_total"), 1)
        self.assertEqual(d("tailcut_metadata_batch_keys_total"), 10)
        self.assertEqual(d("tailcut_metadata_dedup_hits_total"), 20)
        # Ten IDs never fill a batch of 50: it went out --batch-wait after its first ID.
        self.assertEqual(d("tailcut_metadata_batch_wait_seconds_count"), 1)
        self.assertGreaterEqual(d("tailcut_metadata_batch_wait_seconds_sum"),
                                BATCH_WAIT_MS / 1000 - EARLY)
        self.assertLess(d("tailcut_metadata_batch_wait_seconds_sum"), BATCH_WAIT_MS / 1000 + SLACK)

    def test_missing_ids_are_404_in_a_batch_with_found_ones(self):
        ids = ["missing-1", "here-1", "missing-2", "here-2", "missing-1"]
        rs = concurrent_get(self.srv.port, ["/api/metadata/" + i for i in ids])
        for i, r in zip(ids, rs):
            if i.startswith("missing"):
                doc = self.assert_error(r, 404, "not_found")
                self.assertIn(i, doc["message"])
            else:
                self.assert_item(r, i)
        s = self.stats()
        self.assertEqual(s["metadata_calls"], 1, s)
        self.assertEqual(sorted(s["metadata_ids"][0]),
                         ["here-1", "here-2", "missing-1", "missing-2"], s)

    def test_id_is_percent_decoded_and_checked(self):
        r = get(self.srv.port, "/api/metadata/%41b%2Ec")  # "Ab.c"
        self.assert_item(r, "Ab.c")
        longest = "x" * 128
        self.assert_item(get(self.srv.port, "/api/metadata/" + longest), longest)
        self.assert_item(get(self.srv.port, "/api/metadata/a-b_c.9"), "a-b_c.9")
        bad = ["", "x" * 129, "a%2Fb", "a/b", "a%20b", "a+b", "%zz", "%4", "a%00b", "%C3%BC",
               "a:b", "a%2", "%2e%2E%2F", "a~b"]
        for ident in bad:
            r = get(self.srv.port, "/api/metadata/" + ident)
            self.assert_error(r, 400, "bad_request")
        for q in ["timeout=0", "timeout=abc", "timeout=10ms", "timeout=1&timeout=2",
                  "timeout=30001", "timeout=-5", "timeout="]:
            self.assert_error(get(self.srv.port, "/api/metadata/ok?" + q), 400, "bad_request")
        # Only the good ones reached the upstream.
        s = self.stats()
        self.assertEqual(sorted(i for c in s["metadata_ids"] for i in c),
                         sorted(["Ab.c", longest, "a-b_c.9"]), s)
        self.assert_error(get(self.srv.port, "/api/metadata"), 404, "not_found")
        self.assert_error(get(self.srv.port, "/api/metadata/x", "POST"), 405,
                          "method_not_allowed")

    def test_deadline_before_the_batch_goes_out_is_504_and_sends_nothing(self):
        t0 = time.monotonic()
        r = get(self.srv.port, "/api/metadata/late?timeout=100")
        elapsed = time.monotonic() - t0
        doc = self.assert_error(r, 504, "timeout")
        self.assertIn("100", doc["message"])
        self.assertGreaterEqual(elapsed, 0.100 - EARLY)
        self.assertLess(elapsed, 0.100 + SLACK)
        # The only waiter left: its batch is dropped, never sent.
        time.sleep(BATCH_WAIT_MS / 1000 + 0.2)
        self.assertEqual(self.stats()["metadata_calls"], 0)
        # A later lookup of the same ID is unaffected.
        self.assert_item(get(self.srv.port, "/api/metadata/late?timeout=20000"), "late")

    def test_waiting_counts_toward_the_timeout_others_still_answered(self):
        rs = concurrent_get(self.srv.port, ["/api/metadata/short?timeout=50",
                                            "/api/metadata/long?timeout=20000",
                                            "/api/metadata/short"])
        self.assert_error(rs[0], 504, "timeout")
        self.assertGreaterEqual(rs[0].elapsed, 0.050 - EARLY)
        self.assertLess(rs[0].elapsed, BATCH_WAIT_MS / 1000)  # before the batch even went out
        self.assert_item(rs[1], "long")
        self.assert_item(rs[2], "short")
        s = self.stats()
        self.assertEqual(s["metadata_calls"], 1, s)
        self.assertEqual(sorted(s["metadata_ids"][0]), ["long", "short"], s)


class RateLimited(MetadataBase):
    """The simulator with --metadata-rate 1: a second call within a second gets 429."""

    def test_429_fails_that_batch_only(self):
        up = th.Proc("upstream", "--access-log", "off", "--metadata-rate", "1")
        with up:
            with serve("http://127.0.0.1:%d/api/metadata" % up.port, "--batch-max", "5") as srv:
                first = concurrent_get(srv.port, ["/api/metadata/a%d" % i for i in range(5)])
                for i, r in enumerate(first):
                    self.assert_item(r, "a%d" % i)
                # Full batches go out at once: this call comes well within the second.
                second = concurrent_get(srv.port, ["/api/metadata/b%d" % i for i in range(5)])
                for r in second:
                    doc = self.assert_error(r, 502, "upstream_failed")
                    self.assertIn("429", doc["message"])
                time.sleep(1.2)  # the bucket refills
                third = concurrent_get(srv.port, ["/api/metadata/c%d" % i for i in range(5)])
                for i, r in enumerate(third):
                    self.assert_item(r, "c%d" % i)
                st, _, body = th.http_request(up.port, "GET", "/stats")
                s = json.loads(body)
                self.assertEqual(s["metadata_calls"], 2, s)
                self.assertEqual(s["metadata_rejected"], 1, s)
                m = metrics(srv.port)
                self.assertEqual(metric(m, "tailcut_requests_total", endpoint="metadata",
                                        status="502"), 5)


class WithScriptedUpstream(MetadataBase):
    """A scripted upstream whose URL already has a query string, behind --batch-max 5."""

    @classmethod
    def setUpClass(cls):
        cls.up = ScriptedUpstream()
        cls.srv = th.start_in_front(cls.up.close, lambda: serve(
            "http://127.0.0.1:%d/meta?token=t0k" % cls.up.port,
            "--batch-max", "5", "--max-timeout", "20000"))

    @classmethod
    def tearDownClass(cls):
        th.stop_in_front(cls.srv, cls.up.close)

    def setUp(self):
        self.up.reset()

    def lookups(self, ids, **kw):
        return concurrent_get(self.srv.port, ["/api/metadata/" + i for i in ids], **kw)

    def test_call_format_and_values_passed_through_byte_for_byte(self):
        body = (b'{"results": {"a": {"x" : [1, 2,3] } ,"b":"s\\u00e9\\"q","c":null,'
                b'"d":-1.5e3 , "e" : {}}, "extra": true}')
        self.up.queue((200, body, 0))
        rs = self.lookups(["a", "b", "c", "d", "e"])
        want = [b'{"x" : [1, 2,3] }', b'"s\\u00e9\\"q"', b"null", b"-1.5e3", b"{}"]
        for r, w in zip(rs, want):
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.body, w, r)
            self.assertEqual(r.headers.get("content-type"), "application/json", r)
        calls = self.up.calls()
        self.assertEqual(len(calls), 1, calls)
        # The metadata URL's own query is kept; each distinct ID once, as id=...
        self.assertTrue(calls[0].startswith("token=t0k&id="), calls)
        self.assertEqual(sorted(id_list(calls[0])), ["a", "b", "c", "d", "e"])
        self.assertEqual(calls[0], "token=t0k&" + "&".join("id=" + i for i in id_list(calls[0])))

    def test_every_failed_call_is_502_for_its_whole_batch_and_not_the_next(self):
        failures = [
            (500, '{"error":"boom"}', 0),
            (429, '{"error":"slow down"}', 0),
            (404, '{"results":{}}', 0),
            (200, '{"results":{"f0":1}', 0),  # truncated: invalid JSON
            (200, 'not json', 0),
            (200, '{"items":{"f0":1}}', 0),  # no results object
            (200, '{"results":[1,2]}', 0),  # results not an object
            (200, '', 0),
        ]
        for n, step in enumerate(failures):
            with self.subTest(step=step):
                self.up.reset()
                self.up.queue(step)
                # 4 distinct IDs: one batch, sent after --batch-wait, whatever the arrival order
                ids = ["f%d" % i for i in range(4)] + ["f0", "f3"]
                rs = self.lookups(ids)
                for r in rs:
                    self.assert_error(r, 502, "upstream_failed")
                ok = self.lookups(["g%d" % i for i in range(5)])
                for i, r in enumerate(ok):
                    self.assertEqual(r.status, 200, r)
                    self.assertEqual(r.json(), {"id": "g%d" % i, "n": 2})
                self.assertEqual(len(self.up.calls()), 2, self.up.calls())

    def test_slow_upstream_own_deadline_is_504_the_batch_goes_on(self):
        self.up.queue((200, json.dumps({"results": {k: k for k in "vwxyz"}}), 0.8))
        rs = self.lookups(["v?timeout=200", "w", "x?timeout=15000", "y", "z"])
        self.assert_error(rs[0], 504, "timeout")
        self.assertGreaterEqual(rs[0].elapsed, 0.200 - EARLY)
        self.assertLess(rs[0].elapsed, 0.8)
        for r, k in zip(rs[1:], "wxyz"):
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.body, ('"%s"' % k).encode())
            self.assertGreaterEqual(r.elapsed, 0.8 - EARLY)
        self.assertEqual(sorted(id_list(self.up.calls()[0])), list("vwxyz"))

    def test_a_client_that_leaves_does_not_cancel_the_batch(self):
        # After the batch went out: one client closes, the other four are answered.
        self.up.queue((200, json.dumps({"results": {k: [k] for k in "klmno"}}), 0.6))
        rs = self.lookups(list("klmno"), close_after={1: 0.2})
        self.assertIsNone(rs[1])
        for r, k in zip(rs[:1] + rs[2:], "kmno"):
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.json(), [k])
        # Before the batch went out: the leaver's ID is not even asked for.
        self.up.reset()
        rs = self.lookups(["gone", "stay", "stay"], close_after={0: 0.05})
        self.assertIsNone(rs[0])
        for r in rs[1:]:
            self.assertEqual(r.status, 200, r)
        self.assertEqual([id_list(q) for q in self.up.calls()], [["stay"]])
        # The server is healthy and answers again.
        self.assertEqual(get(self.srv.port, "/healthz").status, 200)

    def test_sigterm_drains_waiting_lookups(self):
        self.up.queue((200, json.dumps({"results": {"d1": 1, "d2": 2}}), 0.5))
        srv = serve("http://127.0.0.1:%d/meta" % self.up.port, "--batch-max", "5")
        try:
            result = {}
            t = threading.Thread(target=lambda: result.update(
                rs=concurrent_get(srv.port, ["/api/metadata/d1", "/api/metadata/d2"])))
            t.start()
            th.wait_for(lambda: len(self.up.calls()) == 1, 5 * th.SLOW + BATCH_WAIT_MS / 1000)
            srv.stop(expect=0)  # SIGTERM while the batch is out: it is answered first
            t.join(10 * th.SLOW)
            self.assertEqual([(r.status, r.body) for r in result["rs"]], [(200, b"1"), (200, b"2")])
        finally:
            srv.kill()

    def test_unreachable_upstream_is_502(self):
        with serve("http://127.0.0.1:9/nothing-listens-here", "--batch-max", "2") as srv:
            rs = concurrent_get(srv.port, ["/api/metadata/a", "/api/metadata/b"])
            for r in rs:
                self.assert_error(r, 502, "upstream_failed")


class WithoutMetadataUpstream(MetadataBase):
    """A real --upstream and no --metadata-upstream (issue 11): nothing is embedded, lookups are
    off and say how to turn them on; the embedded simulator serves only `serve` alone."""

    def test_lookups_are_off_and_nothing_is_embedded(self):
        srv = th.Proc("serve", "--workers", "1", "--upstream", "http://127.0.0.1:9/api/work",
                      "--access-log", "off")
        try:
            for path in ("/api/metadata/abc", "/api/metadata/abc?timeout=5000",
                         "/api/metadata/" + "x" * 200):
                doc = self.assert_error(get(srv.port, path), 404, "not_found")
                self.assertIn("--metadata-upstream", doc["message"])
            self.assertEqual(get(srv.port, "/healthz").status, 200)
            srv.stop(expect=0)
        finally:
            srv.kill()
        err = srv.stderr_text()
        self.assertIsNone(srv.embedded_port, err)
        self.assertNotIn("embedded upstream", err)
        off = [line for line in err.splitlines() if "metadata lookups are off" in line]
        self.assertEqual(len(off), 1, err)
        self.assertIn("--metadata-upstream", off[0])

    def test_serve_alone_still_embeds_both(self):
        srv = th.Proc("serve", "--workers", "1", "--access-log", "off")
        try:
            self.assertIsNotNone(srv.embedded_port, srv.stderr_text())
            self.assert_item(get(srv.port, "/api/metadata/abc"), "abc")
            srv.stop(expect=0)
        finally:
            srv.kill()
        self.assertNotIn("metadata lookups are off", srv.stderr_text())


if __name__ == "__main__":
    watchdog = th.Watchdog(300)
    unittest.main(verbosity=2)

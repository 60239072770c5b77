#!/usr/bin/env python3
"""Integration tests of `tailcut upstream`, the simulated slow, flaky upstream (docs/upstream.md).

Every test starts the real binary on 127.0.0.1 port 0 with a fixed --seed, talks HTTP to it,
and stops it with SIGTERM expecting exit status 0 (under TC_SANITIZE=ON a leak fails the test).
Timing assertions only bound from below by the configured delay (minus timer granularity) and
from above with generous slack; nothing asserts speed.
"""

import asyncio
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import tchelpers as th  # noqa: E402

# Timer granularity: libuv timers count whole milliseconds of loop time.
EARLY = 0.003
# Slack above a configured delay for a response to arrive (connect, parse, scheduling).
SLACK = 1.0 * th.SLOW
HOST = "127.0.0.1"


class Upstream(th.Proc):
    """`tailcut upstream --listen 127.0.0.1:0 ARGS...`, stopped with SIGTERM (status 0) on exit
    from its with-block."""

    host = HOST

    def __init__(self, *args):
        super().__init__("upstream", *args)

    def request(self, method, path, body=None, headers=None, timeout=None):
        return th.timed_request(self.port, method, path, body, headers, timeout or 10 * th.SLOW)

    def get_json(self, path):
        r = self.request("GET", path)
        if r.status != 200:
            raise AssertionError("GET %s: %r" % (path, r))
        return r.json()

    def post_json(self, path, obj):
        body = obj if isinstance(obj, (bytes, str)) else json.dumps(obj)
        return self.request("POST", path, body, {"Content-Type": "application/json"})

    def stats_when(self, pred, timeout):
        """/stats once pred(stats) holds, or the last /stats after timeout."""
        last = {}

        def probe():
            last["s"] = self.get_json("/stats")
            return pred(last["s"])

        th.wait_for(probe, timeout)
        return last["s"]


def upstream(*args):
    return Upstream(*args)


def send_get(sock, path):
    sock.sendall(("GET %s HTTP/1.1\r\nHost: test\r\n\r\n" % path).encode())


def recv_some(sock, timeout):
    """Bytes received within timeout (b"" on EOF); raises socket.timeout if none arrived,
    ConnectionResetError on RST."""
    sock.settimeout(timeout)
    return sock.recv(65536)


def open_and_silent(sock):
    """True if the peer has neither sent a byte nor closed (a non-blocking peek)."""
    try:
        sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except (BlockingIOError, socket.timeout):  # no data yet (timeout: a socket in timeout mode)
        return True
    except ConnectionResetError:
        return False
    return False  # bytes arrived, or b"" (EOF)


def work_time(resp):
    """The DELAY of a default {"time": DELAY} body."""
    return json.loads(resp.body)["time"]


def parallel(fn, items, workers=32):
    with ThreadPoolExecutor(max_workers=workers) as ex:
        return list(ex.map(fn, items))


class Profiles(unittest.TestCase):
    def check_delays(self, srv, n, lo_ms, hi_ms):
        """n concurrent GET /api/work: each body's time in [lo, hi] and the client saw at least
        that delay, and not much more."""
        rs = parallel(lambda _: srv.request("GET", "/api/work"), range(n))
        times = []
        for r in rs:
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.headers.get("content-type"), "application/json")
            self.assertEqual(r.headers.get("x-tailcut-outcome"), "ok")
            t = work_time(r)
            self.assertIsInstance(t, int)
            self.assertGreaterEqual(t, lo_ms)
            self.assertLessEqual(t, hi_ms)
            self.assertGreaterEqual(r.elapsed, t / 1000 - EARLY, r)
            self.assertLess(r.elapsed, t / 1000 + SLACK, r)
            times.append(t)
        return times

    def test_fixed(self):
        with upstream("--profile", "fixed:200", "--seed", "1") as srv:
            times = self.check_delays(srv, 8, 200, 200)
            self.assertEqual(set(times), {200})

    def test_fixed_zero(self):
        with upstream("--profile", "fixed:0", "--seed", "1") as srv:
            self.check_delays(srv, 20, 0, 0)

    def test_uniform(self):
        with upstream("--profile", "uniform:50:250", "--seed", "7") as srv:
            times = self.check_delays(srv, 40, 50, 250)
            self.assertGreater(len(set(times)), 10, "uniform draws should vary: %r" % times)

    def test_lognormal(self):
        with upstream("--profile", "lognormal:100:0.5", "--seed", "3") as srv:
            rs = parallel(lambda _: srv.request("GET", "/api/work"), range(40))
            times = []
            for r in rs:
                self.assertEqual(r.status, 200, r)
                t = work_time(r)
                self.assertGreaterEqual(t, 0)
                self.assertGreaterEqual(r.elapsed, t / 1000 - EARLY)
                self.assertLess(r.elapsed, t / 1000 + SLACK)
                times.append(t)
            # Median 100 ms, sigma 0.5: 40 draws have a median well inside [50, 200] and spread.
            med = statistics.median(times)
            self.assertGreater(med, 50, times)
            self.assertLess(med, 200, times)
            self.assertGreater(max(times) / max(1, min(times)), 1.5, times)

    def test_straggler(self):
        with upstream("--profile", "straggler:20:400:0.25", "--seed", "11") as srv:
            times = self.check_delays(srv, 40, 20, 400)
            self.assertLessEqual(set(times), {20, 400})
            slow = times.count(400)
            # P = 0.25 of 40: expect about 10; bounds far outside any plausible draw.
            self.assertGreater(slow, 1, times)
            self.assertLess(slow, 25, times)


def classify(res):
    """Outcome of one exponea /api/work as seen on the wire."""
    if res.kind == "timeout" and res.nbytes == 0:
        return "hang"
    if res.kind != "response":
        return "broken:" + res.kind
    if res.status == 500:
        return "error"
    if res.status != 200:
        return "broken:%d" % res.status
    try:
        doc = json.loads(res.body)
    except ValueError:
        return "invalid_json"
    if isinstance(doc, dict) and isinstance(doc.get("time"), int) and 100 <= doc["time"] <= 600:
        return "ok"
    return "broken:body"


class Exponea(unittest.TestCase):
    def test_mix_over_2000_requests(self):
        """2,000 requests, 250 at a time, each on its own connection. A request with no byte
        back within the client timeout counts as a hang (a good answer takes at most 600 ms);
        the client then closes, which the server must count as a client abort."""
        n, conc = 2000, 250
        timeout = 1.5 * th.SLOW
        with upstream("--seed", "2024") as srv:  # exponea is the default profile

            async def run():
                sem = asyncio.Semaphore(conc)

                async def one():
                    async with sem:
                        return await th.aio_request(srv.port, "GET", "/api/work", timeout)

                return await asyncio.gather(*(one() for _ in range(n)))

            results = asyncio.run(run())
            counts = {}
            for res in results:
                kind = classify(res)
                counts[kind] = counts.get(kind, 0) + 1
                if kind in ("ok", "error", "invalid_json"):
                    self.assertGreaterEqual(res.elapsed, 0.1 - EARLY, res)
                    self.assertEqual(res.headers.get("x-tailcut-outcome"), kind, res)
            broken = {k: v for k, v in counts.items() if k.startswith("broken")}
            self.assertEqual(broken, {}, counts)
            for kind in ("hang", "invalid_json", "error"):
                share = counts.get(kind, 0) / n
                self.assertLess(abs(share - 1 / 11), 0.03, (kind, counts))
            self.assertLess(abs(counts["ok"] / n - 8 / 11), 0.03, counts)

            # The server's own account agrees with the wire, and every hang the client gave up
            # on was counted as an abort with its timer released (in_flight back to 0).
            stats = srv.stats_when(lambda s: s["in_flight"] == 0, 5 * th.SLOW)
            self.assertEqual(stats["in_flight"], 0, stats)
            self.assertEqual(stats["work_requests"], n)
            self.assertEqual(stats["client_aborts"], counts["hang"])
            for kind in ("ok", "invalid_json", "error", "hang"):
                self.assertEqual(stats["outcomes"][kind], counts.get(kind, 0), (kind, stats))
            self.assertEqual(len(stats["arrivals_ms"]), n)


class Scenario(unittest.TestCase):
    def test_steps_apply_in_order_then_profile_resumes(self):
        with upstream("--profile", "fixed:5", "--seed", "5") as srv:
            srv.request("GET", "/api/work")  # an arrival before the scenario
            self.assertEqual(len(srv.get_json("/stats")["arrivals_ms"]), 1)
            steps = [
                {"delay_ms": 150, "status": 201, "body": "first"},
                {"status": 502},
                {"action": "reset", "delay_ms": 50},
                {"body": '{"x":1}'},
                {},
            ]
            r = srv.post_json("/scenario", steps)
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.json(), {"queued": 5, "pending": 5})
            self.assertEqual(srv.get_json("/stats")["arrivals_ms"], [])

            r = srv.request("GET", "/api/work")
            self.assertEqual((r.status, r.body), (201, b"first"))
            self.assertGreaterEqual(r.elapsed, 0.15 - EARLY)
            self.assertEqual(r.headers.get("x-tailcut-outcome"), "scenario")
            r = srv.request("GET", "/api/work")
            self.assertEqual(r.status, 502)
            self.assertEqual(r.json(), {"time": 0})  # the contract's default body
            with th.connect(srv.port) as c:
                t0 = time.monotonic()
                send_get(c, "/api/work")
                with self.assertRaises(ConnectionResetError):
                    recv_some(c, 5 * th.SLOW)
                self.assertGreaterEqual(time.monotonic() - t0, 0.05 - EARLY)
            r = srv.request("GET", "/api/work")
            self.assertEqual((r.status, r.json()), (200, {"x": 1}))
            r = srv.request("GET", "/api/work")
            self.assertEqual((r.status, r.json()), (200, {"time": 0}))
            # The queue is empty: the profile applies again.
            r = srv.request("GET", "/api/work")
            self.assertEqual((r.status, r.json()), (200, {"time": 5}))
            self.assertEqual(r.headers.get("x-tailcut-outcome"), "ok")

            stats = srv.get_json("/stats")
            self.assertEqual(stats["scenario_pending"], 0)
            self.assertEqual(stats["outcomes"]["scenario"], 5)
            self.assertEqual(stats["work_requests"], 7)
            arr = stats["arrivals_ms"]
            self.assertEqual(len(arr), 6)
            self.assertEqual(arr, sorted(arr))
            # The first step held its request 150 ms, so the second arrived at least that later.
            self.assertGreaterEqual(arr[1] - arr[0], 150 - 3)

    def test_steps_append_to_queue(self):
        with upstream("--profile", "fixed:0", "--seed", "5") as srv:
            self.assertEqual(srv.post_json("/scenario", [{"status": 201}]).json(),
                             {"queued": 1, "pending": 1})
            self.assertEqual(srv.post_json("/scenario", [{"status": 202}]).json(),
                             {"queued": 1, "pending": 2})
            self.assertEqual([srv.request("GET", "/api/work").status for _ in range(3)],
                             [201, 202, 200])

    def test_bad_scenarios_are_400_and_leave_queue_unchanged(self):
        bad = [
            (b'[{"delay_ms": 1,}]', "malformed JSON"),
            (b"[{}] trailing", "malformed JSON"),
            (b"", "malformed JSON"),
            (b'{"delay_ms": 1}', "array"),
            (b'[{"delay_ms": 1, "colour": "red"}]', 'unknown field "colour"'),
            (b'[{}, {"action": "explode"}]', 'unknown action "explode"'),
            (b'[{"status": 99}]', "status"),
            (b'[{"status": 100}]', "status"),
            (b'[{"status": 101}]', "status"),
            (b'[{"status": 199}]', "status"),
            (b'[{"status": 200}, {"status": 103}]', "status"),
            (b'[{"status": 600}]', "status"),
            (b'[{"delay_ms": -1}]', "delay_ms"),
            (b'[{"delay_ms": "5"}]', "delay_ms"),
            (b'[{"delay_ms": 1.5}]', "delay_ms"),
            (b'[{"body": 5}]', "body"),
            (b'[{"action": 1}]', "action"),
            (b'[{"status": 201, "status": 202}]', "duplicate"),
            (b"[3]", "object"),
        ]
        with upstream("--profile", "fixed:0", "--seed", "5") as srv:
            r = srv.post_json("/scenario", [{"status": 201}, {"status": 202}])
            self.assertEqual(r.status, 200, r)
            for body, hint in bad:
                r = srv.post_json("/scenario", body)
                self.assertEqual(r.status, 400, (body, r))
                doc = r.json()
                self.assertEqual(doc["success"], False)
                self.assertEqual(doc["error"], "bad_request")
                self.assertIn(hint, doc["message"], body)
                self.assertEqual(srv.get_json("/stats")["scenario_pending"], 2, body)
            self.assertEqual([srv.request("GET", "/api/work").status for _ in range(3)],
                             [201, 202, 200])

    def test_reset_clears_counters_and_queue(self):
        with upstream("--profile", "fixed:0", "--seed", "5") as srv:
            srv.request("GET", "/api/work")
            srv.request("GET", "/api/metadata?id=a")
            srv.post_json("/scenario", [{"status": 201}])
            r = srv.request("POST", "/reset", b"")
            self.assertEqual(r.status, 200, r)
            stats = srv.get_json("/stats")
            for key in ("work_requests", "in_flight", "client_aborts", "metadata_calls",
                        "scenario_pending"):
                self.assertEqual(stats[key], 0, key)
            self.assertEqual(stats["metadata_ids"], [])
            self.assertEqual(stats["arrivals_ms"], [])
            self.assertEqual(srv.request("GET", "/api/work").status, 200)

    def test_methods_and_unknown_paths(self):
        with upstream("--profile", "fixed:0", "--seed", "5") as srv:
            r = srv.request("GET", "/scenario")
            self.assertEqual(r.status, 405)
            self.assertEqual(r.headers.get("allow"), "POST")
            r = srv.request("POST", "/api/work", b"x")
            self.assertEqual(r.status, 405)
            self.assertIn("GET", r.headers.get("allow"))
            r = srv.request("GET", "/nope")
            self.assertEqual(r.status, 404)
            self.assertEqual(r.json()["error"], "not_found")
            r = srv.request("HEAD", "/api/work")
            self.assertEqual((r.status, r.body), (200, b""))


class Wire(unittest.TestCase):
    def test_no_content_steps_send_no_body(self):
        """Steps of status 204 and 304 (with the default body, and with one given) put a head
        alone on the wire: no Content-Length, no Content-Type, no body byte (RFC 9110 §6.4.1),
        and the connection answers the next request right after it."""
        with upstream("--profile", "fixed:0", "--seed", "5") as srv:
            steps = [{"status": 204}, {"status": 304, "body": '{"x":1}'},
                     {"status": 304}, {"status": 204, "body": "text"}]
            r = srv.post_json("/scenario", steps)
            self.assertEqual(r.status, 200, r)
            with th.connect(srv.port) as c:
                for step in steps:
                    send_get(c, "/api/work")
                    data = b""
                    while b"\r\n\r\n" not in data:
                        chunk = recv_some(c, 5 * th.SLOW)
                        self.assertNotEqual(chunk, b"", "closed after %r" % data)
                        data += chunk
                    head, _, rest = data.partition(b"\r\n\r\n")
                    lines = head.decode().split("\r\n")
                    reason = "No Content" if step["status"] == 204 else "Not Modified"
                    self.assertEqual(lines[0], "HTTP/1.1 %d %s" % (step["status"], reason))
                    names = [ln.split(":", 1)[0].lower() for ln in lines[1:]]
                    self.assertNotIn("content-length", names, head)
                    self.assertNotIn("content-type", names, head)
                    self.assertIn("connection: keep-alive", [ln.lower() for ln in lines], head)
                    self.assertEqual(rest, b"", "bytes after a %d head" % step["status"])
                    c.settimeout(0.1)  # a body sent late would be here by then
                    with self.assertRaises(socket.timeout, msg="bytes after a %d head"
                                           % step["status"]):
                        c.recv(1, socket.MSG_PEEK)
                # The queue is empty: the same connection gets the profile's answer, whole.
                send_get(c, "/api/work")
                st, hdrs, body = th.read_response(c)
                self.assertEqual((st, body), (200, b'{"time": 0}'))
                self.assertEqual(getattr(c, "_tc_buf", b""), b"")
            self.assertEqual(srv.get_json("/stats")["outcomes"]["scenario"], 4)

    def test_hang_reset_and_aborts(self):
        """hang: silence with the connection open, then FIN at about 10 s; reset: RST; a client
        that leaves early is counted and its request released at once."""
        with upstream("--profile", "fixed:0", "--seed", "5") as srv:
            r = srv.post_json("/scenario", [{"action": "hang"}, {"action": "hang"},
                                            {"action": "reset", "delay_ms": 100},
                                            {"action": "reset"}])
            self.assertEqual(r.status, 200, r)

            # The first hang is watched to its end in the background (about 10 s).
            full = th.connect(srv.port)
            full_t0 = time.monotonic()
            send_get(full, "/api/work")
            srv.stats_when(lambda s: s["work_requests"] == 1, 5 * th.SLOW)
            full_result = {}

            def watch():
                try:
                    full_result["data"] = recv_some(full, 20 * th.SLOW)
                except Exception as e:  # noqa: BLE001 - reported by the assertion below
                    full_result["error"] = repr(e)
                full_result["after"] = time.monotonic() - full_t0

            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()

            # The second hang: no bytes for over 1 s and the connection still open; then the
            # client gives up.
            with th.connect(srv.port) as c:
                send_get(c, "/api/work")
                with self.assertRaises(socket.timeout):
                    recv_some(c, 1.2)
                self.assertTrue(open_and_silent(c))
            # Resets, after the step's delay and at once.
            for delay in (0.1, 0):
                with th.connect(srv.port) as c:
                    t0 = time.monotonic()
                    send_get(c, "/api/work")
                    with self.assertRaises(ConnectionResetError):
                        recv_some(c, 5 * th.SLOW)
                    self.assertGreaterEqual(time.monotonic() - t0, delay - EARLY)

            stats = srv.stats_when(lambda s: s["client_aborts"] == 1, 5 * th.SLOW)
            self.assertEqual(stats["client_aborts"], 1, stats)
            self.assertEqual(stats["in_flight"], 1, stats)  # the watched hang

            watcher.join(25 * th.SLOW)
            full.close()
            self.assertEqual(full_result.get("data"), b"", full_result)  # FIN, no bytes
            self.assertGreaterEqual(full_result["after"], 10.0 - EARLY)
            self.assertLess(full_result["after"], 10.0 + 3 * th.SLOW)
            stats = srv.stats_when(lambda s: s["in_flight"] == 0, 5 * th.SLOW)
            self.assertEqual(stats["in_flight"], 0, stats)
            self.assertEqual(stats["client_aborts"], 1, stats)  # a hang ending is not an abort

    def test_thousands_held_at_once(self):
        """2,000 requests delayed 1 s each wait together on one loop and all answer after about
        1 s; then 2,000 more are abandoned by their clients and all counted and released."""
        n = 2000
        with upstream("--profile", "fixed:1000", "--seed", "5") as srv:

            async def run(timeout):
                sem = asyncio.Semaphore(200)  # connect in waves; all requests stay held
                return await asyncio.gather(*(
                    th.aio_request(srv.port, "GET", "/api/work", timeout, connect_sem=sem,
                                   connect_timeout=10 * th.SLOW)
                    for _ in range(n)))

            t0 = time.monotonic()
            results = asyncio.run(run(10 * th.SLOW))
            wall = time.monotonic() - t0
            for res in results:
                self.assertEqual((res.kind, res.status), ("response", 200), res)
                self.assertEqual(json.loads(res.body), {"time": 1000})
                self.assertGreaterEqual(res.elapsed, 1.0 - EARLY)
            # Concurrent, not one after another (which would take 2,000 s).
            self.assertLess(wall, 1.0 + 15 * th.SLOW)

            results = asyncio.run(run(0.3))
            self.assertEqual({r.kind for r in results}, {"timeout"})
            stats = srv.stats_when(lambda s: s["client_aborts"] == n, 10 * th.SLOW)
            self.assertEqual(stats["client_aborts"], n, stats)
            self.assertEqual(stats["in_flight"], 0, stats)
            self.assertEqual(stats["work_requests"], 2 * n)
            # With nothing held, SIGTERM ends the process at once: no timer was left behind
            # to keep the loop alive until the drain timeout.
            t0 = time.monotonic()
            srv.stop()
            self.assertLess(time.monotonic() - t0, 3 * th.SLOW)

    def test_drain_answers_in_flight_requests(self):
        with upstream("--profile", "fixed:500", "--seed", "5") as srv:
            with th.connect(srv.port) as c:
                send_get(c, "/api/work")
                srv.stats_when(lambda s: s["in_flight"] == 1, 5 * th.SLOW)
                srv.proc.send_signal(signal.SIGTERM)
                st, _, body = th.read_response(c)
                self.assertEqual((st, json.loads(body)), (200, {"time": 500}))
            srv.proc.wait(10 * th.SLOW)  # exits by itself once drained
            srv.stop()  # checks exit status 0 (no second signal: it has exited)

    def test_drain_timeout_cuts_a_hang(self):
        with upstream("--profile", "fixed:0", "--seed", "5", "--drain-timeout", "300") as srv:
            self.assertEqual(srv.post_json("/scenario", [{"action": "hang"}]).status, 200)
            with th.connect(srv.port) as c:
                send_get(c, "/api/work")
                srv.stats_when(lambda s: s["in_flight"] == 1, 5 * th.SLOW)
                t0 = time.monotonic()
                srv.proc.send_signal(signal.SIGTERM)
                srv.proc.wait(10 * th.SLOW)
                self.assertGreaterEqual(time.monotonic() - t0, 0.3 - EARLY)
                self.assertLess(time.monotonic() - t0, 3 * th.SLOW)  # not the hang's 10 s
                self.assertEqual(recv_some(c, 5 * th.SLOW), b"")  # closed without an answer
            srv.stop()  # exit status 0


class Metadata(unittest.TestCase):
    def test_results_and_recorded_ids(self):
        with upstream("--profile", "fixed:0", "--seed", "5") as srv:
            r = srv.request("GET", "/api/metadata?id=A&id=missing-1&id=b.c&id=%5Fx&other=1")
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.headers.get("content-type"), "application/json")
            res = r.json()["results"]
            self.assertEqual(set(res), {"A", "b.c", "_x"})
            self.assertEqual(res["A"]["id"], "A")
            self.assertIn("name", res["A"])
            r = srv.request("GET", "/api/metadata?id=missing")
            self.assertEqual((r.status, r.json()), (200, {"results": {}}))
            stats = srv.get_json("/stats")
            self.assertEqual(stats["metadata_calls"], 2)
            self.assertEqual(stats["metadata_ids"], [["A", "missing-1", "b.c", "_x"], ["missing"]])

    def test_bad_ids(self):
        with upstream("--profile", "fixed:0", "--seed", "5") as srv:
            for q in ("", "?x=1", "?id=", "?id=a%20b", "?id=a/b", "?id=%zz", "?id=" + "a" * 129,
                      "?id=ok&id=b%00"):
                r = srv.request("GET", "/api/metadata" + q)
                self.assertEqual(r.status, 400, (q, r))
                self.assertEqual(r.json()["error"], "bad_request")
            r = srv.request("GET", "/api/metadata?id=" + "a" * 128)
            self.assertEqual(r.status, 200)
            self.assertEqual(srv.get_json("/stats")["metadata_calls"], 1)

    def test_rate_limit_429(self):
        with upstream("--profile", "fixed:0", "--seed", "5", "--metadata-rate", "4") as srv:
            with th.connect(srv.port) as c:  # one kept-alive connection: fast
                statuses = []
                for i in range(12):
                    send_get(c, "/api/metadata?id=k%d" % i)
                    st, hdrs, body = th.read_response(c)
                    statuses.append(st)
                    if st == 429:
                        self.assertEqual(hdrs.get("retry-after"), "1")
                        self.assertEqual(json.loads(body)["error"], "rate_limited")
            ok = statuses.count(200)
            self.assertIn(ok, (4, 5), statuses)  # the burst, plus at most one refilled token
            self.assertEqual(statuses.count(429), 12 - ok, statuses)
            stats = srv.get_json("/stats")
            self.assertEqual(stats["metadata_calls"], ok)
            self.assertEqual(stats["metadata_rejected"], 12 - ok)
            self.assertEqual(len(stats["metadata_ids"]), ok)
            time.sleep(1.1)
            self.assertEqual(srv.request("GET", "/api/metadata?id=later").status, 200)


class Determinism(unittest.TestCase):
    def sequence(self, *args, n):
        """n /api/work requests in a known arrival order (each one's arrival is confirmed in
        /stats before the next is sent), answers collected concurrently; a request with no
        answer within 1.5 s is recorded as a hang."""
        with upstream(*args) as srv:
            conns = []
            for i in range(n):
                c = th.connect(srv.port)
                send_get(c, "/api/work")
                conns.append(c)
                stats = srv.stats_when(lambda s: s["work_requests"] == i + 1, 5 * th.SLOW)
                self.assertEqual(stats["work_requests"], i + 1)

            def answer(c):
                try:
                    c.settimeout(1.5 * th.SLOW)
                    st, hdrs, body = th.read_response(c)
                    return (st, hdrs.get("x-tailcut-outcome"), body.decode())
                except socket.timeout:
                    return ("hang",)
                finally:
                    c.close()

            return parallel(answer, conns, workers=n)

    def test_same_seed_same_draws(self):
        a = self.sequence("--profile", "uniform:0:40", "--seed", "42", n=30)
        b = self.sequence("--profile", "uniform:0:40", "--seed", "42", n=30)
        c = self.sequence("--profile", "uniform:0:40", "--seed", "43", n=30)
        self.assertEqual(a, b)
        self.assertNotEqual(a, c)

    def test_same_seed_same_exponea_outcomes(self):
        a = self.sequence("--seed", "9", n=22)
        b = self.sequence("--seed", "9", n=22)
        self.assertEqual(a, b)
        # Each run of 11 draws holds exactly one hang, one invalid JSON and one 500.
        for block in (a[:11], a[11:]):
            kinds = [x[0] if x[0] == "hang" else x[1] for x in block]
            self.assertEqual(sorted(kinds), sorted(["hang", "invalid_json", "error"] + ["ok"] * 8),
                             block)


class AdaptiveSupport(unittest.TestCase):
    """The parts of §2 the adaptive-hedging benchmark needs: mix, POST /profile, per_second."""

    def test_mix(self):
        with upstream("--profile", "mix:10:30:300:400:0.25", "--seed", "5") as srv:
            rs = parallel(lambda _: srv.request("GET", "/api/work"), range(80))
            times = []
            for r in rs:
                self.assertEqual(r.status, 200, r)
                t = work_time(r)
                self.assertTrue(10 <= t <= 30 or 300 <= t <= 400, t)
                self.assertGreaterEqual(r.elapsed, t / 1000 - EARLY, r)
                self.assertLess(r.elapsed, t / 1000 + SLACK, r)
                times.append(t)
            slow = len([t for t in times if t >= 300])
            # P = 0.25 of 80: about 20; bounds far outside any plausible draw.
            self.assertGreater(slow, 3, times)
            self.assertLess(slow, 50, times)
            self.assertEqual(srv.get_json("/stats")["profile"], "mix:10:30:300:400:0.25")
        # P = 0 and P = 1 pick one band only
        with upstream("--profile", "mix:5:5:50:50:0", "--seed", "1") as srv:
            self.assertEqual(set(self_times(srv, 10)), {5})
        with upstream("--profile", "mix:5:5:50:50:1", "--seed", "1") as srv:
            self.assertEqual(set(self_times(srv, 10)), {50})

    def test_mix_same_seed_same_draws(self):
        def draws():
            with upstream("--profile", "mix:0:20:30:40:0.3", "--seed", "42") as srv:
                return [work_time(srv.request("GET", "/api/work")) for _ in range(30)]
        self.assertEqual(draws(), draws())

    def test_post_profile_switches_at_once(self):
        with upstream("--profile", "fixed:0", "--seed", "1") as srv:
            self.assertEqual(set(self_times(srv, 5)), {0})
            r = srv.post_json("/profile", {"profile": "fixed:150"})
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.json(), {"profile": "fixed:150"})
            r = srv.request("GET", "/api/work")
            self.assertEqual(work_time(r), 150)
            self.assertGreaterEqual(r.elapsed, 0.150 - EARLY)
            self.assertEqual(srv.get_json("/stats")["profile"], "fixed:150")
            for bad in ('{"profile":"nope"}', '{"profile":"mix:1:2:3:4"}', '{"profile":5}',
                        '{}', '[]', 'not json', '{"profile":"fixed:1","x":1}',
                        '{"profile":"uniform:9:1"}', '{"profile":"mix:1:2:4:3:0.5"}',
                        '{"profile":"mix:1:2:3:4:1.5"}'):
                r = srv.post_json("/profile", bad)
                self.assertEqual(r.status, 400, (bad, r))
                self.assertEqual(r.json()["error"], "bad_request", bad)
            self.assertEqual(srv.get_json("/stats")["profile"], "fixed:150")
            self.assertEqual(srv.request("GET", "/profile").status, 405)
            r = srv.post_json("/profile", {"profile": "mix:0:0:0:0:0.5"})
            self.assertEqual(r.status, 200, r)
            self.assertEqual(work_time(srv.request("GET", "/api/work")), 0)

    def test_per_second_counts_by_attempt_header(self):
        with upstream("--profile", "fixed:0", "--seed", "1") as srv:
            sent = {"1": 7, "2": 3, "3": 1}
            for value, n in sent.items():
                for _ in range(n):
                    r = srv.request("GET", "/api/work", headers={"X-Tailcut-Attempt": value})
                    self.assertEqual(r.status, 200)
            for value in (None, "0", "abc", "17", "999"):
                srv.request("GET", "/api/work",
                            headers={"X-Tailcut-Attempt": value} if value else None)
            s = srv.get_json("/stats")
            ps = s["per_second"]
            self.assertIsInstance(ps, list)
            self.assertGreaterEqual(len(ps), 1)
            self.assertLessEqual(len(ps), 600)
            secs = [e["second"] for e in ps]
            self.assertEqual(secs, list(range(secs[0], secs[0] + len(secs))))
            total = {}
            for e in ps:
                for k, v in e.items():
                    if k != "second":
                        total[k] = total.get(k, 0) + v
            self.assertEqual(total, {"1": 7, "2": 3, "3": 1, "none": 5})
            # POST /reset clears it
            self.assertEqual(srv.request("POST", "/reset").status, 200)
            ps = srv.get_json("/stats")["per_second"]
            self.assertEqual(sum(len(e) - 1 for e in ps), 0, ps)

    def test_arrivals_kept_to_100000(self):
        # Asserts the cap, not speed: 100,050 requests over keep-alive connections.
        n = 100050
        with upstream("--profile", "fixed:0", "--seed", "1", "--access-log", "off") as srv:
            def burst(k):
                s = th.connect(srv.port, timeout=60 * th.SLOW)
                req = b"GET /api/work HTTP/1.1\r\nHost: t\r\n\r\n"
                done = 0
                while done < k:
                    batch = min(200, k - done)
                    s.sendall(req * batch)
                    got = 0
                    buf = b""
                    while got < batch:
                        chunk = s.recv(1 << 20)
                        self.assertTrue(chunk)
                        buf += chunk
                        got = buf.count(b"HTTP/1.1 200")
                    done += batch
                s.close()
            parallel(burst, [n // 4] * 3 + [n - 3 * (n // 4)], workers=4)
            s = srv.get_json("/stats")
            self.assertEqual(s["work_requests"], n)
            self.assertEqual(len(s["arrivals_ms"]), 100000)
            self.assertEqual(s["arrivals_forgotten"], 50)
            self.assertEqual(sum(e.get("none", 0) for e in s["per_second"]), n)


def stall_due(t, work, pause, period, phase):
    """When work seconds of time outside the stalls have passed since wall-clock time t (all in
    seconds): the stalls are [k x period + phase, + pause) on the Unix epoch's clock, and nothing
    is answered during one (docs/upstream.md, Stalls). Steps through the stalls one by one."""
    while True:
        start = (t - phase) // period * period + phase  # the last stall's start at or before t
        if t < start + pause:
            t = start + pause  # in a stall: the work starts as it ends
        nxt = start + period
        if t + work <= nxt:
            return t + work
        work -= nxt - t
        t = nxt


class Pause(unittest.TestCase):
    """The pause profile (CONTRACT §2): the whole simulator stalls for PAUSE_MS every PERIOD_MS,
    PHASE_MS into each period of the wall clock. Timings are judged against stall_due() from the
    moment each request was sent: at least that (less timer granularity), less than that plus
    SLACK (a request that waited a whole extra period, or none, is outside either bound)."""

    PAUSE, PERIOD = 1.5, 4.0

    def at_phase(self, x):
        """Sleeps until the wall clock is x seconds into a period (the next such moment at least
        0.3 s away, so every thread is ready in time); returns that time."""
        now = time.time()
        t = now // self.PERIOD * self.PERIOD + x
        while t < now + 0.3:
            t += self.PERIOD
        return t

    def test_stall_halts_work_and_every_answer(self):
        work = 0.3
        with upstream("--profile", "pause:300:300:1500:4000:0", "--seed", "1") as srv:
            self.assertEqual(srv.get_json("/stats")["pause_phase_ms"], 0)
            base = self.at_phase(3.8)  # 0.2 s before a stall
            # (seconds after base, method, path): work begun before the stall, work arriving
            # during it, work after it, and other endpoints arriving during it.
            plan = [(0.0, "GET", "/api/work"), (0.3, "GET", "/api/work"),
                    (1.9, "GET", "/api/work"), (0.4, "GET", "/stats"),
                    (0.5, "GET", "/api/metadata?id=A"), (0.6, "POST", "/reset"),
                    (0.7, "GET", "/nowhere")]

            def one(item):
                delay, method, path = item
                time.sleep(max(0.0, base + delay - time.time()))
                sent = time.time()
                return sent, srv.request(method, path)

            results = parallel(one, plan, workers=len(plan))
            for (delay, method, path), (sent, r) in zip(plan, results):
                w = work if path == "/api/work" else 0.0
                due = stall_due(sent, w, self.PAUSE, self.PERIOD, 0.0)
                self.assertGreaterEqual(r.elapsed, due - sent - EARLY, (path, delay, sent, r))
                self.assertLess(r.elapsed, due - sent + SLACK, (path, delay, sent, r))
                if path == "/api/work":
                    self.assertEqual(r.status, 200, r)
                    self.assertEqual(work_time(r), 300)  # the work, not the wall time
            stalled = [r.elapsed for (d, _, p), (_, r) in zip(plan, results) if d < 1]
            # The work begun 0.2 s before the stall halted through it: 0.2 + 1.5 + 0.1 s.
            self.assertGreaterEqual(stalled[0], 1.8 - EARLY)
            # Work after the stall took its 0.3 s only.
            self.assertLess(results[2][1].elapsed, work + SLACK)
            self.assertEqual([r.status for _, r in results[3:]], [200, 200, 200, 404])

    def test_parked_requests_abort_and_drain(self):
        """A client that leaves while its request waits for a stall's end costs nothing; on
        SIGTERM a waiting request is still answered, when the stall ends, and the simulator
        exits 0 (under the sanitizers, with nothing leaked)."""
        with upstream("--profile", "pause:0:0:1500:4000:0", "--seed", "1") as srv:
            base = self.at_phase(0.1)
            time.sleep(max(0.0, base - time.time()))
            sent = time.time()
            with th.connect(srv.port, timeout=10 * th.SLOW) as gone, \
                    th.connect(srv.port, timeout=10 * th.SLOW) as kept:
                send_get(gone, "/stats")
                send_get(kept, "/stats")
                time.sleep(0.2)
                gone.close()
                srv.proc.send_signal(signal.SIGTERM)
                st, _, body = th.read_response(kept)
                elapsed = time.time() - sent
            self.assertEqual(st, 200)
            self.assertIn("work_requests", json.loads(body))
            due = stall_due(sent, 0.0, self.PAUSE, self.PERIOD, 0.0)
            self.assertGreaterEqual(elapsed, due - sent - EARLY)
            self.assertLess(elapsed, due - sent + SLACK)
            srv.proc.wait(10 * th.SLOW)  # exits by itself once drained
            srv.stop()  # exit status 0

    def test_phase_given_or_drawn_from_the_seed(self):
        def phase(*args):
            with upstream(*args) as srv:
                return srv.get_json("/stats")["pause_phase_ms"]
        drawn = [phase("--profile", "pause:1:2:100:1000", "--seed", str(k)) for k in (7, 7, 8)]
        self.assertEqual(drawn[0], drawn[1])
        self.assertNotEqual(drawn[0], drawn[2])
        for d in drawn:
            self.assertTrue(0 <= d < 1000, d)
        with upstream("--profile", "fixed:0", "--seed", "1") as srv:
            self.assertNotIn("pause_phase_ms", srv.get_json("/stats"))
            r = srv.post_json("/profile", {"profile": "pause:1:2:100:1000:999"})
            self.assertEqual(r.status, 200, r)
            s = srv.get_json("/stats")
            self.assertEqual((s["profile"], s["pause_phase_ms"]), ("pause:1:2:100:1000:999", 999))
            for bad in ("pause:1:2:100", "pause:1:2:1000:1000", "pause:1:2:100:1000:1000",
                        "pause:2:1:100:1000", "pause:1:2:100:1000:0:0", "pause:1:2:100:0",
                        "pause:1:2:x:1000", "pause:1:2:100:1000:"):
                r = srv.post_json("/profile", {"profile": bad})
                self.assertEqual(r.status, 400, (bad, r))
                self.assertTrue(r.json()["message"].startswith('invalid profile "pause:'), r)
            self.assertEqual(srv.get_json("/stats")["profile"], "pause:1:2:100:1000:999")


def self_times(srv, n):
    return [work_time(srv.request("GET", "/api/work")) for _ in range(n)]


def run_tailcut(*args):
    p = subprocess.run([th.Proc.bin()] + list(args), stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=20 * th.SLOW)
    return p.returncode, p.stdout, p.stderr


class Cli(unittest.TestCase):
    def test_bad_flags_exit_2(self):
        cases = [
            (["--profile", "nope"], "--profile"),
            (["--profile", "fixed"], "--profile"),
            (["--profile", "fixed:-1"], "--profile"),
            (["--profile", "fixed:abc"], "--profile"),
            (["--profile", "fixed:10ms"], "--profile"),
            (["--profile", "fixed:3600001"], "--profile"),
            (["--profile", "uniform:5:1"], "--profile"),
            (["--profile", "uniform:1:2:3"], "--profile"),
            (["--profile", "lognormal:100"], "--profile"),
            (["--profile", "lognormal:100:-1"], "--profile"),
            (["--profile", "straggler:1:2:1.5"], "--profile"),
            (["--profile", "straggler:1:2:.5"], "--profile"),
            (["--profile", "exponea:1"], "--profile"),
            (["--profile", "mix:10:30:1000:2000"], "--profile"),
            (["--profile", "mix:30:10:1000:2000:0.01"], "--profile"),
            (["--profile", "mix:10:30:1000:2000:2"], "--profile"),
            (["--profile", "mix:10:30:1000:2000:0.01:1"], "--profile"),
            (["--profile", "pause:10:30:200"], "--profile"),
            (["--profile", "pause:30:10:200:2000"], "--profile"),
            (["--profile", "pause:10:30:2000:2000"], "--profile"),
            (["--profile", "pause:10:30:200:2000:2000"], "--profile"),
            (["--profile", "pause:10:30:200:2000:0:1"], "--profile"),
            (["--seed", "-1"], "--seed"),
            (["--seed", "abc"], "--seed"),
            (["--seed", "18446744073709551616"], "--seed"),
            (["--metadata-rate", "1.5"], "--metadata-rate"),
            (["--drain-timeout", "10ms"], "--drain-timeout"),
            (["--listen", "nope"], "--listen"),
            (["--listen", "127.0.0.1:70000"], "--listen"),
            (["--access-log", ""], "--access-log"),
            (["--access-log", "/nonexistent-dir/x.log"], "--access-log"),
            (["--access-log-format", "xml"], "--access-log-format"),
            (["--bogus"], "--bogus"),
            (["--profile"], "--profile"),
            (["extra"], "extra"),
            (["--help=yes"], "--help"),
        ]
        for args, named in cases:
            status, out, err = run_tailcut("upstream", *args)
            self.assertEqual(status, 2, (args, err))
            lines = err.strip().split("\n")
            self.assertEqual(len(lines), 1, (args, err))
            self.assertIn(named, lines[0], args)
            self.assertEqual(out, "", args)

    def test_help_and_good_profiles(self):
        status, out, err = run_tailcut("upstream", "--help")
        self.assertEqual(status, 0)
        self.assertIn("--profile", out)
        self.assertIn("--metadata-rate", out)
        self.assertIn("pause:LO:HI:PAUSE_MS:PERIOD_MS[:PHASE_MS]", out)
        status, out, err = run_tailcut("--help")
        self.assertIn("upstream", out)
        for p in ("exponea", "fixed:0", "uniform:0:0", "lognormal:12.5:0", "straggler:1:2:0",
                  "straggler:1:2:1.0", "mix:10:30:1000:2000:0.01", "pause:10:30:200:2000",
                  "pause:10:30:200:2000:1333"):
            with upstream("--profile=" + p, "--seed=1") as srv:
                self.assertEqual(srv.get_json("/stats")["profile"], p)

    def test_access_log(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "access.log")
            with upstream("--profile", "fixed:0", "--access-log", path) as srv:
                srv.request("GET", "/api/work")
            with open(path) as f:
                self.assertRegex(f.read(), re.compile(r'"GET /api/work HTTP/1.1" 200 ', re.M))
            srv = upstream("--profile", "fixed:0", "--access-log", "off")
            srv.request("GET", "/api/work")
            self.assertEqual(srv.stop(), b"")
            srv = upstream("--profile", "fixed:0")
            srv.request("GET", "/api/work")
            self.assertIn(b'"GET /api/work HTTP/1.1" 200', srv.stop())


if __name__ == "__main__":
    watchdog = th.Watchdog(240 * th.SLOW)
    unittest.main(verbosity=2)

#!/usr/bin/env python3
"""Fault injection against `tailcut serve` (issue 8, hardening): a misbehaving upstream and
misbehaving clients.

Upstream side. What `tailcut upstream` cannot do is done by FaultUpstream, a small threaded HTTP
peer written here on raw sockets: it reads each request head and then follows the next step of
a plan (reset in the middle of the body, answer non-HTTP bytes, a body over --max-body declared
by Content-Length or streamed in chunks, trickle one byte a second). Every step is one
connection (answers say `Connection: close`), so no attempt ever rides a reused connection and
the plan is consumed exactly once per attempt. A closed port stands for a refusing upstream; the
simulator's delayed steps stand for an upstream answering after the deadline.

Client side, against serve in front of the simulator: garbage bytes, trickled requests, a client
leaving in the middle of its request or while its answer is awaited or being written (FIN and
RST), and 100 pipelined requests followed by an immediate close.

Every case asserts the contract's answer (docs/serve.md: 502 with "attempts",
504, 400, 408, or a close), and then that nothing was left behind: serve still answers /healthz,
its tailcut_requests_in_flight gauge is back to 0, and the upstream holds nothing (the
simulator's /stats in_flight, or FaultUpstream's count of open connections). Each class ends by
stopping serve with SIGTERM and insisting on exit status 0 (under TC_SANITIZE=ON a leak or an
ASan report makes it non-zero). serve runs with --workers 1 so that counts are exact.
"""
import collections
import json
import os
import random
import select
import socket
import struct
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import tchelpers as th  # noqa: E402
from smart_fixture import HANG, Metrics, Upstream, request, step, wrapped  # noqa: E402

MAX_BODY = 4096
HEADER_TIMEOUT_MS = 1500
# Bound for "soon": a cancellation reaching the upstream, a gauge returning to 0.
SOON = 2.0 * th.SLOW
# How long a fault upstream connection may live at most (a trickle of 16 bytes is 16 s).
PEER_LIFETIME = 20


def rst_close(s):
    """Closes s with a TCP RST instead of a FIN."""
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def peer_closed_within(s, seconds):
    """Waits up to seconds for s to become readable; True if the peer closed (EOF or reset)."""
    r, _, _ = select.select([s], [], [], seconds)
    if not r:
        return False
    try:
        return s.recv(65536, socket.MSG_PEEK) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True


class FaultUpstream:
    """A threaded HTTP/1.1 peer on 127.0.0.1:0 that answers each request per the next step of a
    plan (default: 200 {"ok":true}). It records, per connection, the step and how it ended:
    "done" (the step ran to its end), "peer_closed" (serve closed or reset the connection
    first), "timeout" (a send blocked past PEER_LIFETIME) or "no_request"."""

    def __init__(self):
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(256)
        self.port = self.lsock.getsockname()[1]
        self.lock = threading.Lock()
        self.queue = collections.deque()
        self.open = 0
        self.log = []  # [step, ending, bytes_sent, t_arrival, t_end]
        self.stopping = False
        self.threads = []
        self.acceptor = threading.Thread(target=self._accept, daemon=True)
        self.acceptor.start()

    @property
    def url(self):
        return "http://127.0.0.1:%d/api/work" % self.port

    def plan(self, steps):
        with self.lock:
            self.queue.clear()
            self.queue.extend(steps)
            self.log = []

    def pending(self):
        with self.lock:
            return len(self.queue)

    def snapshot(self):
        with self.lock:
            return self.open, [list(e) for e in self.log]

    def stop(self):
        self.stopping = True
        try:
            # Wake accept() up.
            socket.create_connection(("127.0.0.1", self.port), 1).close()
        except OSError:
            pass
        self.acceptor.join(5)
        self.lsock.close()
        for t in self.threads:
            t.join(PEER_LIFETIME)

    # ---- the server -------------------------------------------------------------------------

    def _accept(self):
        while not self.stopping:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            if self.stopping:
                c.close()
                return
            t = threading.Thread(target=self._serve, args=(c,), daemon=True)
            self.threads.append(t)
            t.start()

    def _serve(self, c):
        with self.lock:
            self.open += 1
        entry = [None, "no_request", 0, time.monotonic(), None]
        try:
            c.settimeout(PEER_LIFETIME)
            buf = b""
            while b"\r\n\r\n" not in buf:
                chunk = c.recv(65536)
                if not chunk:
                    return
                buf += chunk
            with self.lock:
                name = self.queue.popleft() if self.queue else "ok"
                entry[0] = name
                self.log.append(entry)
            entry[1] = getattr(self, "_step_" + name)(c, entry) or "done"
        except (ConnectionError, BrokenPipeError):
            entry[1] = "peer_closed"
        except socket.timeout:
            entry[1] = "timeout"
        finally:
            entry[4] = time.monotonic()
            try:
                c.close()
            except OSError:
                pass
            with self.lock:
                self.open -= 1

    @staticmethod
    def _send(c, entry, data):
        c.sendall(data)
        entry[2] += len(data)

    def _step_ok(self, c, entry):
        body = b'{"ok":true}'
        self._send(c, entry, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                   b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))

    def _step_reset_mid_body(self, c, entry):
        """Headers promising 200 bytes, 100 of them, then RST."""
        body = b'{"pad":"' + b"p" * 190 + b'"}'
        self._send(c, entry, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                   b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body[:100])
        time.sleep(0.05)  # let the half body arrive before the reset
        rst_close(c)
        return "done"

    def _step_garbage(self, c, entry):
        """Bytes that are not HTTP at all, then FIN."""
        rnd = random.Random(8)
        self._send(c, entry, b"\x00\x16\x03\x01 not http at all \xff\xfe\r\n\r\n" +
                   bytes(rnd.randrange(256) for _ in range(300)))
        c.shutdown(socket.SHUT_WR)

    def _step_bad_status_line(self, c, entry):
        """Starts like HTTP, then nonsense for a status line."""
        self._send(c, entry, b"HTTP/1.1 abc\x01 Whatever\r\nContent-Length: 2\r\n\r\n{}")
        c.shutdown(socket.SHUT_WR)

    def _step_big_content_length(self, c, entry):
        """A valid JSON body four times --max-body, announced by Content-Length."""
        body = b'"' + b"L" * (4 * MAX_BODY - 2) + b'"'
        self._send(c, entry, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                   b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body))
        self._send(c, entry, body)

    def _step_big_chunked(self, c, entry):
        """A chunked body that never ends on its own: 1 KiB chunks, up to 64 MiB."""
        self._send(c, entry, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                   b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        self._send(c, entry, b"1\r\n[\r\n")
        chunk = b"400\r\n" + (b'"' + b"c" * 1021 + b'",') + b"\r\n"  # 0x400 bytes of data
        for _ in range(64 * 1024):
            self._send(c, entry, chunk)
        self._send(c, entry, b"2\r\n0]\r\n0\r\n\r\n")

    def _step_trickle(self, c, entry):
        """A 16-byte JSON body, one byte a second; stops as soon as serve closes."""
        body = b'{"t":"trickled"}'
        self._send(c, entry, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                   b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body))
        for i in range(len(body)):
            if peer_closed_within(c, 1.0):
                return "peer_closed"
            self._send(c, entry, body[i:i + 1])


def serve(upstream_url, metadata_url, *args):
    return th.Proc("serve", "--workers", "1", "--upstream", upstream_url,
                   "--metadata-upstream", metadata_url, "--access-log", "off",
                   "--max-body", str(MAX_BODY), *args)


def closed_port():
    """A loopback port with nothing listening (bound, never listened on, then released)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class FaultCase(th.ErrorAsserts, unittest.TestCase):
    """Assertions shared by the fault classes."""

    srv = None

    def get(self, path, timeout=15 * th.SLOW):
        return request(self.srv.port, "GET", path, timeout)

    def assert_api(self, r, status, attempts):
        self.assertEqual(r.status, status, r)
        self.assertEqual(r.headers.get("content-type"), "application/json", r)
        self.assertEqual(r.headers.get("x-tailcut-attempts"), str(attempts), r)

    def assert_serve_clean(self):
        """serve still answers /healthz and holds no request in flight (polled, bounded)."""
        r = self.get("/healthz", 10 * th.SLOW)
        self.assertEqual((r.status, r.body), (200, b'{"status":"ok"}'), r)
        last = {}

        def idle():
            last["m"] = Metrics(self.srv.port)
            return last["m"].get("tailcut_requests_in_flight") == 0

        th.wait_for(idle, SOON, 0.05)
        self.assertEqual(last["m"].get("tailcut_requests_in_flight"), 0,
                         "serve still has requests in flight")


class UpstreamFaults(FaultCase):
    """serve --workers 1 --max-body 4096 in front of a FaultUpstream."""

    @classmethod
    def setUpClass(cls):
        cls.fu = FaultUpstream()
        meta = "http://127.0.0.1:%d/api/metadata" % cls.fu.port
        cls.srv = th.start_in_front(cls.fu.stop, lambda: serve(cls.fu.url, meta))

    @classmethod
    def tearDownClass(cls):
        th.stop_in_front(cls.srv, cls.fu.stop)

    def run_plan(self, steps, path):
        """Queues steps, sends path, and checks that exactly len(steps) attempts took them."""
        self.fu.plan(steps)
        r = self.get(path)
        self.assertEqual(self.fu.pending(), 0, "fewer attempts than planned: %r" % r)
        return r

    def assert_upstream_clean(self, attempts, endings=None):
        """Every connection to the fault upstream is closed (polled); exactly `attempts` arrived;
        with endings, each ended that way (a set of allowed endings)."""
        th.wait_for(lambda: self.fu.snapshot()[0] == 0, SOON)
        opened, log = self.fu.snapshot()
        self.assertEqual(opened, 0, "fault upstream connections still open: %r" % log)
        self.assertEqual(len(log), attempts, log)
        if endings is not None:
            for e in log:
                self.assertIn(e[1], endings, log)
        return log

    def check_all_endpoints_fail(self, name, outcome):
        """smart, first and all answer 502 with 3 attempts; within-timeout answers []; every
        attempt is counted with this outcome."""
        before = Metrics(self.srv.port)
        for ep in ("smart", "first", "all"):
            with self.subTest(ep=ep):
                r = self.run_plan([name] * 3, "/api/%s?timeout=5000" % ep)
                self.assert_upstream_failed(r, 3)
                self.assert_upstream_clean(3)
        r = self.run_plan([name] * 3, "/api/within-timeout?timeout=5000")
        self.assert_api(r, 200, 3)
        self.assertEqual(r.body, b"[]")
        self.assertLess(r.elapsed, 4.0)  # all failed: no need to wait for the deadline
        self.assert_upstream_clean(3)
        after = Metrics(self.srv.port)
        self.assertEqual(after.delta(before, "tailcut_upstream_attempts_total",
                                     outcome=outcome), 12)
        self.assertEqual(after.delta(before, "tailcut_upstream_attempts_total",
                                     outcome="success"), 0)
        for ep in ("smart", "first", "all"):
            self.assertEqual(after.delta(before, "tailcut_requests_total", endpoint=ep,
                                         status="502"), 1, ep)
        self.assert_serve_clean()

    def test_healthy_fault_upstream_is_a_success(self):
        # The harness itself: its default answer is a success through serve.
        r = self.run_plan(["ok"], "/api/smart?timeout=5000")
        self.assert_api(r, 200, 1)
        self.assertEqual(r.body, wrapped('{"ok":true}'))
        self.assert_upstream_clean(1, {"done"})
        self.assert_serve_clean()

    def test_reset_mid_body(self):
        self.check_all_endpoints_fail("reset_mid_body", "reset")

    def test_garbage_instead_of_http(self):
        self.check_all_endpoints_fail("garbage", "other")

    def test_bad_status_line(self):
        self.check_all_endpoints_fail("bad_status_line", "other")

    def test_body_over_max_body_by_content_length(self):
        self.check_all_endpoints_fail("big_content_length", "too_large")

    def test_body_over_max_body_chunked(self):
        self.check_all_endpoints_fail("big_chunked", "too_large")
        # serve cut each endless body off: the upstream saw its connection closed long before
        # its 64 MiB were out, never a body delivered in full.
        self.fu.plan(["big_chunked"] * 3)
        r = self.get("/api/first?timeout=5000")
        self.assert_upstream_failed(r, 3)
        log = self.assert_upstream_clean(3, {"peer_closed"})
        for e in log:
            self.assertLess(e[2], 32 * 1024 * 1024, log)

    def test_trickling_upstream_hits_the_deadline(self):
        # One byte a second: no attempt can finish, so the deadline decides (504), and every
        # trickling connection is closed by serve at once, not left to trickle on.
        cases = (("smart", 1200, 504), ("first", 800, 504), ("all", 800, 504),
                 ("within-timeout", 800, 200))
        for ep, timeout_ms, status in cases:
            with self.subTest(ep=ep):
                self.fu.plan(["trickle"] * 3)
                r = self.get("/api/%s?timeout=%d" % (ep, timeout_ms))
                self.assertEqual(self.fu.pending(), 0)
                if status == 504:
                    self.assert_error(r, 504, "timeout", 3)
                else:
                    self.assert_api(r, 200, 3)
                    self.assertEqual(r.body, b"[]")
                self.assertGreaterEqual(r.elapsed, timeout_ms / 1000.0 - 0.003)
                self.assertLess(r.elapsed, timeout_ms / 1000.0 + 1.0 * th.SLOW)
                t_answer = time.monotonic()
                log = self.assert_upstream_clean(3, {"peer_closed"})
                for e in log:
                    # closed right at the deadline, long before the 16 s the trickle takes
                    self.assertLess(e[4] - t_answer, SOON, log)
                    self.assertLess(e[2], 200, log)  # headers plus a few trickled bytes
        self.assert_serve_clean()

    def test_metadata_upstream_garbage_is_502(self):
        self.fu.plan(["garbage"])
        r = self.get("/api/metadata/abc?timeout=5000")
        self.assertEqual(self.fu.pending(), 0)
        self.assertEqual(r.status, 502, r)
        doc = r.json()
        self.assertEqual((doc["success"], doc["error"], doc["attempts"]),
                         (False, "upstream_failed", 1), r)
        self.assert_upstream_clean(1)
        self.fu.plan(["reset_mid_body"])
        self.assertEqual(self.get("/api/metadata/abc?timeout=5000").status, 502)
        self.assert_upstream_clean(1)
        self.assert_serve_clean()


class RefusedUpstream(FaultCase):
    """An upstream port where nothing listens: every attempt is refused at once."""

    def test_refused_upstream_is_502_with_attempts(self):
        port = closed_port()
        url = "http://127.0.0.1:%d" % port
        with serve(url + "/api/work", url + "/api/metadata") as srv:
            self.srv = srv
            before = Metrics(srv.port)
            for ep in ("smart", "first", "all"):
                with self.subTest(ep=ep):
                    r = self.get("/api/%s?timeout=5000" % ep)
                    self.assert_upstream_failed(r, 3)
                    # refused at once: smart's hedge fires on the failure, not after 300 ms
                    self.assertLess(r.elapsed, 0.3 if ep == "smart" and not th.SANITIZED
                                    else 2.0 * th.SLOW)
            r = self.get("/api/within-timeout?timeout=5000")
            self.assert_api(r, 200, 3)
            self.assertEqual(r.body, b"[]")
            r = self.get("/api/metadata/x1?timeout=5000")
            self.assertEqual((r.status, r.json()["error"]), (502, "upstream_failed"), r)
            after = Metrics(srv.port)
            self.assertEqual(after.delta(before, "tailcut_upstream_attempts_total",
                                         outcome="connect_error"), 12)
            self.assert_serve_clean()


class WithSimulator(FaultCase):
    """serve --workers 1 --header-timeout 1500 in front of `tailcut upstream --profile fixed:5`:
    an upstream answering after the deadline, and misbehaving clients."""

    @classmethod
    def setUpClass(cls):
        cls.up = Upstream("--profile", "fixed:5")
        base = "http://127.0.0.1:%d" % cls.up.port
        cls.srv = th.start_in_front(cls.up.kill, lambda: serve(
            base + "/api/work", base + "/api/metadata", "--header-timeout",
            str(HEADER_TIMEOUT_MS), "--max-body", str(1 << 20)))
        assert request(cls.srv.port, "GET", "/api/smart?timeout=5000").status == 200

    @classmethod
    def tearDownClass(cls):
        th.stop_in_front(cls.srv, lambda: cls.up.stop(expect=0))

    def setUp(self):
        self.up.reset()

    def settled(self, work_requests, client_aborts):
        want = (work_requests, client_aborts, 0)
        s = self.up.stats_when(
            lambda s: (s["work_requests"], s["client_aborts"], s["in_flight"]) == want, SOON)
        self.assertEqual((s["work_requests"], s["client_aborts"], s["in_flight"]), want, s)
        return s

    def all_cancelled(self, least):
        """The upstream saw least to 3 attempts and every one of them was aborted."""
        s = self.up.stats_when(
            lambda s: s["in_flight"] == 0 and s["client_aborts"] == s["work_requests"] >= least,
            SOON)
        self.assertEqual(s["in_flight"], 0, s)
        self.assertEqual(s["client_aborts"], s["work_requests"], s)
        self.assertIn(s["work_requests"], range(least, 4), s)
        return s

    def upstream_idle(self):
        """The simulator holds nothing; returns its stats."""
        s = self.up.stats_when(lambda s: s["in_flight"] == 0, SOON)
        self.assertEqual(s["in_flight"], 0, s)
        return s

    def assert_closed(self, s, timeout=5 * th.SLOW):
        """The server closes s (FIN or RST) within timeout; returns what it sent."""
        try:
            return th.recv_all(s, timeout)
        except TimeoutError:
            self.fail("serve kept the connection open")

    # ---- the upstream answers after the deadline -----------------------------------------

    def test_upstream_answers_after_deadline(self):
        for ep, n in (("smart", 3), ("first", 3), ("all", 3)):
            with self.subTest(ep=ep):
                self.up.reset()
                self.up.scenario([step(1500, '{"late":%d}' % i) for i in range(3)])
                r = self.get("/api/%s?timeout=400" % ep)
                self.assert_error(r, 504, "timeout", n)
                self.assertGreaterEqual(r.elapsed, 0.400 - 0.003)
                self.assertLess(r.elapsed, 0.400 + SOON)
                # Every attempt that reached the upstream was cancelled at the deadline. smart's
                # two hedges fire at 300 ms: on a loaded machine they may be cancelled before
                # their connection reached the upstream at all.
                self.all_cancelled(1 if ep == "smart" else 3)
        self.up.reset()
        self.up.scenario([step(1500, "{}")] * 3)
        r = self.get("/api/within-timeout?timeout=400")
        self.assert_api(r, 200, 3)
        self.assertEqual(r.body, b"[]")
        self.settled(3, 3)
        # Past the late answers' time: nothing arrives for the dead requests, serve is fine.
        time.sleep(1.2)
        self.settled(3, 3)
        self.assert_serve_clean()

    # ---- garbage from the client ---------------------------------------------------------

    GARBAGE = (
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(32)) * 4,  # TLS hello
        b"\x00" * 64,
        bytes(random.Random(11).randrange(256) for _ in range(512)),
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHo\x00st: x\r\n\r\n",
        b"POST /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"GET /healthz HTTP/7.x\r\n\r\n",
        b"GET\x7f/healthz HTTP/1.1\r\n\r\n",
    )

    def test_client_garbage_is_400_and_close(self):
        for raw in self.GARBAGE:
            with self.subTest(raw=raw[:24]):
                with th.connect(self.srv.port, 10 * th.SLOW) as s:
                    s.sendall(raw)
                    st, hdrs, body = th.read_response(s)
                    self.assertEqual(st, 400, body)
                    doc = json.loads(body)
                    self.assertEqual((doc["success"], doc["error"]), (False, "bad_request"))
                    self.assertEqual(hdrs.get("connection"), "close")
                    self.assertEqual(self.assert_closed(s), b"")
        self.assertEqual(self.upstream_idle()["work_requests"], 0)
        self.assert_serve_clean()

    # ---- trickled requests ---------------------------------------------------------------

    def test_request_trickled_byte_by_byte_is_answered(self):
        raw = b"GET /api/smart?timeout=5000 HTTP/1.1\r\nHost: test\r\nX-A: b\r\n\r\n"
        with th.connect(self.srv.port, 10 * th.SLOW) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for i in range(len(raw)):
                s.sendall(raw[i:i + 1])
                time.sleep(0.01)
            st, hdrs, body = th.read_response(s)
        self.assertEqual(st, 200, body)
        self.assertEqual(body, wrapped('{"time": 5}'))
        self.settled(1, 0)
        self.assert_serve_clean()

    def _trickle_until_answer(self, head, pace):
        """Sends head one byte per pace seconds until serve answers; returns (status, body,
        seconds from the first byte)."""
        with th.connect(self.srv.port, 10 * th.SLOW) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            t0 = time.monotonic()
            for i in range(int(10 * th.SLOW / pace)):
                try:
                    s.sendall(head[i % len(head):i % len(head) + 1])
                except (BrokenPipeError, ConnectionResetError):
                    break
                r, _, _ = select.select([s], [], [], pace)
                if r:
                    break
            st, hdrs, body = th.read_response(s)
            waited = time.monotonic() - t0
            self.assertEqual(self.assert_closed(s), b"")
        return st, hdrs, body, waited

    def test_trickled_headers_past_header_timeout_get_408(self):
        # An endless header block, 5 bytes a second: cut off at --header-timeout.
        st, hdrs, body, waited = self._trickle_until_answer(
            b"GET /healthz HTTP/1.1\r\nX-Slow: " + b"z" * 4096, 0.2)
        self.assertEqual(st, 408, body)
        self.assertEqual(json.loads(body)["error"], "timeout")
        self.assertEqual(hdrs.get("connection"), "close")
        self.assertGreaterEqual(waited, HEADER_TIMEOUT_MS / 1000.0 - 0.01)
        self.assertLess(waited, HEADER_TIMEOUT_MS / 1000.0 + 1.0 * th.SLOW)
        self.assert_serve_clean()

    def test_trickled_body_past_header_timeout_gets_408(self):
        # docs/serve.md: the arrival deadline covers the body too.
        with th.connect(self.srv.port, 10 * th.SLOW) as s:
            t0 = time.monotonic()
            s.sendall(b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
            for _ in range(int(10 * th.SLOW / 0.2)):
                try:
                    s.sendall(b"b")
                except (BrokenPipeError, ConnectionResetError):
                    break
                if select.select([s], [], [], 0.2)[0]:
                    break
            st, hdrs, body = th.read_response(s)
            waited = time.monotonic() - t0
            self.assertEqual(self.assert_closed(s), b"")
        self.assertEqual(st, 408, body)
        self.assertGreaterEqual(waited, HEADER_TIMEOUT_MS / 1000.0 - 0.01)
        self.assertLess(waited, HEADER_TIMEOUT_MS / 1000.0 + 1.0 * th.SLOW)
        self.assert_serve_clean()

    # ---- the client leaves in the middle of its request ----------------------------------

    def test_disconnect_mid_request(self):
        before = Metrics(self.srv.port)
        partials = (b"GET /api/sma", b"GET /api/smart?timeout=5000 HTTP/1.1\r\nHost: te",
                    b"POST /healthz HTTP/1.1\r\nContent-Length: 100\r\n\r\nhalf a body")
        for raw in partials:
            for how in ("fin", "rst"):
                with self.subTest(raw=raw[:20], how=how):
                    s = th.connect(self.srv.port, 10 * th.SLOW)
                    s.sendall(raw)
                    time.sleep(0.05)
                    if how == "rst":
                        rst_close(s)
                    else:
                        s.close()
        time.sleep(0.2)
        self.assert_serve_clean()
        after = Metrics(self.srv.port)
        # Nothing was a request: the only requests counted are this test's /healthz and
        # /metrics (the "after" one counts itself; "before" counted itself already).
        total = sum(v for (name, _), v in after.values.items() if name == "tailcut_requests_total")
        total -= sum(v for (name, _), v in before.values.items()
                     if name == "tailcut_requests_total")
        healthz = after.delta(before, "tailcut_requests_total", endpoint="healthz", status="200")
        metrics = after.delta(before, "tailcut_requests_total", endpoint="metrics", status="200")
        self.assertEqual(healthz, 1)
        self.assertEqual(total, healthz + metrics)
        self.assertEqual(self.upstream_idle()["work_requests"], 0)

    # ---- the client leaves while its answer is awaited or being written --------------------

    def _leave_while_waiting(self, path, n, how):
        """Sends path (the upstream answers in 5 s), waits until n attempts are held, then
        leaves with a FIN or an RST."""
        self.up.scenario([step(5000, "{}")] * 3)
        s = th.connect(self.srv.port, 10 * th.SLOW)
        s.sendall(b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % path.encode())
        st = self.up.stats_when(lambda st: st["in_flight"] == n, SOON)
        self.assertEqual(st["in_flight"], n, st)
        if how == "rst":
            rst_close(s)
        else:
            s.close()

    def test_disconnect_while_waiting_for_slow_upstream(self):
        for how in ("fin", "rst"):
            for hedged in (False, True):
                with self.subTest(how=how, hedged=hedged):
                    self.up.reset()
                    before = Metrics(self.srv.port)
                    n = 3 if hedged else 1
                    self._leave_while_waiting("/api/smart?timeout=20000", n, how)
                    self.settled(n, n)
                    if not hedged:  # the hedge died with the request
                        time.sleep(0.4)
                        self.settled(1, 1)
                    self.assert_serve_clean()
                    after = Metrics(self.srv.port)
                    self.assertEqual(after.delta(before, "tailcut_requests_total",
                                                 endpoint="smart", status="499"), 1)
                    self.assertEqual(after.delta(before, "tailcut_requests_total",
                                                 endpoint="smart", status="200"), 0)

    # When a client leaves, its request counts as 499 and its attempts still count, as
    # outcome "cancelled" (the hedge's observer sees the result however the hedge ends).
    def test_attempts_of_a_departed_client_are_counted(self):
        before = Metrics(self.srv.port)
        self._leave_while_waiting("/api/smart?timeout=20000", 3, "rst")
        self.settled(3, 3)
        self.assert_serve_clean()
        after = Metrics(self.srv.port)
        self.assertEqual(after.delta(before, "tailcut_hedges_fired_total"), 1)
        self.assertEqual(after.delta(before, "tailcut_upstream_attempts_total",
                                     outcome="cancelled"), 3)

    def test_disconnect_during_second_request_on_kept_alive_connection(self):
        with th.connect(self.srv.port, 10 * th.SLOW) as s:
            s.sendall(b"GET /api/first?timeout=5000 HTTP/1.1\r\nHost: t\r\n\r\n")
            self.assertEqual(th.read_response(s)[0], 200)
            self.upstream_idle()
            self.up.reset()
            self.up.scenario([HANG, HANG, HANG])
            s.sendall(b"GET /api/all?timeout=20000 HTTP/1.1\r\nHost: t\r\n\r\n")
            st = self.up.stats_when(lambda st: st["in_flight"] == 3, SOON)
            self.assertEqual(st["in_flight"], 3, st)
            rst_close(s)
        self.settled(3, 3)
        self.assert_serve_clean()

    def test_disconnect_while_answer_is_being_written(self):
        # A large answer to a client that reads nothing and then resets: serve's write fails
        # part way; the connection and the request must be freed, nothing else disturbed.
        big = '"' + "w" * (900 * 1024) + '"'
        for how in ("rst", "fin"):
            with self.subTest(how=how):
                self.up.reset()
                self.up.scenario([step(0, big)])
                s = socket.socket()
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                s.settimeout(10 * th.SLOW)
                s.connect(("127.0.0.1", self.srv.port))
                s.sendall(b"GET /api/smart?timeout=5000 HTTP/1.1\r\nHost: t\r\n\r\n")
                # Wait until the answer has started to arrive, then leave.
                self.assertTrue(select.select([s], [], [], 10 * th.SLOW)[0])
                self.settled(1, 0)
                if how == "rst":
                    rst_close(s)
                else:
                    s.close()
                self.assert_serve_clean()

    # ---- 100 pipelined requests, then an immediate close ---------------------------------

    def _pipeline_and_close(self, path, how):
        s = th.connect(self.srv.port, 10 * th.SLOW)
        s.sendall(b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % path.encode() * 100)
        if how == "rst":
            rst_close(s)
        else:
            s.close()

    def test_pipelined_healthz_then_close(self):
        for how in ("fin", "rst"):
            with self.subTest(how=how):
                self._pipeline_and_close("/healthz", how)
                self.assert_serve_clean()

    def test_pipelined_fast_api_then_close(self):
        # The upstream answers in 5 ms: answers are written to a closed socket.
        for how in ("fin", "rst"):
            with self.subTest(how=how):
                self.up.reset()
                self._pipeline_and_close("/api/smart?timeout=5000", how)
                time.sleep(0.5)
                self.assert_serve_clean()
                self.upstream_idle()

    SLOW_STEP_MS = 2500

    def test_pipelined_slow_api_then_close_leaves_nothing(self):
        # The upstream answers in 2.5 s: serve has read ahead up to 32 requests (docs/serve.md)
        # and fired their attempts when the client goes. Whenever serve notices, everything
        # must end: nothing held upstream, nothing in flight, nothing started afterwards.
        for how in ("fin", "rst"):
            with self.subTest(how=how):
                self.up.reset()
                self.up.scenario([step(self.SLOW_STEP_MS, "{}")] * 400)
                self._pipeline_and_close("/api/smart?timeout=20000", how)
                # Attempts may or may not have reached the upstream before the close was
                # noticed; either way none may stay held.
                time.sleep(0.2)
                st = self.up.stats_when(lambda st: st["in_flight"] == 0,
                                        self.SLOW_STEP_MS / 1000.0 + SOON)
                self.assertEqual(st["in_flight"], 0, st)
                self.assert_serve_clean()
                time.sleep(0.3)  # and nothing more starts afterwards
                self.assertEqual(self.up.stats()["work_requests"], st["work_requests"])

    # With the pipeline full (32 queued) the server keeps reading into a bounded holding
    # buffer, so a client that pipelines 100 slow requests and closes is noticed at once: every
    # attempt is cancelled and nothing new starts later.
    def test_pipelined_slow_api_then_close_cancels_at_once(self):
        self.up.reset()
        self.up.scenario([step(self.SLOW_STEP_MS, "{}")] * 400)
        t0 = time.monotonic()
        self._pipeline_and_close("/api/smart?timeout=20000", "rst")
        st = self.up.stats_when(lambda st: st["work_requests"] > 0 and st["in_flight"] == 0,
                                1.5)
        waited = time.monotonic() - t0
        # Let what is left finish before the next test (the scenario answers after 2.5 s).
        self.up.stats_when(lambda st: st["in_flight"] == 0, self.SLOW_STEP_MS / 1000.0 + SOON)
        self.assertEqual(st["in_flight"], 0, "attempts still held %.1fs after the client "
                         "left: %r" % (waited, {k: st[k] for k in ("work_requests",
                                                                   "in_flight",
                                                                   "client_aborts")}))
        self.assertEqual(st["client_aborts"], st["work_requests"], st)
        self.assertLessEqual(self.up.stats()["work_requests"], 32 * 3)


if __name__ == "__main__":
    watchdog = th.Watchdog(150 * th.SLOW)
    unittest.main(verbosity=2)

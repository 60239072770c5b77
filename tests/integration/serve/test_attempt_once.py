#!/usr/bin/env python3
"""An attempt is sent once (CONTRACT section 1, docs/hedge.md, issue 20): a keep-alive upstream
connection that `tailcut serve` reuses and that dies under an attempt is that attempt's failure,
on both client engines (`--http-engine native` and `curl`). Never a quiet re-send on a fresh
connection: that would be a request the policy never counted, numbered or reacted to.

The upstream is KeepAliveUpstream below, a threaded HTTP/1.1 peer that keeps connections alive
(`tailcut upstream` cannot tell which connection a request came on) and records every request it
reads: its connection, its place on that connection, its X-Tailcut-Attempt and when it arrived.
It answers each by the next action of a script, in arrival order; past the script it answers
200 with valid JSON, so a request sent once more than the policy fired would be a success and
change the answer.

Timing: lower bounds are the semantics (no extra attempt before the failure); the upper bound
is generous and still well below the 300 ms hedge delay it tells apart. Nothing asserts speed.
"""
import json
import os
import socket
import socketserver
import struct
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import tchelpers as th  # noqa: E402
from smart_fixture import Metrics, request, serve, wrapped  # noqa: E402

ENGINES = ("native", "curl")
DEFAULT_BODY = b'{"default":true}'
# An extra attempt fired by the failure reaches the upstream this soon after the reset; one
# fired by the 300 ms hedge delay would come about 250 ms after it.
AT_ONCE = 0.150


def ok(delay=0.0, body=DEFAULT_BODY, status=200):
    return ("answer", delay, status, body)


def reset(delay=0.0):
    return ("reset", delay)


class Arrival:
    def __init__(self, conn, nth, attempt, action):
        self.conn, self.nth, self.attempt, self.action = conn, nth, attempt, action
        self.at = time.monotonic()
        self.reset_at = None

    def __repr__(self):
        return "conn %d #%d attempt %s %s" % (self.conn, self.nth, self.attempt, self.action[0])


class KeepAliveUpstream(socketserver.ThreadingTCPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Connection)
        self.port = self.server_address[1]
        self.lock = threading.Lock()
        self.script = []
        self.arrivals = []
        self.conns = 0
        self.thread = th.serve_in_thread(self)

    def stop(self):
        th.stop_server(self, self.thread)

    def play(self, actions):
        """Answers the next arrivals by actions, in order; forgets the arrivals so far."""
        with self.lock:
            self.script = list(actions)
            self.arrivals = []

    def seen(self):
        with self.lock:
            return list(self.arrivals)

    def next_action(self, conn, nth, attempt):
        with self.lock:
            a = Arrival(conn, nth, attempt, self.script.pop(0) if self.script else ok())
            self.arrivals.append(a)
            return a


class _Connection(socketserver.BaseRequestHandler):
    def handle(self):
        up, s = self.server, self.request
        with up.lock:
            up.conns += 1
            conn = up.conns
        s.settimeout(30 * th.SLOW)
        buf, nth = b"", 0
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    chunk = s.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                head, _, buf = buf.partition(b"\r\n\r\n")  # GETs: no body
                nth += 1
                a = up.next_action(conn, nth, attempt_of(head))
                time.sleep(a.action[1])
                if a.action[0] == "reset":
                    a.reset_at = time.monotonic()
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    s.close()
                    return
                _, _, status, body = a.action
                s.sendall(b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\n"
                          b"Content-Length: %d\r\n\r\n%s" % (status, len(body), body))
        except OSError:
            return  # serve cancelled the attempt (its connection was reset)


def attempt_of(head):
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"x-tailcut-attempt":
            return value.strip().decode()
    return None


class AttemptSentOnce(th.ErrorAsserts, unittest.TestCase):
    def setUp(self):
        self.watchdog = th.Watchdog(300 * th.SLOW)
        self.up = KeepAliveUpstream()

    def tearDown(self):
        self.up.stop()
        self.watchdog.cancel()

    def assert_api(self, r, status, attempts):
        self.assertEqual(r.status, status, r)
        self.assertEqual(r.headers.get("x-tailcut-attempts"), str(attempts), r)

    def test_reset_on_reused_connection_fires_the_extras_at_once(self):
        for engine in ENGINES:
            with self.subTest(engine=engine), serve(self.up.port, "--http-engine", engine) as srv:
                # One success leaves one idle keep-alive connection in the pool.
                self.up.play([])
                self.assert_api(request(srv.port, "GET", "/api/smart?timeout=5000"), 200, 1)
                warm = self.up.seen()
                self.assertEqual(len(warm), 1, warm)
                before = Metrics(srv.port)
                # The first attempt goes on that connection, which is reset 50 ms later. Both
                # extras answer after 100 ms, so both are surely in flight when one wins.
                self.up.play([reset(0.050), ok(0.100, b'{"h":"a"}'), ok(0.100, b'{"h":"b"}')])
                r = request(srv.port, "GET", "/api/smart?timeout=5000")
                self.assert_api(r, 200, 3)
                self.assertIn(r.body, (wrapped('{"h":"a"}'), wrapped('{"h":"b"}')), r)
                time.sleep(0.2)  # anything sent once more would have arrived by now
                seen = self.up.seen()
                self.assertEqual(len(seen), 3, seen)
                first = seen[0]
                self.assertEqual((first.conn, first.nth, first.attempt, first.action[0]),
                                 (warm[0].conn, 2, "1", "reset"), seen)
                self.assertEqual(sorted(a.attempt for a in seen), ["1", "2", "3"], seen)
                for a in seen[1:]:
                    self.assertGreaterEqual(a.at, first.reset_at, seen)  # fired by the failure
                    self.assertLess(a.at - first.reset_at, AT_ONCE, seen)
                after = Metrics(srv.port)
                self.assertEqual(after.delta(before, "tailcut_upstream_attempts_total",
                                             outcome="reset"), 1)
                self.assertEqual(after.delta(before, "tailcut_upstream_stale_retries_total"), 0)

    def test_all_with_500_reset_and_invalid_json_fails_every_time(self):
        # The 500 and the invalid JSON leave their connections alive, so from the second round
        # on, attempts ride reused connections and the reset often hits one of them.
        for engine in ENGINES:
            with self.subTest(engine=engine), serve(self.up.port, "--http-engine", engine) as srv:
                reused_resets = 0
                for i in range(50):
                    self.up.play([ok(0, b'{"err":1}', 500), reset(), ok(0, b'{"truncated":')])
                    r = request(srv.port, "GET", "/api/all?timeout=5000")
                    self.assert_upstream_failed(r, 3)
                    seen = self.up.seen()  # every attempt had ended before the answer
                    self.assertEqual(sorted(a.attempt for a in seen), ["1", "2", "3"],
                                     "round %d: %r" % (i, seen))
                    reused_resets += any(a.action[0] == "reset" and a.nth > 1 for a in seen)
                print("%s: %d of 50 resets hit a reused connection" % (engine, reused_resets),
                      file=sys.stderr)
                self.assertGreater(reused_resets, 0)

    def assert_sent_once_more(self, seen):
        """The second request rode the first one's connection, was reset there, and went once
        more on a fresh connection."""
        self.assertEqual([(a.nth, a.action[0]) for a in seen],
                         [(1, "answer"), (2, "reset"), (1, "answer")], seen)
        self.assertEqual(seen[0].conn, seen[1].conn, seen)
        self.assertNotEqual(seen[1].conn, seen[2].conn, seen)

    def test_metadata_call_on_a_dead_reused_connection_is_sent_once_more(self):
        # A batched metadata call is not an attempt: its reused connection reset before any
        # answer byte costs it one re-send on a fresh connection, not a 502.
        for engine in ENGINES:
            with self.subTest(engine=engine), serve(self.up.port, "--http-engine", engine) as srv:
                self.up.play([ok(0, b'{"results":{"a":1}}'), reset(0.050),
                              ok(0, b'{"results":{"b":2}}')])
                r = request(srv.port, "GET", "/api/metadata/a?timeout=5000")
                self.assertEqual((r.status, r.body), (200, b"1"), r)
                r = request(srv.port, "GET", "/api/metadata/b?timeout=5000")
                self.assertEqual((r.status, r.body), (200, b"2"), r)
                self.assert_sent_once_more(self.up.seen())
                # The counter comes from the worker's pool tick (every 500 ms).
                th.wait_for(lambda: Metrics(srv.port).get(
                    "tailcut_upstream_stale_retries_total") == 1, 5 * th.SLOW)
                self.assertEqual(
                    Metrics(srv.port).get("tailcut_upstream_stale_retries_total"), 1)

    def test_fetch_sends_a_get_once_more_on_a_dead_reused_connection(self):
        # Nor is a `tailcut fetch` request: the same re-send, and no --retries needed for it.
        url = "http://127.0.0.1:%d/x" % self.up.port
        for engine in ENGINES:
            with self.subTest(engine=engine):
                self.up.play([ok(), reset(0.050), ok()])
                p = subprocess.run([th.Proc.bin(), "fetch", "-c", "1", "--http-engine", engine,
                                    url, url], capture_output=True, timeout=30 * th.SLOW)
                self.assertEqual(p.returncode, 0, p.stderr)
                lines = [json.loads(x) for x in p.stdout.decode().splitlines()]
                self.assertEqual([x["status"] for x in lines], [200, 200], lines)
                self.assert_sent_once_more(self.up.seen())

if __name__ == "__main__":
    unittest.main(verbosity=2)

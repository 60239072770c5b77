#!/usr/bin/env python3
"""Overload of `tailcut serve` (issue 8, hardening): more clients than --max-connections, and
memory under 15,000 open connections.

1. A storm of connections beyond --max-connections: each gets 503 `overloaded` with Retry-After
   at once (< 1 s from connect), while the connections admitted before the storm keep getting
   correct answers from /api/smart all through it (docs/serve.md: Retry-After: 1).
2. 15,000 idle keep-alive client connections (each has had one /healthz answered, so each is
   surely accepted and counted) with --max-connections 16000: serve's VmRSS and VmHWM from
   /proc are printed and bounded (a generous 200 MB; a per-connection leak or a per-connection
   buffer of tens of KB would blow it), then every connection is closed and /healthz answers.

The test raises its own RLIMIT_NOFILE soft limit to the hard limit (serve inherits it) and is
skipped when the hard limit cannot hold 15,000 client sockets plus serve's side. serve is stopped
with SIGTERM at the end and must exit 0 (under TC_SANITIZE=ON, leaks make that fail).
"""
import asyncio
import os
import resource
import selectors
import socket
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import tchelpers as th  # noqa: E402
from smart_fixture import Metrics, Upstream, request, wrapped  # noqa: E402

IDLE_CONNECTIONS = 15000
RSS_BOUND_MB = 200
STORM_MAX_CONNECTIONS = 40
STORM_CONNECTIONS = 3000
STORM_CONCURRENCY = 200


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def proc_status_kb(pid, *keys):
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in keys:
                out[k] = int(v.split()[0])
    return out


def serve(upstream_port, *args):
    base = "http://127.0.0.1:%d" % upstream_port
    return th.Proc("serve", "--upstream", base + "/api/work", "--metadata-upstream",
                   base + "/api/metadata", "--access-log", "off", *args)


class Overload(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.nofile = raise_nofile()
        cls.up = Upstream("--profile", "fixed:20")

    @classmethod
    def tearDownClass(cls):
        cls.up.stop(expect=0)

    def test_storm_beyond_max_connections(self):
        with serve(self.up.port, "--workers", "2", "--max-connections",
                   str(STORM_MAX_CONNECTIONS)) as srv:
            admitted, storm, elapsed = asyncio.run(self._storm(srv.port))
            # The storm: every extra connection refused with 503 overloaded, Retry-After, fast.
            kinds = {}
            for kind, _ in storm:
                kinds[kind] = kinds.get(kind, 0) + 1
            sys.stderr.write("storm: %d connections beyond --max-connections %d in %.1fs: %r; "
                             "slowest 503 after %.3fs\n"
                             % (len(storm), STORM_MAX_CONNECTIONS, elapsed, kinds,
                                max((t for k, t in storm if k == "503"), default=0)))
            sys.stderr.write("storm: the %d admitted connections got %d answers meanwhile\n"
                             % (len(admitted), sum(len(c) for c in admitted)))
            self.assertEqual(kinds, {"503": STORM_CONNECTIONS})
            for kind, t in storm:
                self.assertLess(t, 1.0 * th.SLOW)
            # The admitted connections: every answer correct, all through the storm.
            answers = [a for conn in admitted for a in conn]
            self.assertGreaterEqual(len(answers), STORM_MAX_CONNECTIONS * 2)
            bad = [a for a in answers if a != (200, wrapped('{"time": 20}'))]
            self.assertEqual(bad, [], "admitted connections were harmed")
            for conn in admitted:
                self.assertGreaterEqual(len(conn), 2)  # each kept working during the storm
            # After the storm: a slot freed by closing is usable again, nothing is stuck.
            refused_after = []

            def healthy():
                st = request(srv.port, "GET", "/healthz").status
                if st == 503:  # the slots were not all free yet: refused and counted too
                    refused_after.append(st)
                return st == 200

            self.assertTrue(th.wait_for(healthy, 5 * th.SLOW, 0.1))
            r = request(srv.port, "GET", "/api/smart?timeout=5000")
            self.assertEqual((r.status, r.body), (200, wrapped('{"time": 20}')), r)
            m = Metrics(srv.port)
            self.assertEqual(m.get("tailcut_requests_in_flight"), 0)
            # Every refused connection is counted, by reason (each worker adds its own on its
            # 500 ms tick); none was for want of memory.
            refused = STORM_CONNECTIONS + len(refused_after)
            name = "tailcut_connections_rejected_total"
            th.wait_for(lambda: Metrics(srv.port).get(name, reason="max_connections") == refused,
                        5 * th.SLOW, 0.1)
            m = Metrics(srv.port)
            self.assertEqual(m.get(name, reason="max_connections"), refused)
            self.assertIn((name, frozenset({("reason", "out_of_memory")})), m.values)
            self.assertEqual(m.get(name, reason="out_of_memory"), 0)

    async def _storm(self, port):
        loop = asyncio.get_running_loop()
        # Admit STORM_MAX_CONNECTIONS - 1 keep-alive connections (one slot stays for the probes
        # at the end) and have each answer once before the storm starts.
        conns = []
        for _ in range(STORM_MAX_CONNECTIONS - 1):
            conns.append(await asyncio.open_connection("127.0.0.1", port))
        req = b"GET /api/smart?timeout=5000 HTTP/1.1\r\nHost: t\r\n\r\n"
        for reader, writer in conns:
            writer.write(req)
        for reader, writer in conns:
            st, _, body = await th.aio_read_response(reader, loop.time() + 10 * th.SLOW)
            assert st == 200, (st, body)
        # Fill the last slot with a plain idle connection, so the storm is beyond the limit.
        spare = await asyncio.open_connection("127.0.0.1", port)
        spare[1].write(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        st, _, _ = await th.aio_read_response(spare[0], loop.time() + 10 * th.SLOW)
        assert st == 200, st

        stop = asyncio.Event()
        admitted = [[] for _ in conns]

        async def keep_asking(i, reader, writer):
            while not stop.is_set():
                writer.write(req)
                try:
                    st, _, body = await th.aio_read_response(reader, loop.time() + 10 * th.SLOW)
                except (asyncio.TimeoutError, ConnectionError, EOFError) as e:
                    admitted[i].append(("error", repr(e)))
                    return
                admitted[i].append((st, body))

        sem = asyncio.Semaphore(STORM_CONCURRENCY)
        storm = []

        async def one_extra():
            async with sem:
                t0 = loop.time()
                try:
                    reader, writer = await asyncio.wait_for(
                        asyncio.open_connection("127.0.0.1", port), 10 * th.SLOW)
                except (OSError, asyncio.TimeoutError) as e:
                    storm.append(("connect: %s" % type(e).__name__, loop.time() - t0))
                    return
                try:
                    writer.write(b"GET /api/smart?timeout=5000 HTTP/1.1\r\nHost: t\r\n\r\n")
                    st, hdrs, body = await th.aio_read_response(reader, t0 + 10 * th.SLOW)
                    ok = (st == 503 and b'"error":"overloaded"' in body and
                          hdrs.get("retry-after") == "1" and
                          hdrs.get("content-type") == "application/json")
                    storm.append(("503" if ok else "%d %r %r" % (st, hdrs, body[:80]),
                                  loop.time() - t0))
                except (asyncio.TimeoutError, ConnectionError, EOFError) as e:
                    storm.append((type(e).__name__, loop.time() - t0))
                finally:
                    writer.close()

        workers = [asyncio.ensure_future(keep_asking(i, r, w))
                   for i, (r, w) in enumerate(conns)]
        t0 = loop.time()
        await asyncio.gather(*(one_extra() for _ in range(STORM_CONNECTIONS)))
        elapsed = loop.time() - t0
        stop.set()
        await asyncio.gather(*workers)
        for _, w in conns + [spare]:
            w.close()
        return admitted, storm, elapsed

    def test_memory_with_15000_idle_connections(self):
        soft, hard = self.nofile
        if soft != resource.RLIM_INFINITY and soft < IDLE_CONNECTIONS + 500:
            self.skipTest("RLIMIT_NOFILE %d is too low for %d connections"
                          % (soft, IDLE_CONNECTIONS))
        with serve(self.up.port, "--max-connections", "16000") as srv:
            pid = srv.proc.pid
            base = proc_status_kb(pid, "VmRSS", "VmHWM")
            socks = []
            try:
                t0 = time.monotonic()
                self._open_idle(srv.port, socks, IDLE_CONNECTIONS)
                t_open = time.monotonic() - t0
                st = proc_status_kb(pid, "VmRSS", "VmHWM")
                # Still serving, with all of them open.
                r = request(srv.port, "GET", "/healthz")
                self.assertEqual(r.status, 200, r)
                r = request(srv.port, "GET", "/api/smart?timeout=5000")
                self.assertEqual((r.status, r.body), (200, wrapped('{"time": 20}')), r)
                per_conn = (st["VmRSS"] - base["VmRSS"]) * 1024.0 / IDLE_CONNECTIONS
                sys.stderr.write(
                    "memory: serve VmRSS %.1f MB at start, %.1f MB with %d idle connections "
                    "(VmHWM %.1f MB; %.0f bytes per connection); opened in %.1fs\n"
                    % (base["VmRSS"] / 1024.0, st["VmRSS"] / 1024.0, len(socks),
                       st["VmHWM"] / 1024.0, per_conn, t_open))
                bound = RSS_BOUND_MB * (3 if th.SANITIZED else 1)
                self.assertLess(st["VmHWM"] / 1024.0, bound)
                self.assertLess(st["VmRSS"] / 1024.0, bound)
            finally:
                for s in socks:
                    s.close()
            # All closed: serve notices, answers new clients, and has its connection slots
            # back: 2,000 new connections all get 200 (with the old 15,000 still counted,
            # 1,000 of them would be over --max-connections and get 503).
            self.assertEqual(request(srv.port, "GET", "/healthz").status, 200)
            time.sleep(0.5)
            again = []
            try:
                self._open_idle(srv.port, again, 2000)
            finally:
                for s in again:
                    s.close()
            end = proc_status_kb(pid, "VmRSS")
            sys.stderr.write("memory: serve VmRSS %.1f MB after closing them\n"
                             % (end["VmRSS"] / 1024.0))

    def _open_idle(self, port, socks, count):
        """Opens count connections in batches, each sending one /healthz and reading
        its 200 (so that it is accepted, counted and then idle in keep-alive)."""
        sel = selectors.DefaultSelector()
        deadline = time.monotonic() + 45 * th.SLOW
        batch = 1000
        req = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
        want = b'{"status":"ok"}'
        try:
            while len(socks) < count:
                n = min(batch, count - len(socks))
                pending = {}
                for _ in range(n):
                    s = socket.socket()
                    s.setblocking(False)
                    s.connect_ex(("127.0.0.1", port))
                    socks.append(s)
                    pending[s] = bytearray()
                    sel.register(s, selectors.EVENT_WRITE)
                while pending:
                    self.assertLess(time.monotonic(), deadline,
                                    "only %d connections answered"
                                    % (len(socks) - len(pending)))
                    for key, ev in sel.select(timeout=1):
                        s = key.fileobj
                        if ev & selectors.EVENT_WRITE:
                            err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                            self.assertEqual(err, 0, os.strerror(err))
                            s.send(req)
                            sel.modify(s, selectors.EVENT_READ)
                            continue
                        chunk = s.recv(4096)
                        self.assertNotEqual(chunk, b"", "closed by serve after %d connections"
                                            % len(socks))
                        buf = pending[s]
                        buf += chunk
                        if buf.endswith(want):
                            self.assertTrue(buf.startswith(b"HTTP/1.1 200 "), bytes(buf[:80]))
                            sel.unregister(s)
                            del pending[s]
        finally:
            sel.close()


if __name__ == "__main__":
    watchdog = th.Watchdog(100 * th.SLOW)
    unittest.main(verbosity=2)

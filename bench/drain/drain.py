#!/usr/bin/env python3
"""Drain under load (issue 8): SIGTERM to `tailcut serve` while DRAIN_C keep-alive clients keep
asking /api/smart of an upstream that answers in 300 ms (`tailcut upstream --profile
fixed:300`). Reports, does not assert.

Every request is recorded with its send time (the moment it was written, on the same monotonic
clock as the signal) and its outcome:
  200            the full 200 answer, body checked byte for byte
  503            503 shutting_down (or overloaded) with Retry-After
  refused        the connection was refused, or reset during the handshake (the listening
                 socket is closed); counted per connection attempt, every 50 ms
  closed_unanswered  the connection ended (EOF or RST) before any byte of an answer: a
                 request written while serve was closing an idle kept-alive connection, or a
                 connection still in the kernel's accept queue when the listener closed
  reset_mid_answer   part of an answer, then EOF or RST: what a drain must never do
  other          anything else (another status, a wrong body, a timeout)
docs/serve.md ("Stopping"): requests sent before the signal are finished (each gets its full
200); later ones get 503 shutting_down or a refused connection.

Environment: TAILCUT, DRAIN_C [400] connections, DRAIN_LOAD_S [3] seconds of load before the
signal, DRAIN_AFTER_S [1.5] seconds of load after it, DRAIN_DELAY_MS [300] upstream delay,
DRAIN_WORKERS [serve's default], DRAIN_MODE [keepalive] or close (a new connection for each
request, which also exercises connections waiting in the accept queue at the signal).
"""
import asyncio
import os
import random
import signal
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                "tests", "integration"))
import tchelpers as th  # noqa: E402

def env_num(name, default):
    return type(default)(os.environ.get(name, default))


class Client:
    def __init__(self, port, path, want_body, conns, keepalive):
        self.port, self.path, self.want_body, self.conns = port, path, want_body, conns
        self.keepalive = keepalive
        self.spread = 0.3
        self.records = []  # (send time, outcome, detail)
        self.stop = False

    async def read_answer(self, reader):
        """One response; returns (outcome, detail, close). Raises nothing."""
        buf = b""
        try:
            while b"\r\n\r\n" not in buf:
                chunk = await asyncio.wait_for(reader.read(65536), 15)
                if not chunk:
                    return ("closed_unanswered" if not buf else "reset_mid_answer",
                            "EOF after %d bytes" % len(buf), True)
                buf += chunk
            head, _, rest = buf.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ")[1])
            hdrs = {}
            for line in lines[1:]:
                k, _, v = line.partition(":")
                hdrs[k.strip().lower()] = v.strip()
            n = int(hdrs.get("content-length", "-1"))
            if n < 0:
                return "other", "no Content-Length", True
            while len(rest) < n:
                chunk = await asyncio.wait_for(reader.read(65536), 15)
                if not chunk:
                    return ("reset_mid_answer", "EOF after %d of %d body bytes" % (len(rest), n),
                            True)
                rest += chunk
            body = rest[:n]
            close = hdrs.get("connection", "").lower() == "close"
            if status == 200 and body == self.want_body:
                return "200", "", close
            if status == 503 and hdrs.get("retry-after") and (
                    b'"shutting_down"' in body or b'"overloaded"' in body):
                return "503", body.split(b'"error":"')[1].split(b'"')[0].decode(), close
            return "other", "%d %r" % (status, body[:100]), True
        except (ConnectionResetError, BrokenPipeError) as e:
            return ("closed_unanswered" if not buf else "reset_mid_answer",
                    "%s after %d bytes" % (type(e).__name__, len(buf)), True)
        except asyncio.TimeoutError:
            return "other", "no answer within 15 s after %d bytes" % len(buf), True

    async def one_connection(self):
        loop = asyncio.get_running_loop()
        req = b"GET %s HTTP/1.1\r\nHost: drain\r\n%s\r\n" % (
            self.path.encode(), b"" if self.keepalive else b"Connection: close\r\n")
        writer = None
        # Spread the clients over one upstream delay, so that at any moment some requests
        # are just sent, some half way and some being answered.
        await asyncio.sleep(random.uniform(0, self.spread))
        while not self.stop:
            if writer is None:
                t = loop.time()
                try:
                    reader, writer = await asyncio.wait_for(
                        asyncio.open_connection("127.0.0.1", self.port), 10)
                except (ConnectionRefusedError, ConnectionResetError) as e:
                    # A reset during the handshake (the listener closed with the connection in
                    # its queue) refuses it just the same: no request was sent.
                    self.records.append((t, "refused", type(e).__name__))
                    await asyncio.sleep(0.05)
                    continue
                except (OSError, asyncio.TimeoutError) as e:
                    self.records.append((t, "other", "connect: %r" % e))
                    await asyncio.sleep(0.05)
                    continue
            t = loop.time()
            try:
                writer.write(req)
                outcome, detail, close = await self.read_answer(reader)
            except (ConnectionResetError, BrokenPipeError) as e:
                outcome, detail, close = "closed_unanswered", "write: %r" % e, True
            self.records.append((t, outcome, detail))
            if close:
                writer.close()
                try:
                    await writer.wait_closed()
                except OSError:
                    pass
                writer = None
        if writer is not None:
            writer.close()

    async def run(self, srv, load_s, after_s):
        loop = asyncio.get_running_loop()
        tasks = [asyncio.ensure_future(self.one_connection()) for _ in range(self.conns)]
        await asyncio.sleep(load_s)
        t_signal = loop.time()
        srv.send_signal(signal.SIGTERM)
        t_exit = None
        end = t_signal + after_s
        while loop.time() < end or t_exit is None:
            if t_exit is None and srv.poll() is not None:
                t_exit = loop.time()
            if loop.time() > t_signal + 60:
                break
            await asyncio.sleep(0.01)
        self.stop = True
        await asyncio.gather(*tasks)
        return t_signal, t_exit


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    binary = os.environ.get("TAILCUT") or os.path.join(here, "..", "..", "build", "tailcut")
    conns = env_num("DRAIN_C", 400)
    load_s = env_num("DRAIN_LOAD_S", 3.0)
    after_s = env_num("DRAIN_AFTER_S", 1.5)
    delay = env_num("DRAIN_DELAY_MS", 300)
    workers = os.environ.get("DRAIN_WORKERS")
    mode = os.environ.get("DRAIN_MODE", "keepalive")
    if mode not in ("keepalive", "close"):
        sys.exit("drain: DRAIN_MODE is keepalive or close")

    up, up_port = th.start_listening(binary, "upstream", "--profile", "fixed:%d" % delay)
    args = ["serve", "--upstream", "http://127.0.0.1:%d/api/work" % up_port,
            "--max-connections", str(max(10000, 2 * conns))]
    if workers:
        args += ["--workers", workers]
    srv, port = th.start_listening(binary, *args)
    try:
        want = b'{"success":true,"response":{"time": %d}}' % delay
        client = Client(port, "/api/smart?timeout=5000", want, conns, mode == "keepalive")
        client.spread = delay / 1000.0
        t_signal, t_exit = asyncio.run(client.run(srv, load_s, after_s))
        status = srv.wait(30)
    finally:
        th.stop_all((srv, up))
        err = th.stderr_of(srv, 2000)
        th.remove_err_files((srv, up))

    before = {}
    after = {}
    anomalies = []
    for t, outcome, detail in client.records:
        side = before if t < t_signal else after
        side[outcome] = side.get(outcome, 0) + 1
        if (t < t_signal and outcome != "200") or outcome in ("reset_mid_answer", "other"):
            anomalies.append((round((t - t_signal) * 1000, 2), outcome, detail))

    def hist(d):
        return ", ".join("%s: %d" % (k, d[k]) for k in sorted(d)) or "none"

    nb = sum(before.values())
    ok_before = before.get("200", 0)
    mid = before.get("reset_mid_answer", 0) + after.get("reset_mid_answer", 0)
    p = print
    what = "keep-alive clients" if mode == "keepalive" else "clients, a new connection each"
    p("drain: %d %s on /api/smart, upstream fixed:%d, %.1f s of load, SIGTERM, then %.1f s more"
      % (conns, what, delay, load_s, after_s))
    p("serve exit status %s, %.0f ms after the signal%s"
      % (status, (t_exit - t_signal) * 1000 if t_exit else -1,
         "" if status == 0 else "; stderr:\n" + err))
    p("sent before the signal: %d: %s" % (nb, hist(before)))
    p("sent after the signal: %d: %s" % (sum(after.values()), hist(after)))
    p("every request sent before the signal got its full 200: %s; resets mid-answer: %d"
      % ("yes" if ok_before == nb else "NO (%d not)" % (nb - ok_before), mid))
    if anomalies:
        p("anomalies (ms from the signal, outcome, detail), first 20 of %d:" % len(anomalies))
        for a in anomalies[:20]:
            p("  %+.2f ms %s %s" % a)
    p("| drain under load, %d %s, /api/smart on fixed:%d, SIGTERM after %.0f s | exit %s "
      "in %.0f ms | before the signal: %d sent, %s | after: %s; resets mid-answer: %d |"
      % (conns, what, delay, load_s, status, (t_exit - t_signal) * 1000 if t_exit else -1, nb,
         hist(before), hist(after), mid))


if __name__ == "__main__":
    main()

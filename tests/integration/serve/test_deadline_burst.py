#!/usr/bin/env python3
"""No 504 leaves before its deadline, even under a burst (issue 24 part 3; CONTRACT: "the deadline
counts from the moment the request was fully read").

`tailcut serve --workers 2` in front of an upstream that answers after 5 s, so every
/api/smart?timeout=T is answered 504 at its deadline. CLIENTS keep-alive connections send requests
back to back for DURATION seconds, with timeouts cycling through TIMEOUTS_MS, so that deadlines
fall at every position within a millisecond and the loop is busy with other requests when they
come due (which is when a timer counted from a rounded-down read moment fired early).

Each request's elapsed time counts from just before its bytes are handed to the socket (so the
server reads it later still) to when its answer is read. The assertion is exact: every answer
is a 504 `timeout` and none arrives before T ms. Upper bounds are only a generous sanity check;
nothing asserts speed.
"""
import asyncio
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import tchelpers as th  # noqa: E402
from smart_fixture import Upstream  # noqa: E402

CLIENTS = 200
DURATION = 4.0
TIMEOUTS_MS = (20, 27, 33, 41, 50)
MIN_ANSWERS = 2000  # far below what even a sanitizer build answers in DURATION


async def client(port, index, stop_at, results):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    loop = asyncio.get_running_loop()
    n = index
    try:
        while loop.time() < stop_at:
            timeout_ms = TIMEOUTS_MS[n % len(TIMEOUTS_MS)]
            n += 1
            raw = "GET /api/smart?timeout=%d HTTP/1.1\r\nHost: test\r\n\r\n" % timeout_ms
            t0 = time.monotonic()
            writer.write(raw.encode())
            status, headers, body = await th.aio_read_response(reader, loop.time() + 30 * th.SLOW)
            results.append((timeout_ms, time.monotonic() - t0, status, body))
    finally:
        await th.aio_close(writer)


async def burst(port):
    results = []
    stop_at = asyncio.get_running_loop().time() + DURATION
    await asyncio.gather(*(client(port, i, stop_at, results) for i in range(CLIENTS)))
    return results


class DeadlineBurst(unittest.TestCase):
    def test_no_504_before_its_deadline(self):
        dog = th.Watchdog(240 * th.SLOW)
        up = Upstream("--profile", "fixed:5000")
        try:
            srv = th.Proc("serve", "--workers", "2", "--access-log", "off", "--upstream",
                          "http://127.0.0.1:%d/api/work" % up.port)
            with srv:
                results = asyncio.run(burst(srv.port))
                srv.stop(expect=0)
        finally:
            up.stop(expect=0)
            dog.cancel()
        early = [(t, round(e * 1000, 3)) for t, e, _, _ in results if e < t / 1000.0]
        statuses = {}
        for _, _, status, _ in results:
            statuses[status] = statuses.get(status, 0) + 1
        sys.stderr.write("%d answers %r; earliest against its timeout: %.3f ms; late p100: "
                         "%.1f ms\n" % (len(results), statuses,
                                        min(e * 1000 - t for t, e, _, _ in results),
                                        max(e * 1000 - t for t, e, _, _ in results)))
        self.assertGreaterEqual(len(results), MIN_ANSWERS)
        self.assertEqual(statuses, {504: len(results)})
        for _, _, _, body in results[:50]:
            self.assertIn(b'"error":"timeout"', body)
        self.assertEqual(len(early), 0, "%d answers before the deadline (timeout ms, elapsed "
                         "ms), the first: %r" % (len(early), early[:10]))
        for t, e, _, _ in results:
            self.assertLess(e, t / 1000.0 + 20 * th.SLOW)  # sanity only, not speed


if __name__ == "__main__":
    unittest.main()

"""Policy fidelity: does /api/smart behave the way its policy says it should?

Sends N requests to /api/smart (C at a time) in front of `tailcut upstream --profile exponea`,
records each latency and outcome, then simulates the same policy on the same upstream model
(delay uniform 100..600 ms; per 11 draws one hang, one invalid JSON, one 500, eight good; hedge:
1 attempt, 2 more at 300 ms or as soon as the first failed; first success wins; deadline) and
compares p50, p90 and the success rate. Prints one markdown table row. Python stdlib only.

usage: fidelity.py PORT N CONCURRENCY TIMEOUT_MS HEDGE_DELAY_MS
"""
import asyncio
import random
import sys
import time


def percentile(sorted_values, p):
    if not sorted_values:
        return float("nan")
    k = (len(sorted_values) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def simulate(n, timeout_ms, hedge_delay_ms, seed=1):
    """Monte Carlo of the smart policy on the exponea model. Returns (latencies_ms, successes)."""
    rng = random.Random(seed)
    deck = []

    def draw():
        if not deck:
            deck.extend(["hang", "invalid", "500"] + ["ok"] * 8)
            rng.shuffle(deck)
        return rng.randint(100, 600), deck.pop()

    lat, ok = [], 0
    for _ in range(n):
        d1, o1 = draw()
        first_fails_at = d1 if o1 in ("invalid", "500") else None
        hedge_at = hedge_delay_ms
        if first_fails_at is not None and first_fails_at < hedge_delay_ms:
            hedge_at = first_fails_at
        candidates, failures, hung = [], [], o1 == "hang"
        if o1 == "ok":
            candidates.append(d1)
        elif not hung:
            failures.append(d1)
        if not (o1 == "ok" and d1 <= hedge_delay_ms):
            for _ in range(2):
                d, o = draw()
                if o == "ok":
                    candidates.append(hedge_at + d)
                elif o == "hang":
                    hung = True
                else:
                    failures.append(hedge_at + d)
        best = min(candidates) if candidates else None
        if best is not None and best <= timeout_ms:
            lat.append(best)
            ok += 1
        elif hung or best is not None:
            lat.append(timeout_ms)  # 504 at the deadline
        else:
            lat.append(min(max(failures), timeout_ms))  # 502 once the last attempt failed
    return lat, ok


async def one(port, path, results):
    t0 = time.monotonic()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(("GET %s HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n" % path).encode())
        await writer.drain()
        data = await reader.read()
        writer.close()
        status = int(data.split(b" ", 2)[1])
    except Exception:
        status = 0
    results.append(((time.monotonic() - t0) * 1000.0, status))


async def drive(port, n, conc, timeout_ms):
    results = []
    sem = asyncio.Semaphore(conc)
    path = "/api/smart?timeout=%d" % timeout_ms

    async def task():
        async with sem:
            await one(port, path, results)

    await asyncio.gather(*(task() for _ in range(n)))
    return results


def main():
    port, n, conc, timeout_ms, hedge_delay = (int(x) for x in sys.argv[1:6])
    results = asyncio.run(drive(port, n, conc, timeout_ms))
    ok_lat = sorted(ms for ms, st in results)
    succ = sum(1 for _, st in results if st == 200)
    sim_lat, sim_ok = simulate(200000, timeout_ms, hedge_delay)
    sim_lat.sort()
    m50, m90 = percentile(ok_lat, 50), percentile(ok_lat, 90)
    s50, s90 = percentile(sim_lat, 50), percentile(sim_lat, 90)
    mrate, srate = 100.0 * succ / len(results), 100.0 * sim_ok / 200000
    print("| smart policy fidelity, %d requests x %d concurrent, exponea, timeout=%d | "
          "p50 %.1f ms (policy %.1f, diff %+.1f) | p90 %.1f ms (policy %.1f, diff %+.1f) | "
          "success %.2f%% (policy %.2f%%, diff %+.2f pts) | target: within 5 ms, 0.5 pts |"
          % (n, conc, timeout_ms, m50, s50, m50 - s50, m90, s90, m90 - s90, mrate, srate,
             mrate - srate))


if __name__ == "__main__":
    main()

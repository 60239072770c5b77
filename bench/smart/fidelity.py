"""Policy fidelity: does /api/smart behave the way its policy says it should?

Sends N requests to /api/smart (C at a time, with wrk and fidelity.lua) in front of `tailcut upstream --profile exponea`,
records each latency and outcome, then simulates the same policy on the same upstream model
(delay uniform 100..600 ms; per 11 draws one hang, one invalid JSON, one 500, eight good; hedge:
1 attempt, 2 more at 300 ms or as soon as the first failed; first success wins; deadline) and
compares p50, p90 and the success rate. Prints one markdown table row. Python stdlib only.

usage: fidelity.py PORT N CONCURRENCY TIMEOUT_MS HEDGE_DELAY_MS
"""
import json
import os
import random
import subprocess
import sys


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


def main():
    port, n, conc, timeout_ms, hedge_delay = (int(x) for x in sys.argv[1:6])
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, FIDELITY_N=str(n), FIDELITY_THREADS="1")
    # wrk keeps running for -d after fidelity.lua stops sending, so size -d from N: at most
    # about 0.7 s per request per connection on this upstream model, plus slack.
    duration = int(n / conc * 0.7) + 5
    out = subprocess.run(["wrk", "-t1", "-c%d" % conc, "-d%ds" % duration, "--timeout", "%ds" % (timeout_ms // 1000 + 5),
                          "-s", os.path.join(here, "fidelity.lua"),
                          "http://127.0.0.1:%d/api/smart?timeout=%d" % (port, timeout_ms)],
                         capture_output=True, text=True, env=env, timeout=900)
    line = [l for l in out.stdout.splitlines() if l.startswith("{")][-1]
    m = json.loads(line)
    sim_lat, sim_ok = simulate(200000, timeout_ms, hedge_delay)
    sim_lat.sort()
    s50, s90 = percentile(sim_lat, 50), percentile(sim_lat, 90)
    mrate = 100.0 * (m["n"] - m["non2xx"] - m["timeouts"]) / m["n"]
    srate = 100.0 * sim_ok / len(sim_lat)
    print("| smart policy fidelity, %d requests, %d concurrent, exponea seeded, timeout=%d "
          "| p50 %.1f ms (policy %.1f, %+.1f), p90 %.1f ms (policy %.1f, %+.1f) "
          "| success %.2f%% (policy %.2f%%, %+.2f pts) | target: within 5 ms and 0.5 pts |"
          % (m["n"], conc, timeout_ms, m["p50_ms"], s50, m["p50_ms"] - s50, m["p90_ms"], s90,
             m["p90_ms"] - s90, mrate, srate, mrate - srate))


if __name__ == "__main__":
    main()

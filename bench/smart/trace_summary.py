#!/usr/bin/env python3
"""Summarises serve's deadline trace (TAILCUT_TRACE, app/serve/cmd_serve_trace.c).

Usage: trace_summary.py TIMEOUT_MS TRACE_FILE...

For each answered request, in milliseconds: where its time went between the moment it was read
and the moment its answer was in the socket, split at its deadline. Prints a markdown table of
percentiles (p50, p90, p99, max) and the mean of each part over the slowest 1%.
"""
import sys


def pct(values, p):
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(p / 100.0 * len(s)))]


def main():
    timeout_ns = int(sys.argv[1]) * 1000000
    rows = []
    for path in sys.argv[2:]:
        with open(path) as f:
            next(f)
            for line in f:
                v = [int(x) for x in line.split()]
                ready, io_lag, timers, due, done, turn, written, nth, status = v
                if written == 0 or done == 0:
                    continue  # not answered (still in flight at the end, or the client left)
                rows.append({
                    "status": status,
                    # the deadline timer's due time against read + timeout (< 0: due early)
                    "due - (read + timeout)": (due - ready - timeout_ns) / 1e6,
                    "turn began - due (the loop busy elsewhere)": (turn - due) / 1e6,
                    "hedge ended - turn began (earlier work of the turn)": (done - turn) / 1e6,
                    "answer written - hedge ended": (written - done) / 1e6,
                    "written - (read + timeout)": (written - ready - timeout_ns) / 1e6,
                    "read - poll return (in-turn wait before the read)": io_lag / 1e6,
                    "turn's work before its poll, where read": timers / 1e6,
                    "answer's rank in its turn": nth,
                })
    if not rows:
        print("no answered request in the trace")
        return
    keys = [k for k in rows[0] if k != "status"]
    early = sum(1 for r in rows if r["written - (read + timeout)"] < 0)
    statuses = {}
    for r in rows:
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1
    print(f"{len(rows)} answers traced ({statuses}); written before read + timeout: {early}")
    print()
    print("| part (ms) | p50 | p90 | p99 | max | mean over the slowest 1% |")
    print("| --- | --- | --- | --- | --- | --- |")
    late = sorted(rows, key=lambda r: r["written - (read + timeout)"])
    tail = late[-max(1, len(late) // 100):]
    for k in keys:
        vals = [r[k] for r in rows]
        mean_tail = sum(r[k] for r in tail) / len(tail)
        print(f"| {k} | {pct(vals, 50):.2f} | {pct(vals, 90):.2f} | {pct(vals, 99):.2f} | "
              f"{max(vals):.2f} | {mean_tail:.2f} |")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Soak of `tailcut serve` (issue 8): SOAK_N requests (default 1,000,000) mixed over every
endpoint, against serve in front of `tailcut upstream --profile exponea` (seeded), driven by
wrk with bench/soak/mix.lua. Reports, does not assert:

- memory: serve's VmRSS sampled every second; the RSS once the first SOAK_WARM responses
  (100,000, or a tenth of SOAK_N when smaller) were counted, against the RSS at the end
  (target: within 5%), and the peak (VmHWM);
- accounting: requests wrk sent and responses it received (summed over its threads in done())
  against tailcut_requests_total summed from /metrics (every endpoint but /metrics itself,
  which only this script asks for). Every request sent must be counted exactly once by serve:
  answered, or 499 for the ones wrk abandoned in flight when it stopped (at most -c of them);
- the status histograms on both sides, wrk's socket errors and latency, the duration;
- CPU use of serve and of the simulator (the simulator is single-threaded: if it runs near one
  full core it, not serve, sets the pace).

Environment: TAILCUT (binary), SOAK_N, SOAK_C (connections), SOAK_THREADS (wrk threads),
SOAK_SEED, SOAK_UPSTREAM_CONNECTIONS (serve's pool per worker), SOAK_WORKERS.
"""
import json
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                "tests", "integration"))
import tchelpers as th  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
CLK_TCK = os.sysconf("SC_CLK_TCK")


def env_int(name, default):
    return int(os.environ.get(name, default))


def proc_kb(pid, key):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except OSError:
        return 0.0


def machine_busy():
    """(busy, total) jiffies of all CPUs from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return sum(v) - idle, sum(v)


def metrics(port):
    """{(name, frozenset(labels)): value} from serve's /metrics."""
    st, _, body = th.http_request(port, "GET", "/metrics")
    if st != 200:
        raise RuntimeError("/metrics answered %d" % st)
    return th.parse_metrics(body.decode())


def requests_by(m):
    """tailcut_requests_total as {(endpoint, status): n}, /metrics itself left out."""
    out = {}
    for (name, labels), v in m.items():
        if name != "tailcut_requests_total":
            continue
        d = dict(labels)
        if d.get("endpoint") == "metrics":
            continue
        out[(d.get("endpoint"), d.get("status"))] = int(v)
    return out


def gauge(m, name):
    return sum(v for (n, _), v in m.items() if n == name)


def main():
    binary = os.environ.get("TAILCUT") or os.path.join(HERE, "..", "..", "build", "tailcut")
    n = env_int("SOAK_N", 1000000)
    # exponea answers in ~0.45 s on average; on 2 cores c=2000 gave ~2,500 requests/s (1M in
    # about 7 minutes), with wrk, serve and the simulator sharing the cores.
    conns = env_int("SOAK_C", 2000)
    nthreads = env_int("SOAK_THREADS", 2)
    seed = env_int("SOAK_SEED", 42)
    pool = env_int("SOAK_UPSTREAM_CONNECTIONS", 4096)
    warm = env_int("SOAK_WARM", min(100000, max(1, n // 10)))
    workers = os.environ.get("SOAK_WORKERS")

    up, up_port = th.start_listening(binary, "upstream", "--profile", "exponea", "--seed", str(seed))
    base = "http://127.0.0.1:%d" % up_port
    serve_args = ["serve", "--upstream", base + "/api/work", "--metadata-upstream",
                  base + "/api/metadata", "--upstream-connections", str(pool),
                  "--max-connections", str(max(10000, conns * 2))]
    if workers:
        serve_args += ["--workers", workers]
    srv, port = th.start_listening(binary, *serve_args)
    procs = [srv, up]
    # (t, serve VmRSS kB, simulator VmRSS kB, counted by serve, (serve CPU s, simulator CPU s,
    # machine busy jiffies, machine total jiffies, wrk CPU s))
    samples = []
    try:
        cpu0 = (cpu_seconds(srv.pid), cpu_seconds(up.pid)) + machine_busy() + (0.0,)
        env = dict(os.environ, SOAK_N=str(n), SOAK_THREADS=str(nthreads))
        t0 = time.monotonic()
        wrk = subprocess.Popen(["wrk", "-t%d" % nthreads, "-c%d" % conns, "-d3600s",
                                "--timeout", "10s", "-s", os.path.join(HERE, "mix.lua"),
                                "http://127.0.0.1:%d/" % port],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
        procs.append(wrk)
        # Once a second: memory, serve's count, deaths. Each wrk thread stops by itself after
        # its share; its connections stay open and serve answers what they had sent. When
        # serve's count has reached SOAK_N and stopped moving with nothing in flight, every
        # request sent has been answered: interrupt wrk so that it reports (done()).
        stable, last, interrupted, died = 0, -1, False, None
        while wrk.poll() is None:
            time.sleep(1.0)
            for name, p in (("serve", srv), ("upstream", up)):
                if p.poll() is not None and died is None:
                    died = "%s exited with status %s:\n%s" % (name, p.returncode, th.stderr_of(p))
                    wrk.send_signal(signal.SIGINT)
            if died:
                continue
            try:
                m = metrics(port)
            except (OSError, RuntimeError, ValueError):
                continue
            counted = sum(requests_by(m).values())
            samples.append((time.monotonic() - t0, proc_kb(srv.pid, "VmRSS"),
                            proc_kb(up.pid, "VmRSS"), counted,
                            (cpu_seconds(srv.pid), cpu_seconds(up.pid)) + machine_busy() +
                            (cpu_seconds(wrk.pid),)))
            idle = gauge(m, "tailcut_requests_in_flight") == 0
            stable = stable + 1 if counted == last and idle else 0
            last = counted
            if not interrupted and ((counted >= n and stable >= 2) or stable >= 30):
                wrk.send_signal(signal.SIGINT)
                interrupted = time.monotonic() - t0
        wrk_out, wrk_err = wrk.communicate()
        duration = time.monotonic() - t0
        if died:
            sys.exit("soak: %s" % died)
        client = None
        for line in wrk_out.splitlines():
            if line.startswith("{"):
                client = json.loads(line)
        if client is None:
            sys.exit("soak: no summary from wrk:\n%s\n%s" % (wrk_out, wrk_err))
        # wrk closed its connections: anything still in flight is cancelled (499) at once.
        deadline = time.monotonic() + 20
        while True:
            m = metrics(port)
            if gauge(m, "tailcut_requests_in_flight") == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        time.sleep(1.0)
        m = metrics(port)
        rss_end = proc_kb(srv.pid, "VmRSS")
        hwm = proc_kb(srv.pid, "VmHWM")
        up_hwm = proc_kb(up.pid, "VmHWM")
        srv.send_signal(signal.SIGTERM)
        try:
            serve_exit = srv.wait(30)
        except subprocess.TimeoutExpired:
            serve_exit = "did not exit within 30 s"
        if serve_exit != 0:
            serve_exit = "%s; stderr:\n%s" % (serve_exit, th.stderr_of(srv))
    finally:
        th.stop_all(procs)
        th.remove_err_files(procs)

    # ---- report --------------------------------------------------------------------------
    by = requests_by(m)
    counted = sum(by.values())
    left = sum(v for (ep, st), v in by.items() if st == "499")
    answered = counted - left
    warm_sample = next((s for s in samples if s[3] >= warm), None)
    rss_warm = warm_sample[1] if warm_sample else 0
    drift = (rss_end - rss_warm) * 100.0 / rss_warm if rss_warm else float("nan")
    server_status = {}
    for (ep, st), v in by.items():
        server_status[st] = server_status.get(st, 0) + v
    attempts = {dict(k[1]).get("outcome"): int(v) for k, v in m.items()
                if k[0] == "tailcut_upstream_attempts_total" and v}

    def hist(d):
        return ", ".join("%s: %d" % (k, d[k]) for k in sorted(d))

    # The load: until serve had answered as many requests as wrk received (1 s resolution);
    # then the last requests of the stopped threads finish (up to 10 s: a hung attempt of an
    # /api/smart without timeout), and wrk is interrupted.
    t_load = next((t for t, _, _, c, _ in samples if c >= client["received"]), duration)
    rate = client["received"] / t_load if t_load > 0 else 0
    unread = client["sent"] - client["received"]
    exact = client["sent"] == counted
    p = print
    p("soak: SOAK_N=%d, wrk -t%d -c%d, serve in front of tailcut upstream --profile exponea "
      "--seed %d" % (n, nthreads, conns, seed))
    p("duration: %.1f s until serve had answered the %d requests wrk received (%.0f "
      "requests/s); the last answer at %.0f s; %.1f s in all"
      % (t_load, client["received"], rate,
         next((t for t, _, _, c, _ in samples if c >= counted), duration), duration))
    p("client (wrk, summed over threads): sent %d, received %d (wrk's own count %d); socket "
      "errors %s; latency %s" % (client["sent"], client["received"], client["wrk_requests"],
                                 client["errors"], client["latency_ms"]))
    p("server (tailcut_requests_total without /metrics): counted %d = %d answered + %d with "
      "status 499 (client left)" % (counted, answered, left))
    p("check: every request sent counted exactly once by serve: %s (counted - sent = %+d); "
      "%d answers were not read by wrk because its threads stop at their share (at most one "
      "per connection: %s)" % ("yes" if exact else "NO", counted - client["sent"], unread,
                                "yes" if 0 <= unread <= conns else "NO"))
    p("statuses, client: %s" % hist(client["statuses"]))
    p("statuses, server: %s" % hist(server_status))
    p("server by endpoint: %s" % ", ".join("%s %s: %d" % (ep, st, v)
                                            for (ep, st), v in sorted(by.items())))
    p("upstream attempts by outcome: %s" % hist(attempts))
    p("serve RSS: %.1f MB after the first %d responses (at %.0f s), %.1f MB at the end: "
      "%+.1f%% (target within 5%%); peak VmHWM %.1f MB; simulator peak %.1f MB"
      % (rss_warm / 1024.0, warm, warm_sample[0] if warm_sample else -1, rss_end / 1024.0,
         drift, hwm / 1024.0, up_hwm / 1024.0))
    # CPU over the load (from the start to the sample at t_load).
    end = next((x for x in samples if x[0] >= t_load), samples[-1] if samples else None)
    if end is not None and end[0] > 0:
        c1 = end[4]
        cpu_srv, cpu_up, cpu_wrk = ((c1[i] - cpu0[i]) / end[0] * 100 for i in (0, 1, 4))
        machine = (c1[2] - cpu0[2]) * 100.0 / max(1, c1[3] - cpu0[3])
        p("CPU during the load (share of one core): serve %.0f%%, simulator %.0f%%%s, wrk "
          "%.0f%%; the machine's %d cores were %.0f%% busy (every process and the kernel)"
          % (cpu_srv, cpu_up, " <- the single-threaded simulator is the bottleneck"
             if cpu_up > 90 else "", cpu_wrk, os.cpu_count() or 1, machine))
    p("serve exit status after SIGTERM: %s" % serve_exit)
    rss_series = [(round(t), round(r / 1024.0, 1)) for t, r, _, c, _ in samples]
    step = max(1, len(rss_series) // 20)
    p("serve VmRSS over time (s, MB): %s" % rss_series[::step])
    p("| soak, %d mixed requests (all endpoints), wrk -t%d -c%d, exponea | %.0f s, %.0f req/s; "
      "RSS %.1f MB at %d answers, %.1f MB at the end (%+.1f%%, target within 5%%) | sent %d, "
      "serve counted %d (%d answered, %d 499); statuses %s | %s |"
      % (n, nthreads, conns, t_load, rate, rss_warm / 1024.0, warm, rss_end / 1024.0, drift,
         client["sent"], counted, answered, left, hist(server_status),
         "every request counted once" if exact else "MISMATCH %+d" % (counted - client["sent"])))


if __name__ == "__main__":
    main()

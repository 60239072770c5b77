#!/usr/bin/env python3
"""Issue 22 benchmark: hedging across the replicas of a service (CONTRACT §7). Reports; asserts
nothing.

Three `tailcut upstream` simulators on loopback are the replicas; the load is open loop
(build/bench/hedge_load: request i is due at i / RATE s and its latency counts from then) on
/api/smart of `tailcut serve --workers 1`. Each scenario runs every configuration against the
same three simulators, one after the other, each after TIME_WAIT has settled and the 1-minute
load average has dropped below LOAD_MAX:

  replicas     tailcut with the three URLs (a repeatable --upstream): tailcut chooses the
               replica of every attempt. Run only when `tailcut serve --help` marks --upstream
               (repeatable); otherwise the peers run alone and the reason is printed.
  least_conn   tailcut with ONE URL: nginx `least_conn` in front of the three
  round_robin  tailcut with ONE URL: nginx round robin in front of the three
  no_hedging   as round_robin, with --hedge-extra 0

Scenarios (the issue's benchmark table):
  gc        GC pauses: pause:10:30:200:2000 with PHASE_MS 0, 667 and 1333 (the stalls of the
            three come 667 ms apart, on the wall clock), 1,000 req/s for 20 s,
            --hedge-delay p95 --hedge-budget 5
  degraded  one degraded replica: 2 x mix:10:30:1000:2000:0.01 and 1 x uniform:200:400,
            1,000 req/s for 20 s, the seed policy (serve's defaults)
  kill      replica 1 killed (kill -9) at 5 s and restarted on its port at 12 s, 500 req/s for
            25 s, the seed policy; nginx retries on another replica (proxy_next_upstream error
            timeout http_502 http_503 http_504). The issue names no profile for it: KILL_PROFILE.

Per-replica shares and extra attempts come from each simulator's /stats (per_second, counted by
X-Tailcut-Attempt, which nginx passes on unchanged): extras are the attempts numbered 2 and up,
in % of the requests. Percentiles are nearest-rank over the ok requests. For the kill scenario,
the killed simulator's counts until the kill are read just before it, and "back" is the first
second (since the load began) in which the restarted one saw an attempt. Writes
bench/replicas/cdf.png (gnuplot: a panel per scenario, the fraction of requests slower than x,
log-log) and prints rows for bench/results.md on stdout; progress goes to stderr.

Environment: TAILCUT [build/tailcut], HEDGE_LOAD [build/bench/hedge_load], SCENARIOS
[gc,degraded,kill], CONFIGS [replicas,least_conn,round_robin,no_hedging], KILL_PROFILE
[uniform:1:5], LOAD_MAX [1.0], LOAD_WAIT [180] (the longest wait for it, in s), OUT
[bench/replicas].
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                "tests", "integration"))
import tchelpers as th  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TAILCUT, HEDGE_LOAD = th.bench_binaries()
OUT = os.environ.get("OUT", os.path.join(ROOT, "bench", "replicas"))
KILL_PROFILE = os.environ.get("KILL_PROFILE", "uniform:1:5")
LOAD_MAX = float(os.environ.get("LOAD_MAX", "1.0"))
LOAD_WAIT = float(os.environ.get("LOAD_WAIT", "180"))

SCENARIOS = {
    "gc": {
        "title": "GC pauses, 3 x pause:10:30:200:2000 at phases 0/667/1333 ms",
        "short": "GC pauses (stalls 667 ms apart)",
        "profiles": ["pause:10:30:200:2000:%d" % ph for ph in (0, 667, 1333)],
        "rate": 1000, "seconds": 20,
        "flags": ["--hedge-delay", "p95", "--hedge-budget", "5"],
        "peers": "no hedging (round robin): p99.9 231 ms; least_conn, same flags: p99 86, "
                 "p99.9 147-154 ms at 3.9% extra",
        "target": "p99.9 <= 65 ms and <= 0.5x least_conn's, extra <= 5%, every replica used",
    },
    "degraded": {
        "title": "one degraded replica, 2 x mix:10:30:1000:2000:0.01 + 1 x uniform:200:400",
        "short": "one degraded replica",
        "profiles": ["mix:10:30:1000:2000:0.01"] * 2 + ["uniform:200:400"],
        "rate": 1000, "seconds": 20, "flags": [],
        "peers": "round robin: p99 331 ms, slow replica 33%; least_conn: p99 321 ms, 4.9%",
        "target": "p98 <= 40 ms; the slow replica gets <= 1.5% of upstream requests, and some",
    },
    "kill": {
        "title": "replica 1 killed (kill -9) at 5 s, restarted at 12 s, 3 x " + KILL_PROFILE,
        "short": "one replica killed at 5 s, back at 12 s",
        "profiles": [KILL_PROFILE] * 3,
        "rate": 500, "seconds": 25, "flags": [], "kill": (0, 5.0, 12.0),
        "peers": "round robin with proxy_next_upstream: 0 failed, p99 8-9 ms, the restarted "
                 "one back",
        "target": "0 failed; the restarted replica serves again before 25 s; p99 <= 2x the "
                  "peer's",
    },
}
CONFIGS = ["replicas", "least_conn", "round_robin", "no_hedging"]
LABELS = {
    "replicas": "tailcut with the 3 URLs",
    "least_conn": "tailcut, one URL: nginx least_conn",
    "round_robin": "tailcut, one URL: nginx round robin",
    "no_hedging": "tailcut --hedge-extra 0, one URL: nginx round robin",
}


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def replicas_supported():
    """(True, "") when `tailcut serve --help` marks --upstream (repeatable), else (False, why)."""
    out = subprocess.run([TAILCUT, "serve", "--help"], capture_output=True, text=True).stdout
    block, inside = [], False
    for line in out.splitlines():
        text = line.strip()
        if text.startswith("--"):
            inside = text.split()[0] == "--upstream"
        if inside:
            block.append(text)
    if "(repeatable)" in " ".join(block):
        return True, ""
    return False, ("`%s serve --help` does not mark --upstream (repeatable): this build has one "
                   "upstream URL, so the replicas side of issue 22 cannot run yet" % TAILCUT)


def settle():
    """Waits until fewer than 200 sockets are in TIME_WAIT (at most 90 s; thousands left by an
    earlier run slow connect() for everyone) and the 1-minute load average is below LOAD_MAX (at
    most LOAD_WAIT s: the machine's cores are shared). Returns (TIME_WAIT sockets, load)."""
    deadline = time.monotonic() + 90
    while True:
        tw = len(subprocess.run(["ss", "-Htan", "state", "time-wait"], capture_output=True,
                                text=True).stdout.splitlines())
        if tw < 200 or time.monotonic() > deadline:
            break
        time.sleep(1)
    deadline = time.monotonic() + LOAD_WAIT
    while True:
        with open("/proc/loadavg") as f:
            load = float(f.read().split()[0])
        if load < LOAD_MAX or time.monotonic() > deadline:
            return tw, load
        time.sleep(2)


def http(port, method, path, body=None):
    st, _, data = th.http_request(port, method, path, body,
                                  {"Content-Type": "application/json"}, timeout=30)
    return st, data.decode()


class Sim:
    """One replica: `tailcut upstream --profile P --seed N`, which can be killed and restarted on
    the same port."""

    def __init__(self, profile, seed):
        self.profile, self.seed, self.port = profile, seed, 0
        self.dead = []  # processes killed: their stderr files go at the end
        self.start()

    def start(self):
        self.p, self.port = th.start_listening(TAILCUT, "upstream", "--profile", self.profile,
                                               "--seed", str(self.seed),
                                               listen="127.0.0.1:%d" % self.port)

    def url(self, path="/api/work"):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def stats(self):
        return json.loads(http(self.port, "GET", "/stats")[1])

    def reset(self):
        for _ in range(300):
            if self.stats()["in_flight"] == 0:
                break
            time.sleep(0.1)
        http(self.port, "POST", "/reset")

    def kill9(self):
        self.p.kill()
        self.p.wait()
        self.dead.append(self.p)

    def stop(self):
        th.stop_all([self.p], timeout=30)
        th.remove_err_files([self.p] + self.dead)


class Nginx:
    """nginx-light, one worker, in front of the simulators: least_conn or round robin, with
    keep-alive connections to them (so no TIME_WAIT piles up) and, when retry is set, a failed
    attempt retried on another one."""

    def __init__(self, sims, balance, retry):
        self.dir = tempfile.mkdtemp(prefix="tailcut-bench-nginx-")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        servers = "".join("        server 127.0.0.1:%d;\n" % s.port for s in sims)
        conf = """worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 20000; }}
http {{
    access_log off;
    keepalive_requests 100000000;
    keepalive_timeout 60s;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    upstream replicas {{
        {balance}
{servers}        keepalive 512;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://replicas;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_next_upstream {next};
        }}
    }}
}}
""".format(d=self.dir, balance="least_conn;" if balance == "least_conn" else "",
           servers=servers, port=self.port,
           next="error timeout http_502 http_503 http_504" if retry else "off")
        with open(os.path.join(self.dir, "nginx.conf"), "w") as f:
            f.write(conf)
        subprocess.run(["nginx", "-p", self.dir, "-c", os.path.join(self.dir, "nginx.conf")],
                       check=True)
        for _ in range(100):
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        sys.exit("nginx did not start: see %s/error.log" % self.dir)

    def url(self):
        return "http://127.0.0.1:%d/api/work" % self.port

    def stop(self):
        pid_file = os.path.join(self.dir, "nginx.pid")
        try:
            with open(pid_file) as f:
                os.kill(int(f.read()), 15)
        except (OSError, ValueError):
            pass
        for _ in range(100):
            if not os.path.exists(pid_file):
                break
            time.sleep(0.05)
        shutil.rmtree(self.dir, ignore_errors=True)


def pct(lat, p):
    """Nearest-rank percentile of sorted latencies (us), in ms."""
    if not lat:
        return float("nan")
    rank = min(len(lat), max(1, int(len(lat) * p / 100.0 + 0.999999)))
    return lat[rank - 1] / 1000.0


def counts(stats_list):
    """Attempts a simulator saw, by X-Tailcut-Attempt value, over the /stats given (one per
    life of a killed and restarted simulator)."""
    total = {}
    for s in stats_list:
        for k, v in th.attempts_by_value(s).items():
            total[k] = total.get(k, 0) + v
    return total


def run(name, scn, sims, config):
    """One run of config against the scenario's simulators; returns its figures."""
    rate, n = scn["rate"], scn["rate"] * scn["seconds"]
    kill = scn.get("kill")
    nginx = None
    flags = list(scn["flags"])
    if config == "replicas":
        urls = [s.url() for s in sims]
    else:
        nginx = Nginx(sims, "least_conn" if config == "least_conn" else "round_robin",
                      retry=kill is not None)
        urls = [nginx.url()]
        if config == "no_hedging":
            flags = ["--hedge-extra", "0"]
    tw, load = settle()
    for s in sims:
        s.reset()
    args = ["serve", "--workers", "1"]
    for u in urls:
        args += ["--upstream", u]
    srv, port = th.start_listening(TAILCUT, *(args + flags))
    lat_path = os.path.join(OUT, "lat-%s-%s.txt" % (name, config))
    sec_path = os.path.join(OUT, "sec-%s-%s.txt" % (name, config))
    cmd = [HEDGE_LOAD, "--url", "http://127.0.0.1:%d/api/smart?timeout=10000" % port, "--rate",
           str(rate), "--requests", str(n), "--out", lat_path, "--seconds", sec_path]
    life = [[] for _ in sims]  # /stats of the lives of a killed simulator before the last
    restart_at = None
    try:
        t0 = time.monotonic()
        load_p = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        if kill is not None:
            k, at_kill, at_restart = kill
            time.sleep(max(0.0, t0 + at_kill - time.monotonic()))
            life[k].append(sims[k].stats())
            sims[k].kill9()
            time.sleep(max(0.0, t0 + at_restart - time.monotonic()))
            sims[k].start()
            restart_at = time.monotonic() - t0
        line = load_p.communicate()[0].strip()
    finally:
        th.stop_all([srv], timeout=30)
        th.remove_err_files([srv])
        if nginx is not None:
            nginx.stop()
    summary = dict(kv.split("=") for kv in line.split())
    last = [s.stats() for s in sims]
    by_sim = [counts(life[i] + [last[i]]) for i in range(len(sims))]
    arrivals = [sum(c.values()) for c in by_sim]
    extras = sum(v for c in by_sim for k, v in c.items() if k not in ("1", "none"))
    with open(lat_path) as f:
        lat = sorted(int(x) for x in f)
    with open(sec_path) as f:
        failed_secs = [(int(a), int(c)) for a, b, c in (ln.split() for ln in f) if int(c)]
    os.remove(sec_path)
    r = {
        "config": config, "ok": int(summary["ok"]), "failed": int(summary["failed"]),
        "rate": float(summary["rate"]), "lat_path": lat_path,
        "p50": pct(lat, 50), "p98": pct(lat, 98), "p99": pct(lat, 99), "p99.9": pct(lat, 99.9),
        "p99.99": pct(lat, 99.99), "max": lat[-1] / 1000.0 if lat else float("nan"),
        "extra": extras * 100.0 / n,
        "shares": [a * 100.0 / max(1, sum(arrivals)) for a in arrivals],
        "failed_secs": failed_secs, "tw": tw, "load": load, "back": None,
    }
    if kill is not None:
        seen = [e["second"] for e in last[kill[0]]["per_second"] if len(e) > 1]
        r["back"] = restart_at + seen[0] if seen and restart_at is not None else None
    log("  %-11s p50 %.1f p98 %.1f p99 %.1f p99.9 %.1f max %.1f ms, ok %d failed %d, extra "
        "%.2f%%, shares %s (TIME_WAIT %d, load %.2f)%s"
        % (config, r["p50"], r["p98"], r["p99"], r["p99.9"], r["max"], r["ok"], r["failed"],
           r["extra"], "/".join("%.1f%%" % x for x in r["shares"]), tw, load,
           ", back at %s, failures by second %s"
           % ("%.1f s" % r["back"] if r["back"] is not None else "never", failed_secs)
           if kill else ""))
    return r


def verdict(name, by):
    """The issue's target for the replicas run, judged against its figures and its peers'."""
    r = by.get("replicas")
    if r is None:
        return "not measured (no replicas run)"
    if name == "gc":
        lc = by.get("least_conn")
        ok = (r["p99.9"] <= 65 and (lc is None or r["p99.9"] <= 0.5 * lc["p99.9"]) and
              r["extra"] <= 5 and min(r["shares"]) > 0)
    elif name == "degraded":
        ok = r["p98"] <= 40 and 0 < r["shares"][2] <= 1.5
    else:
        rr = by.get("round_robin")
        ok = (r["failed"] == 0 and r["back"] is not None and r["back"] < 25 and
              (rr is None or r["p99"] <= 2 * rr["p99"]))
    return "met" if ok else "MISSED"


def row(name, scn, r):
    detail = ("extra attempts %.2f%%, replica shares %s, %d ok / %d failed"
              % (r["extra"], " / ".join("%.1f%%" % x for x in r["shares"]), r["ok"], r["failed"]))
    if r["back"] is not None:
        detail += ", restarted replica back at %.0f s" % r["back"]
    return ("| replicas %s: %s, %d req/s x %d s%s | %s: p50 %.1f, p98 %.1f, p99 %.1f, p99.9 %.1f, "
            "max %.1f ms | %s | |"
            % (name, scn["title"], scn["rate"], scn["seconds"],
               "".join(" " + f for f in scn["flags"]), LABELS[r["config"]], r["p50"], r["p98"],
               r["p99"], r["p99.9"], r["max"], detail))


def plot(results):
    """One panel per scenario: the fraction of requests slower than x (log-log), a line per
    configuration."""
    panels = []
    for name, runs in results:
        lines = []
        for r in runs:
            with open(r["lat_path"]) as f:
                lat = sorted(int(x) for x in f)
            os.remove(r["lat_path"])
            if not lat:
                continue
            pts = os.path.join(OUT, "cdf-%s-%s.dat" % (name, r["config"]))
            th.write_tail_points(lat, pts)
            lines.append((r["config"].replace("_", " "), pts))
        panels.append((name, lines))
    png = os.path.join(OUT, "cdf.png")
    script = ["set terminal png size %d,520" % (520 * len(panels)), "set output '%s'" % png,
              "set multiplot layout 1,%d" % len(panels), "set logscale xy", "set grid",
              "set xlabel 'latency (ms)'", "set ylabel 'fraction of requests slower'",
              "set key top right"]
    for name, lines in panels:
        script.append("set title '%s'" % SCENARIOS[name]["short"])
        script.append("plot " + ", ".join("'%s' using 1:2 with lines lw 2 title '%s'" % (p, t)
                                          for t, p in lines))
    script.append("unset multiplot")
    try:
        subprocess.run(["gnuplot"], input="\n".join(script) + "\n", text=True, check=True)
        log("plot: %s" % png)
    except (OSError, subprocess.CalledProcessError) as e:
        log("no plot (gnuplot: %s)" % e)
    for _, lines in panels:
        for _, p in lines:
            os.remove(p)


def main():
    names = os.environ.get("SCENARIOS", "gc,degraded,kill").split(",")
    configs = os.environ.get("CONFIGS", ",".join(CONFIGS)).split(",")
    supported, why = replicas_supported()
    if "replicas" in configs and not supported:
        log("replicas side skipped: " + why)
        configs.remove("replicas")
    rows, results = [], []
    for name in names:
        scn = SCENARIOS[name]
        log("== bench/replicas %s: %s, %d req/s x %d s%s"
            % (name, scn["title"], scn["rate"], scn["seconds"],
               "".join(" " + f for f in scn["flags"])))
        sims = [Sim(p, 1 + i) for i, p in enumerate(scn["profiles"])]
        runs = []
        try:
            for config in configs:
                runs.append(run(name, scn, sims, config))
        finally:
            for s in sims:
                s.stop()
        results.append((name, runs))
        by = {r["config"]: r for r in runs}
        rows += [row(name, scn, r) for r in runs]
        rows.append("| replicas %s: target | %s | issue's peers: %s | %s |"
                    % (name, scn["target"], scn["peers"], verdict(name, by)))
    if not supported:
        rows.append("| replicas | not run | %s | |" % why)
    plot(results)
    print("\n".join(rows))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Issue 23 benchmarks: tailcut as a transparent proxy (`serve --config FILE`, `kind: proxy`
routes, CONTRACT §8) against nginx and HAProxy, each with one worker or thread, in the same
run. Reports; asserts nothing. Rows for bench/results.md go to stdout, progress to stderr.

tailcut's side runs when `tailcut serve --config FILE --check` accepts the scenario's proxy
configuration and a first request through it answers 200; otherwise its rows say "tailcut:
skipped (...)" and the peers run alone. Before every timed run the script waits, for at most
TW_WAIT s, until fewer than 200 sockets are in TIME_WAIT and, for at most LOAD_WAIT s, until the
1-minute load average is below LOAD_MAX; each row gives both as they were when it began (the
machine's cores are shared).

Upstreams, the same for every peer:
  fixed responder  nginx, 1 worker, `return 200 '{"time": 1}'` on any path (get, reload)
  static file      nginx, 1 worker, sendfile, a DL_MIB MiB file (download)
  simulators       STRAGGLER_REPLICAS x `tailcut upstream --profile mix:10:30:1000:2000:0.01`
                   (seeds 1, 2, ...), which count every /api/work arrival (straggler)
  counter          a Python HTTP/1.1 server in this script: reads every body, counts requests,
                   body bytes and X-Request-Id values (post)

Scenarios (SCENARIOS, comma-separated; all by default):
  get        GET /v1/items/42?x=1, wrk -t1 -c64 -dGET_SECONDS, GET_ROUNDS rounds alternating
             the peers (nginx, HAProxy, tailcut, nginx, ...): nginx proxy_pass with keepalive 256,
             HAProxy `http-reuse always`, tailcut route /v1/. Target: tailcut >= 1.2x nginx and
             >= 1.1x HAProxy (medians of the rounds).
  download   DL_CLIENTS clients x DL_PER_CLIENT downloads of the static file (hey -n -c),
             DL_ROUNDS rounds alternating nginx (proxy_buffering off, proxy_buffer_size 64k) and
             tailcut (route /). MB/s (10^6 bytes) over the wall time of the client. Target: >= 0.8x
             nginx, tailcut's peak RSS (VmHWM) <= 40 MB.
  reload     RELOADS reloads spread over RELOAD_SECONDS while build/bench/hedge_load (open loop)
             sends RELOAD_RATE GET/s: nginx with `nginx -s reload`, tailcut with SIGHUP (the file
             alternates between two valid versions). Failed requests, reloads counted
             (tailcut_config_reloads_total), p99. Target: 0 failed, every reload ok, p99 <= 2x
             nginx's.
  straggler  STRAGGLER_RATE GET/s for STRAGGLER_SECONDS, open loop, across the simulators:
             nginx (round robin, keepalive 256) and HAProxy (roundrobin, http-reuse always), no
             hedging, and tailcut with `hedge: {delay: p99, budget_percent: 2}`. p99.9, failed,
             extra calls = (arrivals at the simulators - requests) / requests, from their /stats.
             Target: tailcut p99.9 <= 70 ms at <= 2% extra, 0 failed.
  post       POST_N POSTs of a POST_MIB MiB body, POST_CONCURRENCY at a time (hey), through
             tailcut (and, as a reference that has no target, nginx with
             proxy_request_buffering off): the first 10 (10 at a time), VmHWM, then the rest.
             Each must reach the counter once. Target: tailcut's VmHWM after all <= VmHWM after
             the first 10 + 4 MB.

Environment (defaults in brackets): TAILCUT [build/tailcut], HEDGE_LOAD
[build/bench/hedge_load], SCENARIOS [get,download,reload,straggler,post], LOAD_MAX [1.0],
LOAD_WAIT [10] (s), TW_WAIT [30] (s), GET_SECONDS [5], GET_ROUNDS [3], DL_CLIENTS [32],
DL_PER_CLIENT [5], DL_MIB [10], DL_ROUNDS [2], RELOADS [20], RELOAD_SECONDS [10],
RELOAD_RATE [1000], STRAGGLER_RATE [2000], STRAGGLER_SECONDS [10], STRAGGLER_REPLICAS [3],
STRAGGLER_PROFILE [mix:10:30:1000:2000:0.01], POST_N [1000], POST_CONCURRENCY [16],
POST_MIB [1]. With the defaults the whole run takes about 4 minutes on an idle machine, at most
about 10 when every wait for TIME_WAIT and the load runs out.
"""
import atexit
import http.server
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                "tests", "integration"))
import tchelpers as th  # noqa: E402

TAILCUT, HEDGE_LOAD = th.bench_binaries()


def env_int(name, default):
    return int(os.environ.get(name, default))


LOAD_MAX = float(os.environ.get("LOAD_MAX", "1.0"))
LOAD_WAIT = float(os.environ.get("LOAD_WAIT", "10"))
TW_WAIT = float(os.environ.get("TW_WAIT", "30"))
GET_PATH = "/v1/items/42?x=1"
SKIPPED = "tailcut: skipped (no proxy support in this build)"


# Every server this script started and has not stopped yet: a run cut short by an error or a
# Ctrl-C stops them on the way out.
LIVE = []


def stop_live():
    for x in list(reversed(LIVE)):
        x.stop()


atexit.register(stop_live)


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, what, errlog=None, seconds=10):
    """Returns once port accepts; exits the script (naming what, with errlog's tail) if proc
    dies or seconds pass first."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    proc.kill()
    proc.wait()
    why = ""
    if errlog and os.path.exists(errlog):
        with open(errlog) as f:
            why = ": " + f.read()[-400:].strip()
    sys.exit("bench/proxy: %s did not start%s" % (what, why))


def settle():
    """Waits, for at most TW_WAIT s, until fewer than 200 sockets are in TIME_WAIT (thousands left
    by an earlier run slow connect() for everyone) and, for at most LOAD_WAIT s, until the 1-minute
    load average is below LOAD_MAX. Returns "load L, TIME_WAIT N" for the rows."""
    deadline = time.monotonic() + TW_WAIT
    while True:
        tw = subprocess.run(["ss", "-Htan", "state", "time-wait"], capture_output=True,
                            text=True).stdout.count("\n")
        if tw < 200 or time.monotonic() > deadline:
            break
        time.sleep(1)
    deadline = time.monotonic() + LOAD_WAIT
    while True:
        with open("/proc/loadavg") as f:
            load = float(f.read().split()[0])
        if load < LOAD_MAX or time.monotonic() > deadline:
            return "load %.2f, TIME_WAIT %d" % (load, tw)
        time.sleep(2)


def vm_hwm_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def stop_proc(x):
    """Stops x.p (SIGTERM, then SIGKILL after 15 s) and removes x.dir."""
    if x in LIVE:
        LIVE.remove(x)
    x.p.terminate()
    try:
        x.p.wait(15)
    except subprocess.TimeoutExpired:
        x.p.kill()
        x.p.wait()
    shutil.rmtree(x.dir, ignore_errors=True)


def median(xs):
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2.0


# ---- the peers -----------------------------------------------------------------------------------

class Nginx:
    """nginx, one worker, in the foreground (this script owns the master's pid); `http` is the
    text inside the http block (servers and upstreams)."""

    def __init__(self, name, http):
        self.name = name
        self.dir = tempfile.mkdtemp(prefix="tailcut-bench-nginx-")
        self.conf = os.path.join(self.dir, "nginx.conf")
        with open(self.conf, "w") as f:
            f.write("""worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 20000; }}
http {{
    access_log off;
    keepalive_requests 100000000;
    keepalive_timeout 60s;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
{http}
}}
""".format(d=self.dir, http=http))
        self.p = subprocess.Popen(["nginx", "-p", self.dir, "-e", self.dir + "/error.log",
                                   "-c", self.conf], stderr=subprocess.DEVNULL)
        LIVE.append(self)

    def started(self, port):
        wait_port(port, self.p, "nginx (%s)" % self.name, os.path.join(self.dir, "error.log"))
        return self

    def worker(self):
        """The pid of the (newest) worker process."""
        out = subprocess.run(["pgrep", "-n", "-P", str(self.p.pid)], capture_output=True,
                             text=True).stdout.split()
        return int(out[0]) if out else None

    def reload(self):
        return subprocess.run(["nginx", "-p", self.dir, "-e", self.dir + "/error.log", "-c",
                               self.conf, "-s", "reload"], capture_output=True).returncode == 0

    def stop(self):
        stop_proc(self)


def fixed_responder():
    port = free_port()
    return Nginx("fixed responder", """    server {
        listen 127.0.0.1:%d;
        location / { default_type application/json; return 200 '{"time": 1}'; }
    }""" % port).started(port), port


def nginx_proxy(upstream_ports, extra=""):
    """nginx proxy_pass (HTTP/1.1, a keep-alive pool of 256) to the upstreams, round robin."""
    port = free_port()
    servers = "".join("        server 127.0.0.1:%d;\n" % p for p in upstream_ports)
    return Nginx("proxy", """    upstream backend {
%s        keepalive 256;
    }
    server {
        listen 127.0.0.1:%d;
        client_max_body_size 0;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
%s
        }
    }""" % (servers, port, extra)).started(port), port


class HAProxy:
    """HAProxy 2.6, one thread, in the foreground: roundrobin over the upstreams, `http-reuse
    always`."""

    def __init__(self, upstream_ports):
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="tailcut-bench-haproxy-")
        conf = os.path.join(self.dir, "haproxy.cfg")
        servers = "".join("    server s%d 127.0.0.1:%d\n" % (i, p)
                          for i, p in enumerate(upstream_ports))
        with open(conf, "w") as f:
            f.write("""global
    nbthread 1
    maxconn 9000
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    http-reuse always
frontend fe
    bind 127.0.0.1:%d
    default_backend be
backend be
    balance roundrobin
%s""" % (self.port, servers))
        self.p = subprocess.Popen(["haproxy", "-db", "-f", conf], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        LIVE.append(self)
        wait_port(self.port, self.p, "haproxy")

    def stop(self):
        stop_proc(self)


def route_yaml(name, prefix, upstream_ports, hedge=None):
    lines = ["  - name: %s" % name, "    prefix: %s" % prefix, "    kind: proxy",
             "    upstreams: [%s]" % ", ".join('"http://127.0.0.1:%d"' % p for p in upstream_ports)]
    if hedge:
        lines.append("    hedge: {%s}" % hedge)
    return "\n".join(lines) + "\n"


def config_yaml(*routes):
    """A configuration file: the global keys the peers share (1 worker, no access log) and the
    routes (route_yaml)."""
    return "workers: 1\naccess_log: off\nroutes:\n" + "".join(routes)


class Tailcut:
    """`tailcut serve --config FILE --workers 1`, started only after `--check` accepts the file;
    self.skip says why it was not started."""

    def __init__(self, text):
        self.dir = tempfile.mkdtemp(prefix="tailcut-bench-proxy-")
        self.path = os.path.join(self.dir, "tailcut.yaml")
        self.write(text)
        self.p, self.port, self.skip = None, None, None
        chk = subprocess.run([TAILCUT, "serve", "--config", self.path, "--check"],
                             capture_output=True, text=True)
        if chk.returncode != 0:
            why = (chk.stderr.strip().splitlines() or ["exit %d" % chk.returncode])[-1]
            self.skip = "%s: `serve --config F --check` says: %s" % (SKIPPED, why)
            return
        self.p, self.port = th.start_listening(TAILCUT, "serve", "--config", self.path,
                                               "--workers", "1")
        LIVE.append(self)

    def write(self, text):
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, self.path)  # a reload never reads half a file

    def metrics(self):
        st, _, body = th.http_request(self.port, "GET", "/metrics", timeout=10)
        return th.parse_metrics(body.decode()) if st == 200 else {}

    def stderr(self):
        return th.stderr_of(self.p, 100000)

    def stop(self):
        if self in LIVE:
            LIVE.remove(self)
        if self.p is not None:
            th.stop_all([self.p], timeout=30)
            th.remove_err_files([self.p])
        shutil.rmtree(self.dir, ignore_errors=True)


def sane(port, path, method="GET"):
    """None when one request through the peer answers 200, else what it answered."""
    try:
        st, _, body = th.http_request(port, method, path, timeout=10)
    except OSError as e:
        return "no answer (%s)" % e
    return None if st == 200 else "status %d: %s" % (st, body[:120].decode(errors="replace"))


def start_tailcut(text, path):
    """(Tailcut or None, why not): tailcut on this configuration when it accepts it and a first
    GET of path through it answers 200."""
    tc = Tailcut(text)
    if tc.skip is None:
        bad = sane(tc.port, path)
        if bad is not None:
            tc.skip = "%s: a first GET %s answered %s" % (SKIPPED, path, bad)
    if tc.skip is not None:
        log("  " + tc.skip)
        why = tc.skip
        tc.stop()
        return None, why
    return tc, None


# ---- load tools --------------------------------------------------------------------------------

def wrk(port, seconds, path=GET_PATH):
    """wrk -t1 -c64: (req/s, non-2xx/3xx answers, socket errors line or "")."""
    out = subprocess.run(["wrk", "-t1", "-c64", "-d%ds" % seconds,
                          "http://127.0.0.1:%d%s" % (port, path)],
                         capture_output=True, text=True, timeout=seconds + 60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return rps, int(non2xx.group(1)) if non2xx else 0, errors.group(1) if errors else ""


def hedge_load(port, path, rate, n):
    """Open loop (build/bench/hedge_load): request i due at i / rate s. Returns its summary as a
    dict (requests, ok, failed, rate, p50 ... max in ms)."""
    line = subprocess.run([HEDGE_LOAD, "--url", "http://127.0.0.1:%d%s" % (port, path), "--rate",
                           str(rate), "--requests", str(n)], capture_output=True, text=True,
                          timeout=n / rate + 120).stdout.strip()
    return {k: float(v) for k, v in (kv.split("=") for kv in line.split())}


def hey(port, path, n, c, method="GET", body_file=None):
    """n requests, c at a time (hey -n -c; hey sends n // c per worker, so a remainder goes in a
    second run of its own): (seconds, {status: count}, bytes per response or None, error
    lines)."""
    secs, codes, size, errs = 0.0, {}, None, []
    for runs_n, runs_c in ((n - n % c, c), (n % c, n % c)):
        if runs_n == 0:
            continue
        cmd = ["hey", "-n", str(runs_n), "-c", str(runs_c), "-t", "60", "-disable-compression",
               "-m", method]
        if body_file:
            cmd += ["-D", body_file, "-T", "application/octet-stream"]
        t0 = time.monotonic()
        out = subprocess.run(cmd + ["http://127.0.0.1:%d%s" % (port, path)], capture_output=True,
                             text=True, timeout=600).stdout
        secs += time.monotonic() - t0
        for a, b in re.findall(r"\[(\d+)\]\s+(\d+) responses", out):
            codes[int(a)] = codes.get(int(a), 0) + int(b)
        m = re.search(r"Size/request:\s+(\d+) bytes", out)
        size = int(m.group(1)) if m else size
        errs += re.findall(r"Error distribution:\s*\n\s*(.*)", out)
    return secs, codes, size, errs


# ---- 1. any-path GET throughput ----------------------------------------------------------------

def scenario_get():
    secs, rounds = env_int("GET_SECONDS", 5), env_int("GET_ROUNDS", 3)
    log("== get: GET %s, wrk -t1 -c64 -d%ds, %d rounds alternating" % (GET_PATH, secs, rounds))
    up, up_port = fixed_responder()
    nginx, nginx_port = nginx_proxy([up_port])
    haproxy = HAProxy([up_port])
    tc, why = start_tailcut(config_yaml(route_yaml("items", "/v1/", [up_port])), GET_PATH)
    peers = [("nginx", nginx_port), ("haproxy", haproxy.port)]
    if tc is not None:
        peers.append(("tailcut", tc.port))
    res = {name: [] for name, _ in peers}
    notes = []
    try:
        for name, port in peers:
            bad = sane(port, GET_PATH)
            if bad:
                notes.append("%s: %s" % (name, bad))
            wrk(port, 1)
        load = settle()
        for r in range(rounds):
            for name, port in peers:
                rps, non2xx, errors = wrk(port, secs)
                res[name].append(rps)
                if non2xx or errors:
                    notes.append("%s round %d: %d non-2xx, %s" % (name, r + 1, non2xx, errors))
                log("  round %d %-8s %.0f req/s%s" % (r + 1, name, rps,
                                                       " (%d non-2xx)" % non2xx if non2xx else ""))
    finally:
        for x in (tc, haproxy, nginx, up):
            if x is not None:
                x.stop()
    fmt = {k: "%s %.0f req/s (%s)" % (k, median(v), ", ".join("%.0f" % x for x in v))
           for k, v in res.items()}
    peers_txt = "nginx proxy_pass keepalive 256: %s; HAProxy 2.6 http-reuse always: %s" % (
        fmt["nginx"], fmt["haproxy"])
    measure = ("any-path GET `%s`, fixed responder (nginx `return 200`), wrk -t1 -c64 -d%ds, "
               "%d rounds alternating, medians, %s" % (GET_PATH, secs, rounds, load))
    if tc is None:
        tc_txt, result = why, "target >= 1.2x nginx, >= 1.1x HAProxy: not judged"
    else:
        t = median(res["tailcut"])
        a, b = t / median(res["nginx"]), t / median(res["haproxy"])
        tc_txt = fmt["tailcut"]
        result = "%.2fx nginx, %.2fx HAProxy (target >= 1.2x, >= 1.1x): %s" % (
            a, b, "met" if a >= 1.2 and b >= 1.1 else "MISSED")
    if notes:
        result += "; " + "; ".join(notes)
    return ["| %s | %s | %s | %s |" % (measure, tc_txt, peers_txt, result)]


# ---- 2. large downloads ------------------------------------------------------------------------

def scenario_download():
    clients, per = env_int("DL_CLIENTS", 32), env_int("DL_PER_CLIENT", 5)
    mib, rounds = env_int("DL_MIB", 10), env_int("DL_ROUNDS", 2)
    n = clients * per
    log("== download: %d clients x %d downloads of %d MiB, %d rounds alternating"
        % (clients, per, mib, rounds))
    www = tempfile.mkdtemp(prefix="tailcut-bench-www-")
    atexit.register(shutil.rmtree, www, True)  # also when a server fails to start
    os.chmod(www, 0o755)  # run as root, nginx's worker is nobody
    with open(os.path.join(www, "big"), "wb") as f:
        block = bytes(range(256)) * 4096
        for _ in range(mib):
            f.write(block)
    os.chmod(os.path.join(www, "big"), 0o644)
    up_port = free_port()
    up = Nginx("static file", """    sendfile on;
    tcp_nopush on;
    server {
        listen 127.0.0.1:%d;
        root %s;
    }""" % (up_port, www)).started(up_port)
    # proxy_buffers is not used with proxy_buffering off, but nginx refuses a 64k
    # proxy_buffer_size unless proxy_buffers (less one) holds twice that (busy buffers)
    nginx, nginx_port = nginx_proxy([up_port], "            proxy_buffering off;\n"
                                              "            proxy_buffer_size 64k;\n"
                                              "            proxy_buffers 4 64k;")
    tc, why = start_tailcut(config_yaml(route_yaml("files", "/", [up_port])), "/big")
    peers = [("nginx", nginx_port)] + ([("tailcut", tc.port)] if tc is not None else [])
    res = {name: [] for name, _ in peers}
    notes, rss = [], {}
    try:
        for name, port in peers:
            bad = sane(port, "/big")
            if bad:
                notes.append("%s: %s" % (name, bad))
        load = settle()
        for r in range(rounds):
            for name, port in peers:
                secs, codes, size, errs = hey(port, "/big", n, clients)
                good = codes.get(200, 0) == n and size == mib << 20
                mbs = n * (mib << 20) / secs / 1e6
                res[name].append(mbs)
                if not good:
                    notes.append("%s round %d: statuses %s, size %s, %s"
                                 % (name, r + 1, codes, size, "; ".join(errs[:2])))
                log("  round %d %-8s %.0f MB/s (%.2f s, statuses %s)"
                    % (r + 1, name, mbs, secs, codes))
        rss["nginx"] = vm_hwm_kb(nginx.worker())
        if tc is not None:
            rss["tailcut"] = vm_hwm_kb(tc.p.pid)
    finally:
        for x in (tc, nginx, up):
            if x is not None:
                x.stop()
        shutil.rmtree(www, ignore_errors=True)
    measure = ("%d clients x %d downloads of a %d MiB body (static file behind nginx, sendfile), "
               "hey -n %d -c %d, %d rounds alternating, medians, %s"
               % (clients, per, mib, n, clients, rounds, load))
    peer_txt = ("nginx proxy_buffering off, proxy_buffer_size 64k: %.0f MB/s (%s), worker "
                "VmHWM %.1f MB" % (median(res["nginx"]),
                                   ", ".join("%.0f" % x for x in res["nginx"]),
                                   rss["nginx"] / 1024.0))
    if tc is None:
        tc_txt, result = why, "target >= 0.8x nginx, peak RSS <= 40 MB: not judged"
    else:
        t = median(res["tailcut"])
        a, mb = t / median(res["nginx"]), rss["tailcut"] / 1024.0
        tc_txt = "%.0f MB/s (%s), VmHWM %.1f MB" % (
            t, ", ".join("%.0f" % x for x in res["tailcut"]), mb)
        result = "%.2fx nginx (target >= 0.8x), RSS target <= 40 MB: %s" % (
            a, "met" if a >= 0.8 and mb <= 40 else "MISSED")
    if notes:
        result += "; " + "; ".join(notes)
    return ["| %s | %s | %s | %s |" % (measure, tc_txt, peer_txt, result)]


# ---- 3. reloads under load ---------------------------------------------------------------------

def under_reloads(port, reload_fn, reloads, seconds, rate):
    """hedge_load at rate for seconds while reload_fn() runs reloads times, evenly spread (the
    first after half an interval). Returns (summary, reloads that returned True)."""
    box = {}

    def load():
        box["s"] = hedge_load(port, GET_PATH, rate, rate * seconds)

    t = threading.Thread(target=load)
    t0 = time.monotonic()
    t.start()
    done = 0
    for i in range(reloads):
        time.sleep(max(0.0, t0 + (i + 0.5) * seconds / reloads - time.monotonic()))
        done += 1 if reload_fn(i) else 0
    t.join()
    return box["s"], done


def scenario_reload():
    reloads, seconds = env_int("RELOADS", 20), env_int("RELOAD_SECONDS", 10)
    rate = env_int("RELOAD_RATE", 1000)
    log("== reload: %d reloads in %d s at %d req/s (open loop)" % (reloads, seconds, rate))
    up, up_port = fixed_responder()
    # two valid files: the second changes the route's hedge delay and adds a route
    confs = [config_yaml(route_yaml("items", "/v1/", [up_port])),
             config_yaml(route_yaml("items", "/v1/", [up_port], "delay: 250"),
                         route_yaml("other", "/v2/", [up_port]))]
    rows = []
    nginx, nginx_port = nginx_proxy([up_port])
    try:
        sane(nginx_port, GET_PATH)
        load = settle()
        s, sent = under_reloads(nginx_port, lambda i: nginx.reload(), reloads, seconds, rate)
    finally:
        nginx.stop()
    peer = s
    log("  nginx    failed %d, p99 %.2f ms, p99.9 %.2f, max %.2f; %d reloads signalled"
        % (s["failed"], s["p99"], s["p99.9"], s["max"], sent))
    peer_txt = ("nginx, %d x `nginx -s reload` (%d exit 0): %d failed of %d, p50 %.2f, p99 "
                "%.2f, p99.9 %.2f, max %.2f ms, %s"
                % (reloads, sent, s["failed"], s["requests"], s["p50"], s["p99"], s["p99.9"],
                   s["max"], load))
    tc, why = start_tailcut(confs[0], GET_PATH)
    try:
        if tc is not None:
            load = settle()

            def hup(i):
                tc.write(confs[(i + 1) % 2])
                os.kill(tc.p.pid, signal.SIGHUP)
                return True

            s, sent = under_reloads(tc.port, hup, reloads, seconds, rate)
            time.sleep(1)  # the last reload's line and metric
            m = tc.metrics()
            ok = int(th.metric(m, "tailcut_config_reloads_total", result="ok"))
            err = int(th.metric(m, "tailcut_config_reloads_total", result="error"))
            lines = tc.stderr().count("tailcut: configuration reloaded")
            log("  tailcut  failed %d, p99 %.2f ms, p99.9 %.2f, max %.2f; reloads ok %d error %d"
                % (s["failed"], s["p99"], s["p99.9"], s["max"], ok, err))
    finally:
        if tc is not None:
            tc.stop()
        up.stop()
    measure = ("%d reloads in %d s at %d req/s, open loop (hedge_load), GET %s, fixed "
               "responder" % (reloads, seconds, rate, GET_PATH))
    if tc is None:
        tc_txt = why
        result = "target 0 failed, %d reloads ok, p99 <= 2x nginx's: not judged" % reloads
    else:
        tc_txt = ("%d x SIGHUP: %d failed of %d, p50 %.2f, p99 %.2f, p99.9 %.2f, max %.2f ms; "
                  "tailcut_config_reloads_total ok %d, error %d; %d `configuration reloaded` "
                  "lines; %s" % (reloads, s["failed"], s["requests"], s["p50"], s["p99"],
                                        s["p99.9"], s["max"], ok, err, lines, load))
        met = s["failed"] == 0 and ok == reloads and s["p99"] <= 2 * peer["p99"]
        result = "p99 %.2fx nginx's (target 0 failed, %d ok, <= 2x): %s" % (
            s["p99"] / peer["p99"], reloads, "met" if met else "MISSED")
    rows.append("| %s | %s | %s | %s |" % (measure, tc_txt, peer_txt, result))
    return rows


# ---- 4. straggler upstream, hedging across replicas --------------------------------------------

class Sim:
    """One `tailcut upstream` replica; /stats counts every /api/work arrival."""

    def __init__(self, profile, seed):
        self.p, self.port = th.start_listening(TAILCUT, "upstream", "--profile", profile,
                                               "--seed", str(seed))
        LIVE.append(self)

    def stats(self):
        return json.loads(th.http_request(self.port, "GET", "/stats", timeout=30)[2])

    def reset(self):
        for _ in range(300):
            if self.stats()["in_flight"] == 0:
                break
            time.sleep(0.1)
        th.http_request(self.port, "POST", "/reset", timeout=30)

    def stop(self):
        if self in LIVE:
            LIVE.remove(self)
        th.stop_all([self.p], timeout=30)
        th.remove_err_files([self.p])


def scenario_straggler():
    rate, seconds = env_int("STRAGGLER_RATE", 2000), env_int("STRAGGLER_SECONDS", 10)
    nrep = env_int("STRAGGLER_REPLICAS", 3)
    profile = os.environ.get("STRAGGLER_PROFILE", "mix:10:30:1000:2000:0.01")
    n = rate * seconds
    log("== straggler: %d x %s, %d req/s for %d s (open loop)" % (nrep, profile, rate, seconds))
    sims = [Sim(profile, i + 1) for i in range(nrep)]
    ports = [s.port for s in sims]
    results = {}
    try:
        for name in ("nginx", "haproxy", "tailcut"):
            srv, port, why = None, None, None
            if name == "nginx":
                srv, port = nginx_proxy(ports)
            elif name == "haproxy":
                srv = HAProxy(ports)
                port = srv.port
            else:
                srv, why = start_tailcut(config_yaml(route_yaml(
                    "work", "/api/", ports, "delay: p99, budget_percent: 2")), "/api/work")
                if srv is None:
                    results[name] = why
                    continue
                port = srv.port
            try:
                load = settle()
                for s in sims:
                    s.reset()
                summ = hedge_load(port, "/api/work", rate, n)
            finally:
                srv.stop()
            st = [s.stats() for s in sims]
            arrivals = sum(x["work_requests"] for x in st)
            summ["extra"] = (arrivals - n) * 100.0 / n
            summ["shares"] = [x["work_requests"] * 100.0 / max(1, arrivals) for x in st]
            summ["load"] = load
            results[name] = summ
            log("  %-8s p50 %.1f p99 %.1f p99.9 %.1f max %.1f ms, failed %d, extra %.2f%% "
                "(%s)" % (name, summ["p50"], summ["p99"], summ["p99.9"], summ["max"],
                                 summ["failed"], summ["extra"], load))
    finally:
        for s in sims:
            s.stop()

    def fig(r):
        return ("p50 %.1f, p99 %.1f, p99.9 %.1f, max %.1f ms, %d failed of %d, extra calls "
                "%.2f%%, shares %s, %s"
                % (r["p50"], r["p99"], r["p99.9"], r["max"], r["failed"], r["requests"],
                   r["extra"], "/".join("%.0f%%" % x for x in r["shares"]), r["load"]))

    measure = ("straggler upstream, %d x `tailcut upstream --profile %s`, %d req/s x %d s open "
               "loop (hedge_load), GET /api/work" % (nrep, profile, rate, seconds))
    peer_txt = "nginx round robin, keepalive 256, no hedging: %s; HAProxy roundrobin: %s" % (
        fig(results["nginx"]), fig(results["haproxy"]))
    r = results["tailcut"]
    if isinstance(r, str):
        tc_txt, result = r, "target p99.9 <= 70 ms at <= 2% extra, 0 failed: not judged"
    else:
        tc_txt = "`hedge: {delay: p99, budget_percent: 2}`: " + fig(r)
        met = r["p99.9"] <= 70 and r["extra"] <= 2 and r["failed"] == 0
        result = "target p99.9 <= 70 ms at <= 2%% extra, 0 failed: %s" % (
            "met" if met else "MISSED")
    return ["| %s | %s | %s | %s |" % (measure, tc_txt, peer_txt, result)]


# ---- 5. large POSTs, each sent once -------------------------------------------------------------

class Counter(http.server.ThreadingHTTPServer):
    """An HTTP/1.1 upstream that reads every request body (Content-Length or chunked) and
    answers 200; counts requests by method, body sizes and X-Request-Id values."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self):
        self.lock = threading.Lock()
        self.reset()
        super().__init__(("127.0.0.1", 0), CounterHandler)
        self.port = self.server_address[1]
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    def reset(self):
        with self.lock:
            self.posts, self.sizes, self.ids = 0, {}, {}

    def stop(self):
        self.shutdown()
        self.server_close()


class CounterHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def body_length(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            total = 0
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return total
                while size:
                    chunk = self.rfile.read(min(size, 1 << 20))
                    if not chunk:
                        raise ConnectionError("body cut")
                    size -= len(chunk)
                    total += len(chunk)
                self.rfile.readline()
        left = int(self.headers.get("Content-Length", "0"))
        total = left
        while left:
            chunk = self.rfile.read(min(left, 1 << 20))
            if not chunk:
                raise ConnectionError("body cut")
            left -= len(chunk)
        return total

    def answer(self):
        size = self.body_length()
        srv = self.server
        with srv.lock:
            if self.command == "POST":
                srv.posts += 1
                srv.sizes[size] = srv.sizes.get(size, 0) + 1
                rid = self.headers.get("X-Request-Id", "")
                srv.ids[rid] = srv.ids.get(rid, 0) + 1
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    do_GET = do_POST = answer  # noqa: N815 - http.server's naming

    def log_message(self, *args):
        pass


def scenario_post():
    n, conc, mib = env_int("POST_N", 1000), env_int("POST_CONCURRENCY", 16), env_int("POST_MIB", 1)
    first = min(10, n)
    log("== post: %d POSTs of %d MiB, %d at a time (the first %d, %d at a time)"
        % (n, mib, conc, first, first))
    d = tempfile.mkdtemp(prefix="tailcut-bench-post-")
    atexit.register(shutil.rmtree, d, True)
    body = os.path.join(d, "body")
    with open(body, "wb") as f:
        f.write(os.urandom(mib << 20))
    counter = Counter()
    rows = []

    def run(name, port, pid_fn):
        counter.reset()
        load = settle()
        t0 = time.monotonic()
        s1, c1, _, e1 = hey(port, "/upload", first, first, "POST", body)
        hwm10 = vm_hwm_kb(pid_fn())
        s2, c2, _, e2 = hey(port, "/upload", n - first, conc, "POST", body) if n > first else (
            0, {}, None, [])
        hwm = vm_hwm_kb(pid_fn())
        secs = time.monotonic() - t0
        codes = dict(c1)
        for k, v in c2.items():
            codes[k] = codes.get(k, 0) + v
        with counter.lock:
            posts, sizes, ids = counter.posts, dict(counter.sizes), dict(counter.ids)
        once = sum(1 for v in ids.values() if v == 1)
        log("  %-8s statuses %s, upstream saw %d POSTs (sizes %s), %d ids once; VmHWM %d kB "
            "after %d, %d kB after %d" % (name, codes, posts, sizes, once, hwm10, first, hwm, n))
        return {"codes": codes, "posts": posts, "sizes": sizes, "once": once, "ids": len(ids),
                "noid": ids.get("", 0), "hwm10": hwm10, "hwm": hwm, "secs": secs, "load": load,
                "errors": (e1 + e2)[:2]}

    def fig(r):
        ids = ("no X-Request-Id" if r["noid"] == r["posts"] else
               "%d distinct X-Request-Id (%d seen once)" % (r["ids"], r["once"]))
        return ("statuses %s; the upstream saw %d POSTs, %s, %s; VmHWM %.1f MB after the first "
                "%d, %.1f MB after %d (+%.1f MB); %.1f s; %s%s"
                % (r["codes"], r["posts"],
                   ", ".join("%d of %d bytes" % (v, k) for k, v in sorted(r["sizes"].items())),
                   ids, r["hwm10"] / 1024.0, first, r["hwm"] / 1024.0, n,
                   (r["hwm"] - r["hwm10"]) / 1024.0, r["secs"], r["load"],
                   "; " + "; ".join(r["errors"]) if r["errors"] else ""))

    try:
        nginx, nginx_port = nginx_proxy([counter.port], "            proxy_request_buffering off;")
        try:
            peer = run("nginx", nginx_port, nginx.worker)
        finally:
            nginx.stop()
        tc, why = start_tailcut(config_yaml(route_yaml("upload", "/", [counter.port])), "/upload")
        r = None
        if tc is not None:
            try:
                r = run("tailcut", tc.port, lambda: tc.p.pid)
                m = tc.metrics()
                unhedged = {k: int(th.metric(m, "tailcut_proxy_unhedged_total", route="upload",
                                             reason=k)) for k in ("method", "body_too_large")}
            finally:
                tc.stop()
    finally:
        counter.stop()
        shutil.rmtree(d, ignore_errors=True)
    measure = ("%d POSTs of a %d MiB body (Content-Length), %d at a time (hey), to a counting "
               "upstream; the first %d 10 at a time, then the rest" % (n, mib, conc, first))
    peer_txt = "reference, no target: nginx proxy_request_buffering off: " + fig(peer)
    if r is None:
        tc_txt, result = why, "target each sent once, VmHWM growth <= 4 MB: not judged"
    else:
        tc_txt = fig(r) + "; tailcut_proxy_unhedged_total method %d, body_too_large %d" % (
            unhedged["method"], unhedged["body_too_large"])
        met = (r["codes"].get(200, 0) == n and r["posts"] == n and r["once"] == n and
               r["sizes"].get(mib << 20, 0) == n and r["hwm"] <= r["hwm10"] + 4096)
        result = "target every POST once and intact, VmHWM growth <= 4 MB: %s" % (
            "met" if met else "MISSED")
    rows.append("| %s | %s | %s | %s |" % (measure, tc_txt, peer_txt, result))
    return rows


SCENARIOS = {"get": scenario_get, "download": scenario_download, "reload": scenario_reload,
             "straggler": scenario_straggler, "post": scenario_post}


def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    names = os.environ.get("SCENARIOS", ",".join(SCENARIOS)).split(",")
    for name in names:
        if name not in SCENARIOS:
            sys.exit("bench/proxy: unknown scenario %r (known: %s)" % (name, ", ".join(SCENARIOS)))
    log("bench/proxy: %s; %s" % (TAILCUT, subprocess.run(["uptime"], capture_output=True,
                                                          text=True).stdout.strip()))
    for name in names:
        print("\n".join(SCENARIOS[name]()), flush=True)
    log("bench/proxy: done; %s" % subprocess.run(["uptime"], capture_output=True,
                                                 text=True).stdout.strip())


if __name__ == "__main__":
    main()

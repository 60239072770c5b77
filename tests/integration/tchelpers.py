"""Shared helpers for the integration tests and the benchmark scripts: start the real binary on
127.0.0.1 port 0, talk HTTP/1.1 over raw sockets (blocking or asyncio), read /metrics, make a
throw-away CA with the openssl CLI, stop the binary with SIGTERM and insist on a clean exit.

Python standard library only. The binary comes from $TAILCUT_BIN (set by ctest). The bench/
scripts import this file from tests/integration/.
"""
import asyncio
import atexit
import http.server
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import unittest

# Sanitizer builds are several times slower: stretch timing bounds (never lower bounds) by this.
SLOW = 3.0 if os.environ.get("TC_SANITIZE") == "ON" else 1.0

# Every Proc not yet reaped, so that the watchdog and interpreter exit can kill them: a hung test
# must not leave servers running behind it.
_live = []
_live_lock = threading.Lock()


def kill_all():
    with _live_lock:
        procs = list(_live)
    for p in procs:
        if p.poll() is None:
            try:
                p.kill()
                p.wait(5)
            except Exception:  # noqa: BLE001 - best effort on the way out
                pass


atexit.register(kill_all)

LISTEN_RE = re.compile(r"tailcut: listening on http://(\[[^\]]+\]|[^:]+):(\d+)")
EMBED_RE = re.compile(r"tailcut: embedded upstream at http://([^:]+):(\d+)")
ADMIN_RE = re.compile(r"tailcut: admin listening on http://(\[[^\]]+\]|[^:]+):(\d+)")
SANITIZED = os.environ.get("TC_SANITIZE") == "ON"


class Proc:
    """A running `tailcut CMD ...` with its stdout and stderr collected in the background."""

    @staticmethod
    def bin():
        b = os.environ.get("TAILCUT_BIN")
        if not b:
            here = os.path.dirname(os.path.abspath(__file__))
            b = os.path.join(here, "..", "..", "build", "tailcut")
        return b

    def __init__(self, cmd, *args, listen="127.0.0.1:0", start_timeout=20, stdin=None,
                 binary=None):
        argv = [binary or self.bin(), cmd]
        if listen is not None:
            argv += ["--listen", listen]
        argv += list(args)
        self.argv = argv
        self.proc = subprocess.Popen(argv, stdin=stdin or subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        with _live_lock:
            _live.append(self.proc)
        self._out = bytearray()
        self._err = []
        self._ready = threading.Event()
        self.port = None
        self.embedded_port = None
        self.admin_port = None  # serve --admin-listen
        self._t_out = threading.Thread(target=self._pump_out, daemon=True)
        self._t_err = threading.Thread(target=self._pump_err, daemon=True)
        self._t_out.start()
        self._t_err.start()
        if listen is not None:
            if not self._ready.wait(start_timeout) or self.port is None:
                self.kill()
                raise AssertionError("no listening line from %s; stderr: %s"
                                     % (argv, self.stderr_text()))

    def _pump_out(self):
        for chunk in iter(lambda: self.proc.stdout.read1(65536), b""):
            self._out += chunk

    def _pump_err(self):
        for line in iter(self.proc.stderr.readline, b""):
            text = line.decode(errors="replace")
            self._err.append(text)
            m = EMBED_RE.search(text)
            if m:
                self.embedded_port = int(m.group(2))
            m = ADMIN_RE.search(text)
            if m:
                self.admin_port = int(m.group(2))
            m = LISTEN_RE.search(text)
            if m:
                self.port = int(m.group(2))
                self._ready.set()
        self._ready.set()

    def stderr_text(self):
        return "".join(self._err)

    def stdout_bytes(self):
        return bytes(self._out)

    def stop(self, timeout=30, expect=0):
        """SIGTERM, wait, check the exit status; returns everything written to stdout."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("did not exit within %ss after SIGTERM" % timeout)
        self._t_out.join(5)
        self._t_err.join(5)
        self._close_pipes()
        if expect is not None and rc != expect:
            raise AssertionError("exit status %s, want %s; stderr:\n%s"
                                 % (rc, expect, self.stderr_text()[-4000:]))
        return self.stdout_bytes()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._t_out.join(5)
        self._t_err.join(5)
        self._close_pipes()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        """Stops with SIGTERM expecting status 0; after a failure only kills (and shows stderr)."""
        if exc_type is None:
            self.stop()
        else:
            self.kill()
            os.write(2, ("---- stderr of %s\n%s----\n" % (" ".join(self.argv),
                                                          self.stderr_text()[-4000:])).encode())
        return False

    def _close_pipes(self):
        with _live_lock:
            if self.proc in _live:
                _live.remove(self.proc)
        for f in (self.proc.stdout, self.proc.stderr):
            if f is not None and not f.closed:
                f.close()


def start_in_front(stop_upstream, start):
    """Returns start(): a process started in front of an upstream (say, `tailcut serve`). If it
    fails, stops the upstream with stop_upstream() before passing the error on."""
    try:
        return start()
    except BaseException:
        stop_upstream()
        raise


def stop_in_front(srv, stop_upstream):
    """Stops srv (its exit status must be 0), then the upstream behind it, whatever happened."""
    try:
        srv.stop(expect=0)
    finally:
        stop_upstream()


class Watchdog:
    """Kills the whole test process if it runs longer than `seconds` (a hung test must fail)."""

    def __init__(self, seconds):
        self.t = threading.Timer(seconds, self._fire)
        self.t.daemon = True
        self.t.start()

    @staticmethod
    def _fire():
        os.write(2, b"watchdog: test took too long\n")
        kill_all()
        os._exit(124)

    def cancel(self):
        self.t.cancel()


def _read_exact(s, n, buf):
    while len(buf) < n:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("closed mid-response")
        buf += chunk
    return buf


def parse_head(raw):
    """A response's status line and header block (bytes, no final CRLF CRLF) -> (status,
    headers), header names lower-cased."""
    lines = raw.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return int(lines[0].split()[1]), headers


class Resp:
    """One response: status, headers (lower-cased names), body and the seconds it took."""

    def __init__(self, status, headers, body, elapsed):
        self.status, self.headers, self.body, self.elapsed = status, headers, body, elapsed

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "Resp(%r, %r, %r, %.3fs)" % (self.status, self.headers, (self.body or b"")[:300],
                                             self.elapsed)


def read_response(s, head=False):
    """Reads one HTTP/1.1 response from socket s. Returns (status, headers, body); header names
    are lower-cased. Raises EOFError if the peer closed before sending anything, and
    ConnectionError if it closed or reset in the middle."""
    buf = getattr(s, "_tc_buf", b"")
    while b"\r\n\r\n" not in buf:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            if buf:
                raise ConnectionError("reset mid-response")
            raise
        if not chunk:
            if buf:
                raise ConnectionError("closed mid-headers")
            raise EOFError("closed before a response")
        buf += chunk
    head_raw, rest = buf.split(b"\r\n\r\n", 1)
    status, hdrs = parse_head(head_raw)
    body = b""
    rest = bytearray(rest)
    if head or status in (100, 204, 304):
        body = b""
    elif "content-length" in hdrs:
        n = int(hdrs["content-length"])
        rest = _read_exact(s, n, rest)
        body, rest = bytes(rest[:n]), rest[n:]
    elif hdrs.get("transfer-encoding", "").lower() == "chunked":
        out = bytearray()
        while True:
            while b"\r\n" not in rest:
                chunk = s.recv(65536)
                if not chunk:
                    raise ConnectionError("closed mid-chunk")
                rest += chunk
            size_line, rest = rest.split(b"\r\n", 1)
            size = int(size_line.split(b";")[0], 16)
            rest = _read_exact(s, size + 2, bytearray(rest))
            out += rest[:size]
            rest = rest[size + 2:]
            if size == 0:
                break
        body = bytes(out)
    else:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            rest += chunk
        body, rest = bytes(rest), b""
    if status == 100:
        s._tc_buf = bytes(rest)
        return read_response(s, head)
    try:
        s._tc_buf = bytes(rest)
    except AttributeError:
        pass
    return status, hdrs, body


class _Sock(socket.socket):
    """A socket that can carry leftover bytes between responses (pipelining)."""
    _tc_buf = b""


def connect(port, timeout=10, host="127.0.0.1"):
    s = _Sock(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect((host, port))
    return s


def http_request(port, method, path, body=None, headers=None, timeout=10, host="127.0.0.1"):
    """One request on a fresh connection. Returns (status, headers, body)."""
    with connect(port, timeout, host) as s:
        hdrs = {"Host": "test", "Connection": "close"}
        hdrs.update(headers or {})
        if body is not None:
            if isinstance(body, str):
                body = body.encode()
            hdrs["Content-Length"] = str(len(body))
        raw = "%s %s HTTP/1.1\r\n" % (method, path)
        raw += "".join("%s: %s\r\n" % kv for kv in hdrs.items()) + "\r\n"
        s.sendall(raw.encode() + (body or b""))
        return read_response(s, head=(method == "HEAD"))


def timed_request(port, method, path, body=None, headers=None, timeout=10):
    """http_request() as a Resp; elapsed counts from the connect to the end of the body."""
    t0 = time.monotonic()
    st, hdrs, data = http_request(port, method, path, body, headers, timeout)
    return Resp(st, hdrs, data, time.monotonic() - t0)


def get_json(port, path, timeout=10):
    st, hdrs, body = http_request(port, "GET", path, timeout=timeout)
    return st, hdrs, json.loads(body) if body else None


def recv_all(s, timeout):
    """Reads until the peer closes; raises TimeoutError if it is still open after timeout s."""
    s.settimeout(timeout)
    data = bytearray(getattr(s, "_tc_buf", b""))
    deadline = time.monotonic() + timeout
    while True:
        if time.monotonic() > deadline:
            raise TimeoutError("connection still open")
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            return bytes(data)
        except socket.timeout:
            raise TimeoutError("connection still open after %ss" % timeout)
        if not chunk:
            return bytes(data)
        data += chunk


def wait_for(predicate, timeout, interval=0.02):
    """Polls predicate() until it returns a true value (returned) or timeout passes (returns the
    last value)."""
    deadline = time.monotonic() + timeout
    while True:
        v = predicate()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(interval)


class AioResult:
    """How one asyncio request ended. kind: "response" (status, headers, body set), "timeout"
    (no complete response within the timeout; nbytes says how much had arrived), "reset"
    (ECONNRESET) or "eof" (closed before a complete response). elapsed counts from the moment
    the request was written."""

    def __init__(self, kind, elapsed, nbytes=0, status=None, headers=None, body=None):
        self.kind = kind
        self.elapsed = elapsed
        self.nbytes = nbytes
        self.status = status
        self.headers = headers or {}
        self.body = body

    def __repr__(self):
        return "AioResult(%s, %.3fs, status=%r, body=%r)" % (self.kind, self.elapsed, self.status,
                                                             (self.body or b"")[:80])


async def aio_read_response(reader, deadline, head=False):
    """Reads one response from an asyncio StreamReader by loop time `deadline`. Returns (status,
    headers, body): a Content-Length body (none for HEAD), else what comes until the peer closes.
    Bytes after the response stay on the reader for the next call (pipelining). Raises
    asyncio.TimeoutError at the deadline and EOFError if the peer closes first;
    reader._tc_seen is how many bytes of this response arrived either way."""
    loop = asyncio.get_running_loop()
    buf = getattr(reader, "_tc_rest", b"")
    reader._tc_rest = b""
    reader._tc_seen = len(buf)

    async def more():
        left = deadline - loop.time()
        if left <= 0:
            raise asyncio.TimeoutError()
        data = await asyncio.wait_for(reader.read(65536), left)
        reader._tc_seen += len(data)
        return data

    while b"\r\n\r\n" not in buf:
        data = await more()
        if not data:
            raise EOFError("closed after %d bytes" % len(buf))
        buf += data
    head_raw, _, rest = buf.partition(b"\r\n\r\n")
    status, headers = parse_head(head_raw)
    if head:
        n = 0
    elif "content-length" in headers:
        n = int(headers["content-length"])
    else:
        n = None
    while n is None or len(rest) < n:
        data = await more()
        if not data:
            if n is None:
                return status, headers, rest
            raise EOFError("closed after %d bytes" % len(buf))
        rest += data
    reader._tc_rest = rest[n:]
    return status, headers, rest[:n]


async def aio_close(writer):
    """Closes an asyncio connection; a peer that already went away is not an error."""
    writer.close()
    try:
        await writer.wait_closed()
    except (ConnectionError, OSError):
        pass


async def aio_request(port, method, path, timeout, body=b"", connect_sem=None,
                      host="127.0.0.1", connect_timeout=None):
    """One request on a fresh connection with asyncio, for thousands of concurrent requests in
    one thread. Never raises for timeouts, resets or EOF once connected: see AioResult; a connect
    not done within connect_timeout (default: timeout) raises. connect_sem (an
    asyncio.Semaphore) limits how many connect at once; the requests themselves stay open."""
    loop = asyncio.get_running_loop()
    if connect_timeout is None:
        connect_timeout = timeout
    if connect_sem is not None:
        async with connect_sem:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port),
                                                    connect_timeout)
    else:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port),
                                                connect_timeout)
    t0 = loop.time()
    try:
        head = "%s %s HTTP/1.1\r\nHost: test\r\nContent-Length: %d\r\n\r\n" % (
            method, path, len(body))
        writer.write(head.encode() + body)
        status, headers, data = await aio_read_response(reader, t0 + timeout,
                                                        head=(method == "HEAD"))
        return AioResult("response", loop.time() - t0, reader._tc_seen, status, headers, data)
    except EOFError:
        return AioResult("eof", loop.time() - t0, reader._tc_seen)
    except asyncio.TimeoutError:
        return AioResult("timeout", loop.time() - t0, getattr(reader, "_tc_seen", 0))
    except ConnectionResetError:
        return AioResult("reset", loop.time() - t0, getattr(reader, "_tc_seen", 0))
    finally:
        await aio_close(writer)


class ErrorAsserts:
    """unittest mixin: the error bodies of tailcut serve's /api/... endpoints. The test class
    defines assert_api(r, status, attempts), which checks the status and X-Tailcut-Attempts."""

    def assert_error(self, r, status, code, attempts=None):
        self.assert_api(r, status, attempts)
        doc = r.json()
        self.assertIs(doc["success"], False, r)
        self.assertEqual(doc["error"], code, r)
        self.assertIsInstance(doc["message"], str, r)
        return doc

    def assert_upstream_failed(self, r, attempts):
        doc = self.assert_error(r, 502, "upstream_failed", attempts)
        self.assertEqual(doc["attempts"], attempts, r)


# ---- /metrics ------------------------------------------------------------------------------

def parse_metrics(text):
    """Prometheus text -> {(name, frozenset(labels)): value}."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        labels = {}
        name = head
        if "{" in head:
            name, _, rest = head.partition("{")
            for part in rest.rstrip("}").split(","):
                if part:
                    k, _, v = part.partition("=")
                    labels[k] = v.strip('"')
        out[(name, frozenset(labels.items()))] = float(value)
    return out


def metric(values, name, **labels):
    """One series of parse_metrics() output, 0.0 if absent."""
    return values.get((name, frozenset(labels.items())), 0.0)


# ---- processes for the benchmarks -----------------------------------------------------------

BENCH_LISTEN_RE = re.compile(rb"tailcut: listening on http://[^:]+:(\d+)")


def start_listening(binary, *args, timeout=20, listen="127.0.0.1:0"):
    """Starts `BINARY ARGS --listen LISTEN --access-log off` with stderr in a temporary file
    (a long benchmark never fills a pipe) and waits for its listening line. Returns (Popen,
    port); the file's name is Popen.err_path (remove it with forget()). Exits the script with
    the program's stderr if it does not start."""
    fd, path = tempfile.mkstemp(prefix="tailcut-bench-", suffix=".err")
    p = subprocess.Popen([binary, *args, "--listen", listen, "--access-log", "off"],
                         stdout=subprocess.DEVNULL, stderr=fd)
    os.close(fd)
    p.err_path = path
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and p.poll() is None:
        with open(path, "rb") as f:
            m = BENCH_LISTEN_RE.search(f.read())
        if m:
            return p, int(m.group(1))
        time.sleep(0.05)
    p.kill()
    p.wait()
    sys.exit("%s did not start: %s" % (" ".join(args[:1]), stderr_of(p)))


def stderr_of(p, limit=4000):
    """The last `limit` bytes a start_listening() process wrote to stderr."""
    try:
        with open(p.err_path, "rb") as f:
            return f.read()[-limit:].decode(errors="replace")
    except (OSError, AttributeError):
        return ""


def stop_all(procs, timeout=15):
    """SIGTERM every start_listening() process still running, then waits for each, killing one
    still there after timeout s."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def remove_err_files(procs):
    """Removes the stderr files of start_listening() processes (after stop_all)."""
    for p in procs:
        try:
            os.unlink(p.err_path)
        except (OSError, AttributeError):
            pass


def bench_binaries():
    """(tailcut, hedge_load) for a benchmark: $TAILCUT and $HEDGE_LOAD, else the release tree's
    (build/tailcut and build/bench/hedge_load)."""
    root = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
    tailcut = os.environ.get("TAILCUT", os.path.join(root, "build", "tailcut"))
    return tailcut, os.environ.get("HEDGE_LOAD", os.path.join(os.path.dirname(tailcut), "bench",
                                                              "hedge_load"))


def write_tail_points(lat, path):
    """Writes the points of a latency tail plot to path: for sorted latencies lat (us), "MS
    FRACTION" lines, FRACTION being the share of requests slower (at least 0.5 / n, so a log
    scale keeps the slowest); about 4,000 points spread over all, plus the last 2,000."""
    n = len(lat)
    with open(path, "w") as f:
        step = max(1, n // 4000)
        for k in sorted(set(range(0, n, step)) | set(range(max(0, n - 2000), n))):
            f.write("%.3f %.8f\n" % (lat[k] / 1000.0, max(1.0 - (k + 1) / n, 0.5 / n)))


# ---- `tailcut upstream`'s /stats ---------------------------------------------------------------

def attempts_by_value(stats):
    """{"1": n, "2": n, ..., "none": n}: the X-Tailcut-Attempt values the simulator saw, summed
    over its per_second entries."""
    total = {}
    for e in stats["per_second"]:
        for k, v in e.items():
            if k != "second":
                total[k] = total.get(k, 0) + v
    return total


# ---- test upstreams on http.server ---------------------------------------------------------------

class QuietHandler(http.server.BaseHTTPRequestHandler):
    """Base of the http.server handlers the tests run as upstreams: no log lines, and one call
    to answer with a body."""

    def send_body(self, status, body, content_type="application/json", headers=()):
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        if content_type is not None:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def serve_in_thread(httpd):
    """Runs httpd.serve_forever() on a daemon thread; returns the thread (see stop_server)."""
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    return thread


def stop_server(httpd, thread):
    """Stops what serve_in_thread started and closes its socket."""
    httpd.shutdown()
    httpd.server_close()
    thread.join(10)


# ---- a throw-away CA --------------------------------------------------------------------------

def openssl(d, *args):
    subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True, timeout=60)


def make_ca(d, name):
    """NAME.pem and NAME.key in directory d: a self-signed CA valid for two days."""
    openssl(d, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-keyout",
            name + ".key", "-out", name + ".pem", "-subj", "/CN=tailcut test " + name,
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")


def make_server_cert(d, ca):
    """server.pem and server.key in d: a certificate for 127.0.0.1 and localhost signed by the
    CA `ca` (made by make_ca)."""
    with open(os.path.join(d, "server.ext"), "w") as f:
        f.write("basicConstraints=CA:FALSE\n"
                "keyUsage=critical,digitalSignature,keyEncipherment\n"
                "extendedKeyUsage=serverAuth\n"
                "subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl(d, "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key",
            "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    openssl(d, "x509", "-req", "-in", "server.csr", "-CA", ca + ".pem", "-CAkey", ca + ".key",
            "-CAcreateserial", "-days", "2", "-out", "server.pem", "-extfile", "server.ext")


def tls_dir(prefix, *other_cas):
    """A temp dir (remove it with shutil.rmtree) holding a CA `ca`, the CAs named in other_cas,
    and server.pem/server.key signed by `ca` (make_ca, make_server_cert). Raises
    unittest.SkipTest when the openssl CLI is not installed."""
    if shutil.which("openssl") is None:
        raise unittest.SkipTest("the openssl CLI is not installed")
    d = tempfile.mkdtemp(prefix=prefix)
    make_ca(d, "ca")
    for name in other_cas:
        make_ca(d, name)
    make_server_cert(d, "ca")
    return d


# A TLS upstream shared by the https tests of serve and fetch.
TLS_BODY = b'{"ok":true}'


class TLSHandler(QuietHandler):
    """Answers every GET with TLS_BODY and records its path (TLSServer.paths)."""
    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802 - http.server's naming
        with self.server.lock:
            self.server.paths.append(self.path)
        self.send_body(200, TLS_BODY)


class TLSServer(http.server.ThreadingHTTPServer):
    """Accepts plain TCP; each connection's handshake runs in its own handler thread, so a
    client that rejects the certificate cannot stall the accept loop."""
    daemon_threads = True

    def __init__(self, ctx):
        super().__init__(("127.0.0.1", 0), TLSHandler)
        self.ctx = ctx
        self.lock = threading.Lock()
        self.paths = []
        self.handshake_failures = 0

    def finish_request(self, request, client_address):
        request.settimeout(10)
        try:
            tls = self.ctx.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            with self.lock:
                self.handshake_failures += 1
            return
        try:
            super().finish_request(tls, client_address)
        finally:
            try:
                tls.close()
            except OSError:
                pass

    def handle_error(self, request, client_address):
        pass  # a client that leaves mid-request is not a test failure


def tls_server_context(d, cert="server.pem", key="server.key"):
    """A server-side ssl.SSLContext with the certificate and key in directory d."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(os.path.join(d, cert), os.path.join(d, key))
    return ctx

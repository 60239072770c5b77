#!/usr/bin/env python3
"""TLS (and, when nginx is installed, HTTP/2) through the pooled client.

Makes a throw-away CA and a server certificate for 127.0.0.1 with the openssl CLI in a temp dir,
serves HTTPS from a Python `ssl` server on 127.0.0.1 port 0, and runs the compiled
docs/examples/client_get against it:
  - default settings verify peers: the self-signed chain fails with ETLS;
  - --cacert with the throw-away CA succeeds (HTTP/1.1, the Python server offers no ALPN);
  - --cacert with an unrelated CA fails with ETLS; --insecure succeeds.
If nginx is installed, it serves the same certificate with `http2` and the client must negotiate
HTTP/2 through ALPN and multiplex several requests over one connection.

The example binary is found next to $TAILCUT_BIN (both are built into the build directory), or
at $CLIENT_GET_BIN.
"""
import http.server
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

WATCHDOG_S = 120
PASSED = 0
FAILED = 0
SKIPPED = 0


def check(name, cond, detail=""):
    global PASSED, FAILED
    if cond:
        PASSED += 1
        print(f"ok   {name}")
    else:
        FAILED += 1
        print(f"FAIL {name} {detail}")


def find_client_get():
    explicit = os.environ.get("CLIENT_GET_BIN")
    if explicit:
        return explicit
    tailcut = os.environ.get("TAILCUT_BIN")
    if tailcut:
        return os.path.join(os.path.dirname(os.path.abspath(tailcut)), "example_client_get")
    sys.exit("test_client_tls: set TAILCUT_BIN or CLIENT_GET_BIN")


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(d, name):
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-keyout", f"{name}.key", "-out", f"{name}.pem", "-subj", f"/CN=tailcut test {name}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)


def make_certs(d):
    make_ca(d, "ca")
    make_ca(d, "other-ca")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out",
            "server.csr", "-subj", "/CN=127.0.0.1", cwd=d)
    with open(os.path.join(d, "ext.cnf"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-out", "server.pem", "-extfile", "ext.cnf", cwd=d)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = b'{"tls": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def start_https(d):
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(os.path.join(d, "server.pem"), os.path.join(d, "server.key"))
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def run_client(binary, *args):
    p = subprocess.run([binary, "--timeout", "10000", *args], capture_output=True, text=True,
                       timeout=60)
    return p.returncode, p.stdout + p.stderr


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_http2_with_nginx(binary, d):
    global SKIPPED
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx")
                                      else None)
    if nginx is None:
        SKIPPED += 1
        print("skip http2 through nginx: nginx is not installed (scripts/install-deps --bench)")
        return
    port = free_port()
    conf = os.path.join(d, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""
worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log;
events {{ worker_connections 256; }}
http {{
    log_format conn '$connection';
    access_log {d}/access.log conn;
    client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d};
    uwsgi_temp_path {d}; scgi_temp_path {d};
    server {{
        listen 127.0.0.1:{port} ssl http2;
        ssl_certificate {d}/server.pem;
        ssl_certificate_key {d}/server.key;
        location / {{ default_type application/json; return 200 '{{"h2": true}}'; }}
    }}
}}
""")
    proc = subprocess.Popen([nginx, "-c", conf, "-p", d], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        urls = [f"https://127.0.0.1:{port}/{i}" for i in range(8)]
        rc, out = run_client(binary, "--cacert", os.path.join(d, "ca.pem"), *urls)
        check("http2: every request answered", rc == 0 and out.count("status=200") == 8, out)
        check("http2: negotiated through ALPN", out.count("http=20") == 8, out)
        with open(os.path.join(d, "access.log")) as f:
            conns = set(f.read().split())
        check("http2: 8 concurrent requests multiplexed on one connection", len(conns) == 1,
              f"connections used: {sorted(conns)}")
        rc, out = run_client(binary, "--http1", "--cacert", os.path.join(d, "ca.pem"), urls[0])
        check("http2 off: HTTP/1.1 even when offered", rc == 0 and "http=11" in out, out)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)


def main():
    signal.signal(signal.SIGALRM, lambda *_: (print("FAIL watchdog"), os._exit(1)))
    signal.alarm(WATCHDOG_S)
    binary = find_client_get()
    if not os.access(binary, os.X_OK):
        sys.exit(f"test_client_tls: {binary} is not built (target example_client_get)")
    with tempfile.TemporaryDirectory(prefix="tailcut-tls-") as d:
        make_certs(d)
        srv = start_https(d)
        url = f"https://127.0.0.1:{srv.server_address[1]}/"
        try:
            rc, out = run_client(binary, url)
            check("self-signed chain rejected by default", rc == 1 and "error=ETLS" in out, out)
            rc, out = run_client(binary, "--cacert", os.path.join(d, "ca.pem"), url)
            check("trusted with ca_file", rc == 0 and "status=200" in out and "http=11" in out,
                  out)
            check("body received", "body=13" in out, out)
            rc, out = run_client(binary, "--cacert", os.path.join(d, "other-ca.pem"), url)
            check("unrelated CA rejected", rc == 1 and "error=ETLS" in out, out)
            rc, out = run_client(binary, "--insecure", url)
            check("insecure skips verification", rc == 0 and "status=200" in out, out)
            rc, out = run_client(binary, "--cacert", os.path.join(d, "missing.pem"), url)
            check("missing CA file is a TLS error", rc == 1 and "error=ETLS" in out, out)
        finally:
            srv.shutdown()
            srv.server_close()
        test_http2_with_nginx(binary, d)
    print(f"{PASSED} passed, {FAILED} failed, {SKIPPED} skipped")
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())

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
at $CLIENT_GET_BIN. nginx gets its listening socket already bound to 127.0.0.1 port 0 (inherited
through its NGINX environment variable), so no port is picked and released first.
"""
import http.server
import os
import shutil
import signal
import socket
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import tchelpers as th  # noqa: E402


def find_client_get():
    explicit = os.environ.get("CLIENT_GET_BIN")
    if explicit:
        return explicit
    tailcut = os.environ.get("TAILCUT_BIN")
    if tailcut:
        return os.path.join(os.path.dirname(os.path.abspath(tailcut)), "example_client_get")
    raise unittest.SkipTest("set TAILCUT_BIN or CLIENT_GET_BIN")


class Handler(th.QuietHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802 - http.server's naming
        self.send_body(200, b'{"tls": true}')


def find_nginx():
    if shutil.which("nginx"):
        return shutil.which("nginx")
    return "/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None


NGINX_CONF = """
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
"""


class ClientTLS(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if shutil.which("openssl") is None:
            raise unittest.SkipTest("the openssl CLI is not installed")
        cls.binary = find_client_get()
        if not os.access(cls.binary, os.X_OK):
            raise AssertionError("%s is not built (target example_client_get)" % cls.binary)
        cls.dir = th.tls_dir("tailcut-tls-", "other-ca")
        cls.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = th.tls_server_context(cls.dir)
        cls.httpd.socket = ctx.wrap_socket(cls.httpd.socket, server_side=True)
        cls.thread = th.serve_in_thread(cls.httpd)
        cls.url = "https://127.0.0.1:%d/" % cls.httpd.server_address[1]

    @classmethod
    def tearDownClass(cls):
        th.stop_server(cls.httpd, cls.thread)
        shutil.rmtree(cls.dir, ignore_errors=True)

    @classmethod
    def path(cls, name):
        return os.path.join(cls.dir, name)

    def run_client(self, *args):
        p = subprocess.run([self.binary, "--timeout", "10000", *args], capture_output=True,
                           text=True, timeout=60 * th.SLOW)
        return p.returncode, p.stdout + p.stderr

    def check(self, what, cond, out):
        self.assertTrue(cond, "%s: %s" % (what, out))

    def test_default_settings_reject_a_self_signed_chain(self):
        rc, out = self.run_client(self.url)
        self.check("self-signed chain rejected", rc == 1 and "error=ETLS" in out, out)

    def test_trusted_with_ca_file(self):
        rc, out = self.run_client("--cacert", self.path("ca.pem"), self.url)
        self.check("trusted with ca_file", rc == 0 and "status=200" in out and "http=11" in out,
                   out)
        self.check("body received", "body=13" in out, out)

    def test_unrelated_ca_rejected(self):
        rc, out = self.run_client("--cacert", self.path("other-ca.pem"), self.url)
        self.check("unrelated CA rejected", rc == 1 and "error=ETLS" in out, out)

    def test_insecure_skips_verification(self):
        rc, out = self.run_client("--insecure", self.url)
        self.check("insecure skips verification", rc == 0 and "status=200" in out, out)

    def test_missing_ca_file_is_a_tls_error(self):
        rc, out = self.run_client("--cacert", self.path("missing.pem"), self.url)
        self.check("missing CA file is a TLS error", rc == 1 and "error=ETLS" in out, out)

    def test_http2_through_nginx(self):
        nginx = find_nginx()
        if nginx is None:
            self.skipTest("nginx is not installed (scripts/install-deps --bench)")
        # The socket is bound here and handed to nginx already listening: no port race.
        lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(128)
        port = lsock.getsockname()[1]
        conf = self.path("nginx.conf")
        with open(conf, "w") as f:
            f.write(NGINX_CONF.format(d=self.dir, port=port))
        env = dict(os.environ, NGINX="%d;" % lsock.fileno())
        proc = subprocess.Popen([nginx, "-c", conf, "-p", self.dir], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True, env=env,
                                pass_fds=(lsock.fileno(),))
        lsock.close()
        try:
            # Connections queue on the inherited socket until nginx accepts them; wait for the
            # pid file so that a failed start says so rather than timing out a request.
            pid = self.path("nginx.pid")
            self.assertTrue(th.wait_for(lambda: os.path.exists(pid) or proc.poll() is not None,
                                        10 * th.SLOW) and proc.poll() is None,
                            "nginx did not start")
            urls = ["https://127.0.0.1:%d/%d" % (port, i) for i in range(8)]
            rc, out = self.run_client("--cacert", self.path("ca.pem"), *urls)
            self.check("http2: every request answered", rc == 0 and out.count("status=200") == 8,
                       out)
            self.check("http2: negotiated through ALPN", out.count("http=20") == 8, out)
            with open(self.path("access.log")) as f:
                conns = set(f.read().split())
            self.check("http2: 8 concurrent requests multiplexed on one connection",
                       len(conns) == 1, "connections used: %s" % sorted(conns))
            rc, out = self.run_client("--http1", "--cacert", self.path("ca.pem"), urls[0])
            self.check("http2 off: HTTP/1.1 even when offered", rc == 0 and "http=11" in out,
                       out)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)


if __name__ == "__main__":
    watchdog = th.Watchdog(120 * th.SLOW)
    unittest.main(verbosity=2)

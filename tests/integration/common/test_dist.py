#!/usr/bin/env python3
"""dist/: the systemd unit passes `systemd-analyze verify` (on a copy whose ExecStart runs the
built binary; no running systemd is needed) and allows for the whole drain; the Kubernetes
manifest is well-formed YAML whose probes, grace period and Service fit the flags it passes.
Every flag either file gives tailcut is one its man page documents."""
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import unittest

import yaml

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from tchelpers import SLOW, Proc, Watchdog  # noqa: E402
from test_manpages import man_flags  # noqa: E402

DIST = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..",
                                    "dist"))
DRAIN_DEFAULT_MS = 10000  # --drain-timeout's default
SHUTDOWN_DELAY_DEFAULT_MS = 0


def serve_flags(args):
    """{--flag: value} of a `serve ...` argument list (--name=VALUE or --name VALUE)."""
    assert args[0] == "serve", args
    out, i = {}, 1
    while i < len(args):
        a = args[i]
        assert a.startswith("--"), a
        if "=" in a:
            name, value = a.split("=", 1)
        else:
            name, value = a, args[i + 1]
            i += 1
        out[name] = value
        i += 1
    return out


def stop_budget_ms(flags):
    return int(flags.get("--shutdown-delay", SHUTDOWN_DELAY_DEFAULT_MS)) + \
        int(flags.get("--drain-timeout", DRAIN_DEFAULT_MS))


def unit_service_section(text):
    """[Service] as {key: [values]}, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", text)
    section, out = None, {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line
        elif section == "[Service]":
            k, v = line.split("=", 1)
            out.setdefault(k, []).append(v)
    return out


class SystemdUnitTest(unittest.TestCase):
    def setUp(self):
        self.addCleanup(Watchdog(60 * SLOW).cancel)
        with open(os.path.join(DIST, "tailcut.service"), encoding="utf-8") as f:
            self.text = f.read()
        self.svc = unit_service_section(self.text)
        self.argv = shlex.split(self.svc["ExecStart"][0])

    def verify(self, text):
        d = tempfile.mkdtemp(prefix="tc-unit-")
        self.addCleanup(shutil.rmtree, d, True)
        path = os.path.join(d, "tailcut.service")
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return subprocess.run(["systemd-analyze", "verify", "--man=no", "--generators=no", path],
                              capture_output=True, text=True, timeout=60 * SLOW)

    def test_systemd_analyze_verify(self):
        if not shutil.which("systemd-analyze"):
            self.skipTest("systemd-analyze not installed (Debian package systemd): "
                          "dist/tailcut.service NOT verified")
        binary = os.path.abspath(Proc.bin())
        text = self.text.replace("ExecStart=" + self.argv[0], "ExecStart=" + binary, 1)
        self.assertIn("ExecStart=" + binary + " serve", text)
        r = self.verify(text)
        self.assertEqual((r.returncode, r.stdout + r.stderr), (0, ""))
        # The check sees mistakes: systemd only warns about these, so any output fails above.
        r = self.verify(text.replace("NoNewPrivileges=yes", "NoNewPrivileges=yes\nNoSuchKey=1")
                        .replace("ProtectSystem=strict", "ProtectSystem=very"))
        self.assertIn("NoSuchKey", r.stdout + r.stderr)
        self.assertIn("protect system value", r.stdout + r.stderr)

    def test_notify_signals_and_hardening(self):
        for key, value in (("Type", "notify"), ("KillSignal", "SIGTERM"), ("DynamicUser", "yes"),
                           ("ProtectSystem", "strict"), ("ProtectHome", "yes"),
                           ("PrivateTmp", "yes"), ("NoNewPrivileges", "yes"),
                           ("LogsDirectory", "tailcut")):
            self.assertEqual(self.svc.get(key), [value], key)
        self.assertIn("AF_UNIX", self.svc["RestrictAddressFamilies"][0])  # $NOTIFY_SOCKET
        # reload: the configuration file again
        self.assertEqual(self.svc["ExecReload"], ["/bin/kill -HUP $MAINPID"])

    def test_example_configuration_checks(self):
        flags = serve_flags(self.argv[1:])
        self.assertEqual(flags["--config"], "/etc/tailcut/tailcut.yaml")
        p = subprocess.run([Proc.bin(), "serve", "--config", os.path.join(DIST, "tailcut.yaml"),
                            "--check"], capture_output=True, timeout=30 * SLOW)
        self.assertEqual((p.returncode, p.stderr), (0, b"tailcut: configuration ok: 2 routes\n"))

    def test_stop_timeout_allows_for_the_drain(self):
        flags = serve_flags(self.argv[1:])
        timeout_ms = int(self.svc["TimeoutStopSec"][0]) * 1000
        self.assertGreater(timeout_ms, stop_budget_ms(flags))
        # The access log goes to the directory systemd creates for the dynamic user.
        self.assertTrue(flags["--access-log"].startswith("/var/log/tailcut/"))
        self.assertEqual(set(flags) - man_flags("tailcut-serve"), set())


class KubernetesTest(unittest.TestCase):
    def setUp(self):
        self.addCleanup(Watchdog(60 * SLOW).cancel)
        with open(os.path.join(DIST, "kubernetes.yaml"), encoding="utf-8") as f:
            self.docs = {d["kind"]: d for d in yaml.safe_load_all(f)}
        self.assertEqual(sorted(self.docs), ["ConfigMap", "Deployment", "Service"])
        self.pod = self.docs["Deployment"]["spec"]["template"]
        self.container = self.pod["spec"]["containers"][0]
        self.flags = serve_flags(self.container["args"])

    def test_probes(self):
        ports = {p["name"]: p["containerPort"] for p in self.container["ports"]}
        ready, live = self.container["readinessProbe"], self.container["livenessProbe"]
        self.assertEqual(ready["httpGet"]["path"], "/readyz")
        self.assertEqual(live["httpGet"]["path"], "/healthz")
        # Both probe the main listener, the one the Service sends traffic to.
        listen_port = int(self.flags["--listen"].rsplit(":", 1)[1])
        for probe in (ready, live):
            self.assertEqual(ports[probe["httpGet"]["port"]], listen_port)

    def test_grace_period_allows_for_the_drain(self):
        self.assertGreater(int(self.flags["--shutdown-delay"]), 0)
        grace_ms = self.pod["spec"]["terminationGracePeriodSeconds"] * 1000
        self.assertGreater(grace_ms, stop_budget_ms(self.flags))

    def test_service_selects_the_pods(self):
        svc = self.docs["Service"]["spec"]
        labels = self.pod["metadata"]["labels"]
        self.assertEqual(self.docs["Deployment"]["spec"]["selector"]["matchLabels"], labels)
        for k, v in svc["selector"].items():
            self.assertEqual(labels.get(k), v)
        names = [p["name"] for p in self.container["ports"]]
        for p in svc["ports"]:
            self.assertIn(p["targetPort"], names)

    def test_flags_are_documented(self):
        self.assertEqual(set(self.flags) - man_flags("tailcut-serve"), set())

    def test_config_map_is_the_configuration(self):
        # mounted where --config reads it, and valid
        mount = self.container["volumeMounts"][0]
        volume = self.pod["spec"]["volumes"][0]
        self.assertEqual(volume["configMap"]["name"], self.docs["ConfigMap"]["metadata"]["name"])
        self.assertEqual(self.flags["--config"], mount["mountPath"] + "/tailcut.yaml")
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "tailcut.yaml")
            with open(path, "w") as f:
                f.write(self.docs["ConfigMap"]["data"]["tailcut.yaml"])
            p = subprocess.run([Proc.bin(), "serve", "--config", path, "--check"],
                               capture_output=True, timeout=30 * SLOW)
        self.assertEqual((p.returncode, p.stderr), (0, b"tailcut: configuration ok: 1 route\n"))


if __name__ == "__main__":
    unittest.main(verbosity=2)

"""Automatic certificates against a real ACME server: Debian's pebble.

The test starts pebble-challtestsrv as a DNS server that answers every name
with 127.0.0.1, and pebble (its HTTPS certificate from a throwaway CA, its
http-01 validation port set to the daemon's HTTP listener, certificates valid
for a few seconds). The daemon gets certificates for the services' domains,
serving each challenge from its own proxy; the test checks what it serves
over HTTPS (chain verified against pebble's root), the renewal (a new serial
while an open connection keeps working), the HTTP->HTTPS redirect, the
files' modes, `davit certs --json`, a user-supplied certificate, and that a
failing CA is visible in `davit certs` and the log."""

import http.client
import json
import os
import shutil
import signal
import ssl
import stat
import subprocess
import time
import urllib.request

import pytest

import tlsutil
from davitctl import Daemon
from upstreams import free_port, wait_until

pytest_plugins = ["davitctl"]

VALIDITY = 15  # seconds: renewal comes after two thirds of it

COMPOSE = """\
name: tlsapp
services:
  web:
    x-davit:
      run: /usr/bin/python3 -m http.server $$PORT --bind 127.0.0.1
      port: 3000
      domains: [app.test, www.app.test, web.tlsapp.localhost]
"""


def need(binary):
    path = shutil.which(binary)
    if not path:
        pytest.fail(f"{binary} is missing: run scripts/install-deps.sh (Debian package pebble)")
    return path


class Pebble:
    def __init__(self, workdir, http_port, ca, tls_port=None):
        self.dir = str(workdir)
        self.port, self.mgmt, self.dns = free_port(), free_port(), free_port()
        self.http_port = http_port
        cert, key = ca.leaf("localhost", ["localhost", "127.0.0.1"], out_dir=os.path.join(self.dir, "https"))
        self.config = os.path.join(self.dir, "pebble.json")
        with open(self.config, "w") as f:
            json.dump({"pebble": {
                "listenAddress": f"127.0.0.1:{self.port}", "managementListenAddress": f"127.0.0.1:{self.mgmt}",
                "certificate": cert, "privateKey": key, "httpPort": http_port, "tlsPort": tls_port or free_port(),
                "ocspResponderURL": "", "externalAccountBindingRequired": False,
                "certificateValidityPeriod": VALIDITY}}, f)
        self.ca_bundle = ca.cert
        self.procs = []

    @property
    def directory(self):
        return f"https://127.0.0.1:{self.port}/dir"

    def start(self):
        dns_log = open(os.path.join(self.dir, "challtestsrv.log"), "ab")
        self.procs.append(subprocess.Popen(
            [need("pebble-challtestsrv"), "-dns01", f"127.0.0.1:{self.dns}", "-http01", "", "-https01", "",
             "-tlsalpn01", "", "-management", f"127.0.0.1:{free_port()}", "-defaultIPv6", ""],
            stdout=dns_log, stderr=dns_log, stdin=subprocess.DEVNULL))
        self.log_path = os.path.join(self.dir, "pebble.log")
        log = open(self.log_path, "ab")
        env = dict(os.environ, PEBBLE_VA_NOSLEEP="1")
        self.pebble = subprocess.Popen([need("pebble"), "-config", self.config, "-dnsserver", f"127.0.0.1:{self.dns}"],
                                       stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=env)
        self.procs.append(self.pebble)
        ctx = ssl.create_default_context(cafile=self.ca_bundle)

        def up():
            try:
                urllib.request.urlopen(self.directory, context=ctx, timeout=2).read()
                return True
            except OSError:
                return False
        wait_until(up, 20, interval=0.1, what="pebble to serve its directory")
        return self

    def root_pem(self):
        """Pebble's (per-run) issuing root, to verify the chains it signed."""
        ctx = ssl.create_default_context(cafile=self.ca_bundle)
        pem = urllib.request.urlopen(f"https://127.0.0.1:{self.mgmt}/roots/0", context=ctx, timeout=5).read()
        path = os.path.join(self.dir, "pebble-root.pem")
        with open(path, "wb") as f:
            f.write(pem)
        return path

    def stop_pebble(self):
        if self.pebble.poll() is None:
            self.pebble.send_signal(signal.SIGTERM)
            self.pebble.wait(10)

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(5)


def start_env(tmp_path, alpn=False):
    """pebble + a daemon that uses it; with alpn, pebble validates tls-alpn-01 on the daemon's
    HTTPS port and its http-01 port is one where nothing listens."""
    ca = tlsutil.TestCA(tmp_path / "ca")
    http_port, https_port = free_port(), free_port()
    pebble = Pebble(tmp_path, free_port() if alpn else http_port, ca, tls_port=https_port if alpn else None).start()
    user_cert, user_key = ca.leaf("user.test", out_dir=str(tmp_path / "user"))
    d = Daemon(tmp_path, port=http_port, args=[
        "--https", f"127.0.0.1:{https_port}", "--acme-directory", pebble.directory,
        "--acme-ca-bundle", pebble.ca_bundle, "--acme-email", "ops@app.test", "--acme-retry", "1s",
        "--cert", f"user.test={user_cert},{user_key}"] + (["--acme-challenge", "tls-alpn-01"] if alpn else []))
    d.https_port = https_port
    d.user_ca = ca.cert
    try:
        d.start()
    except BaseException:
        pebble.stop()
        raise
    app = tmp_path / "app"
    app.mkdir()
    (app / "compose.yml").write_text(COMPOSE)
    d.compose = str(app / "compose.yml")
    return d, pebble


def stop_env(d, pebble):
    problem = d.stop()
    pebble.stop()
    if problem:
        pytest.fail(f"{problem}\n{d.where()}", pytrace=False)


@pytest.fixture
def acme_env(tmp_path):
    d, pebble = start_env(tmp_path)
    yield d, pebble
    stop_env(d, pebble)


def certs(d):
    r = d.cli("certs", "--json")
    return {c["domain"]: c for c in json.loads(r.stdout)["certificates"]}


def wait_cert(d, domain, pred, timeout, what):
    last = {}

    def check():
        last.update(certs(d))
        return domain in last and pred(last[domain])
    try:
        wait_until(check, timeout, interval=0.2, what=what)
    except AssertionError:
        raise AssertionError(f"{what}: {last.get(domain)}\n{d.where()}")
    return last[domain]


def test_acme_issue_serve_renew_redirect(acme_env):
    d, pebble = acme_env
    d.deploy(d.compose)
    app = wait_cert(d, "app.test", lambda c: c["status"] == "valid", 30, "a certificate for app.test")
    www = wait_cert(d, "www.app.test", lambda c: c["status"] == "valid", 30, "a certificate for www.app.test")
    listed = certs(d)
    assert "web.tlsapp.localhost" not in listed, "*.localhost names never go to a CA"
    assert app["issuer"].startswith("Pebble Intermediate CA") and app["source"] == "acme"
    assert app["last_error"] is None and app["failures"] == 0
    assert 0 < app["not_after_unix"] - app["not_before"] <= VALIDITY + 60
    assert listed["user.test"]["status"] == "user" and listed["user.test"]["issuer"] == "davit test CA"

    # served over HTTPS, verified against pebble's root, per SNI name
    root = pebble.root_pem()
    status, _, body, conn = tlsutil.https_get(d.https_port, "app.test", "/", cafile=root)
    assert status == 200 and b"Directory listing" in body
    assert tlsutil.cert_serial(d.https_port, "app.test") == app["serial"].lstrip("0").upper()
    assert tlsutil.cert_serial(d.https_port, "www.app.test") == www["serial"].lstrip("0").upper()
    status, _, _, uconn = tlsutil.https_get(d.https_port, "user.test", "/", cafile=d.user_ca)
    uconn.close()  # the user certificate is served too (no route for user.test: 404)
    for v in ("tls1", "tls1_1"):
        assert not tlsutil.s_client(d.https_port, "app.test", v).ok
    assert tlsutil.s_client(d.https_port, "app.test", "tls1_2").ok

    # files: keys 0600, directories 0700
    certs_dir = os.path.join(d.state_dir, "certs")
    assert stat.S_IMODE(os.stat(certs_dir).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(os.path.join(certs_dir, "account.key")).st_mode) == 0o600
    for dom in ("app.test", "www.app.test"):
        assert stat.S_IMODE(os.stat(os.path.join(certs_dir, dom)).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(os.path.join(certs_dir, dom, "privkey.pem")).st_mode) == 0o600

    # HTTP -> HTTPS, except ACME challenges
    h = http.client.HTTPConnection("127.0.0.1", d.port, timeout=5)
    h.request("GET", "/a/b?c=d", headers={"Host": "app.test"})
    r = h.getresponse()
    r.read()
    assert r.status == 301 and r.getheader("Location") == f"https://app.test:{d.https_port}/a/b?c=d"
    h.request("GET", "/.well-known/acme-challenge/not-a-token", headers={"Host": "app.test"})
    r = h.getresponse()
    r.read()
    assert r.status == 404, "an unknown token goes to the app (python's http.server: 404), not to https"
    h.request("GET", "/", headers={"Host": "web.tlsapp.localhost"})
    r = h.getresponse()
    r.read()
    assert r.status == 200, "hosts without a certificate are served over HTTP"

    # renewal: a new certificate before the old one expires; the open connection keeps working
    renewed = wait_cert(d, "app.test", lambda c: c["serial"] != app["serial"] and c["status"] == "valid",
                        VALIDITY + 20, "app.test renewed")
    assert renewed["not_after_unix"] > app["not_after_unix"]
    assert renewed["not_after_unix"] - app["not_after_unix"] < VALIDITY + 5
    wait_until(lambda: tlsutil.cert_serial(d.https_port, "app.test") == renewed["serial"].lstrip("0").upper(),
               10, interval=0.1, what="the renewed certificate to be served")
    status, _, _, _ = tlsutil.https_get(d.https_port, "app.test", "/", conn=conn)
    assert status == 200
    conn.close()
    assert "certificate for app.test issued by Pebble" in d.log()

    # a CA that is gone: the renewal fails, visibly, with retries; the current certificate stays
    pebble.stop_pebble()
    failed = wait_cert(d, "app.test", lambda c: c["status"] == "failed" and c["failures"] >= 2,
                       VALIDITY + 20, "the failed renewal in davit certs")
    assert failed["last_error"] and "127.0.0.1" in failed["last_error"], failed
    assert failed["next_attempt"] is not None
    assert failed["serial"] == renewed["serial"]
    assert "certificate for app.test failed (attempt" in d.log()
    text = d.cli("certs").stdout
    assert "app.test" in text and "failed" in text and "ISSUER" in text


def test_acme_tls_alpn_01(tmp_path):
    """--acme-challenge tls-alpn-01: pebble validates on the HTTPS listener (RFC 8737)."""
    d, pebble = start_env(tmp_path, alpn=True)
    try:
        d.deploy(d.compose)
        app = wait_cert(d, "app.test", lambda c: c["status"] == "valid", 30, "a certificate via tls-alpn-01")
        with open(pebble.log_path) as f:
            log = f.read()
        # http-01 would have gone to a port where nothing listens: pebble never tried it
        assert "Attempting to validate w/ HTTP" not in log and "set VALID by completed challenge" in log
        assert "TLS-ALPN-01 challenge for app.test published" in d.log()
        root = pebble.root_pem()
        status, _, _, conn = tlsutil.https_get(d.https_port, "app.test", "/", cafile=root)
        assert status == 200
        conn.close()
        assert tlsutil.cert_serial(d.https_port, "app.test") == app["serial"].lstrip("0").upper()
        # a client offering acme-tls/1 outside a validation gets the normal certificate
        sc = tlsutil.s_client(d.https_port, "app.test", extra=["-alpn", "acme-tls/1"])
        assert sc.ok and sc.alpn is None and "Pebble Intermediate" in sc.out
    finally:
        stop_env(d, pebble)


def test_acme_off_without_port_80(tmp_path):
    """Without --acme-directory and with HTTP off port 80, no CA is contacted."""
    https_port = free_port()
    d = Daemon(tmp_path, args=["--https", f"127.0.0.1:{https_port}"]).start()
    try:
        app = tmp_path / "app"
        app.mkdir()
        (app / "compose.yml").write_text(COMPOSE)
        d.deploy(str(app / "compose.yml"))
        c = certs(d)
        assert c["app.test"]["status"] == "acme-off" and c["app.test"]["issuer"] is None
        j = json.loads(d.cli("certs", "--json").stdout)
        assert j["acme"]["enabled"] is False
        assert "ACME off" in d.log() and "requesting a certificate" not in d.log()
    finally:
        problem = d.stop()
    assert problem is None, problem


def test_user_certificate_from_compose(tmp_path):
    """x-davit.tls {cert, key}: served for the service's domains, listed as user, never sent to a CA."""
    ca = tlsutil.TestCA(tmp_path / "ca")
    https_port = free_port()
    d = Daemon(tmp_path, args=["--https", f"127.0.0.1:{https_port}", "--acme"]).start()
    try:
        app = tmp_path / "app"
        (app / "tls").mkdir(parents=True)
        ca.leaf("shop.test", out_dir=str(app / "tls"))
        (app / "compose.yml").write_text(COMPOSE.replace(
            "domains: [app.test, www.app.test, web.tlsapp.localhost]",
            "domains: [shop.test]\n      tls: {cert: tls/fullchain.pem, key: tls/privkey.pem}"))
        d.deploy(str(app / "compose.yml"))
        c = certs(d)["shop.test"]
        assert c["status"] == "user" and c["source"] == "user" and c["issuer"] == "davit test CA", c
        status, _, body, conn = tlsutil.https_get(https_port, "shop.test", "/", cafile=ca.cert)
        assert status == 200 and b"Directory listing" in body
        conn.close()
        assert "requesting a certificate for shop.test" not in d.log()
        h = http.client.HTTPConnection("127.0.0.1", d.port, timeout=5)
        h.request("GET", "/x", headers={"Host": "shop.test"})
        r = h.getresponse()
        r.read()
        assert r.status == 301 and r.getheader("Location") == f"https://shop.test:{https_port}/x"
        # new files at the same paths are served after the next route change (here: a restart)
        before = tlsutil.cert_serial(https_port, "shop.test")
        ca.leaf("shop.test", out_dir=str(app / "tls"))
        d.cli("restart", "web")
        wait_until(lambda: tlsutil.cert_serial(https_port, "shop.test") != before, 20, interval=0.2,
                   what="the replaced x-davit.tls certificate to be served")
        # half a tls block is a compose error with its position
        (app / "compose.yml").write_text(COMPOSE.replace(
            "domains: [app.test, www.app.test, web.tlsapp.localhost]",
            "domains: [shop.test]\n      tls: {cert: tls/fullchain.pem}"))
        r = d.deploy(str(app / "compose.yml"), check=False)
        assert r.returncode != 0 and "compose.yml:8:" in r.out and "x-davit.tls needs both" in r.out, r.out
    finally:
        problem = d.stop()
    assert problem is None, problem


def test_up_passes_https(tmp_path):
    """`davit up --https ADDR` gives the daemon it starts an HTTPS listener."""
    from davitctl import DAVIT_BIN, clean_env
    ca = tlsutil.TestCA(tmp_path / "ca")
    port, https_port = free_port(), free_port()
    d = Daemon(tmp_path, port=port, name="up")  # started by `davit up`, stopped by PID below
    d.log_path = os.path.join(d.state_dir, "run", "daemon.log")
    app = tmp_path / "app"
    (app / "tls").mkdir(parents=True)
    ca.leaf("shop.test", out_dir=str(app / "tls"))
    (app / "compose.yml").write_text(COMPOSE.replace(
        "domains: [app.test, www.app.test, web.tlsapp.localhost]",
        "domains: [shop.test]\n      tls: {cert: tls/fullchain.pem, key: tls/privkey.pem}"))
    try:
        r = subprocess.run([DAVIT_BIN, "up", "--state-dir", d.state_dir, "--http", f"127.0.0.1:{port}",
                            "--https", f"127.0.0.1:{https_port}"], capture_output=True, text=True, timeout=120,
                           cwd=str(app), env=clean_env())
        pid_file = os.path.join(d.state_dir, "run", "davit.pid")
        if os.path.exists(pid_file):
            with open(pid_file) as f:
                d.external_pids.append(int(f.read().strip()))
        assert r.returncode == 0, f"`davit up` exited {r.returncode}: {r.stdout}{r.stderr}\n{d.where()}"
        status, _, body, conn = tlsutil.https_get(https_port, "shop.test", "/", cafile=ca.cert)
        conn.close()
        assert status == 200 and b"Directory listing" in body
    finally:
        problem = d.stop()
    assert problem is None, problem

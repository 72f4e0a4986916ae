"""TLS helpers for the end-to-end tests (test_tls_proxy.py, test_acme.py).

- `TestCA(dir)`        a throwaway CA made with the `openssl` CLI; `.leaf(name,
                       sans)` issues a P-256 certificate (files cert, key)
- `s_client(...)`      runs `openssl s_client` against 127.0.0.1:PORT and
                       returns what it printed, parsed (`.ok`, `.subject`,
                       `.protocol`, `.alpn`, `.reused`, `.alert`)
- `cert_serial(...)`   the serial of the certificate a server presents for a name
- `https_conn(...)`    an http.client.HTTPSConnection to 127.0.0.1:PORT that
                       sends `host` as SNI and Host, trusting `cafile`
"""

import http.client
import os
import re
import socket
import ssl
import subprocess
import time


def run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=30, **kw)
    if r.returncode != 0:
        raise AssertionError(f"`{' '.join(cmd)}` failed ({r.returncode}): {r.stderr}")
    return r


class TestCA:
    __test__ = False  # not a pytest class

    def __init__(self, directory, name="davit test CA"):
        self.dir = str(directory)
        os.makedirs(self.dir, exist_ok=True)
        self.key = os.path.join(self.dir, "ca.key")
        self.cert = os.path.join(self.dir, "ca.pem")
        run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", self.key, "-out", self.cert, "-days", "2", "-subj", f"/CN={name}"])
        self.count = 0

    def leaf(self, name, sans=None, out_dir=None, days=2):
        """Issues a certificate for `sans` (default [name]); returns (cert, key) paths.
        DNS names become DNS SANs, dotted quads IP SANs."""
        self.count += 1
        d = out_dir or os.path.join(self.dir, f"{self.count}-{name.replace('*', 'star')}")
        os.makedirs(d, exist_ok=True)
        key, csr, cert = (os.path.join(d, f) for f in ("privkey.pem", "req.csr", "fullchain.pem"))
        run(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key,
             "-out", csr, "-subj", f"/CN={name}"])
        alt = ",".join(("IP:" if re.fullmatch(r"[0-9.]+", s) else "DNS:") + s for s in (sans or [name]))
        ext = os.path.join(d, "ext.cnf")
        with open(ext, "w") as f:
            f.write(f"subjectAltName={alt}\n")
        run(["openssl", "x509", "-req", "-in", csr, "-CA", self.cert, "-CAkey", self.key, "-CAcreateserial",
             "-out", cert, "-days", str(days), "-extfile", ext])
        return cert, key


class SClient:
    def __init__(self, out):
        self.out = out
        m = re.search(r"^subject=(.*)$", out, re.M)
        self.subject = m.group(1).strip() if m else None
        m = re.search(r"^(?:New|Reused), (TLSv[0-9.]+),", out, re.M)
        self.protocol = m.group(1) if m else None
        m = re.search(r"^ALPN protocol: (\S+)", out, re.M)
        self.alpn = m.group(1) if m else None
        self.reused = bool(re.search(r"^Reused,", out, re.M))
        m = re.search(r"alert ([a-z ]+)", out)
        self.alert = m.group(1).strip() if m else None
        m = re.search(r"Cipher is (\S+)", out)
        self.cipher = m.group(1) if m else None
        self.ok = self.cipher not in (None, "(NONE)") and "handshake failure" not in out

    def __repr__(self):
        return f"SClient(ok={self.ok}, protocol={self.protocol}, subject={self.subject}, alert={self.alert})"


def s_client(port, servername=None, version=None, extra=(), sess_in=None, sess_out=None):
    """`openssl s_client` to 127.0.0.1:port. version: "tls1", "tls1_1", "tls1_2", "tls1_3".
    The client's own security level is lowered so that it really offers old
    protocols (the server must be the one refusing them)."""
    cmd = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-cipher", "DEFAULT@SECLEVEL=0"]
    if servername:
        cmd += ["-servername", servername]
    else:
        cmd += ["-noservername"]
    if version:
        cmd += [f"-{version}"]
    if sess_in:
        cmd += ["-sess_in", sess_in]
    if sess_out:
        cmd += ["-sess_out", sess_out]
    cmd += list(extra)
    # With -sess_out, stdin stays open until s_client has written the session
    # (TLS 1.3 tickets come after the handshake), or it exited by itself (a
    # refused handshake), or 10 s passed.
    if sess_out and os.path.exists(sess_out):
        os.unlink(sess_out)
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if sess_out:
        deadline = time.monotonic() + 10
        while p.poll() is None and time.monotonic() < deadline:
            if os.path.exists(sess_out) and os.path.getsize(sess_out) > 0:
                time.sleep(0.05)  # s_client writes the file in one go; let it finish
                break
            time.sleep(0.02)
    out, _ = p.communicate(timeout=15)  # closes stdin: s_client says DONE and exits
    return SClient(out)


def cert_serial(port, servername, cafile=None):
    """Serial (upper-case hex) of the leaf certificate the server presents for servername."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=servername) as s:
            der = s.getpeercert(binary_form=True)
    r = subprocess.run(["openssl", "x509", "-inform", "DER", "-noout", "-serial"], input=der, capture_output=True,
                       timeout=10)
    return r.stdout.decode().strip().split("=", 1)[1].lstrip("0").upper()


def ticket_key_name(sess_file):
    """The first 16 bytes (hex) of the session ticket in an s_client -sess_out file: the server's key name."""
    r = run(["openssl", "sess_id", "-in", sess_file, "-noout", "-text"])
    m = re.search(r"TLS session ticket:\s*\n\s*0000 - (.{47})", r.stdout)
    assert m, f"no session ticket in {sess_file}:\n{r.stdout}"
    return m.group(1).replace("-", " ").replace(" ", "")


class _SNIHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, port, host, context, timeout):
        super().__init__("127.0.0.1", port, context=context, timeout=timeout)
        self._sni = host

    def connect(self):
        sock = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self._sni)


def https_conn(port, host, cafile=None, timeout=10):
    """An HTTPS connection to 127.0.0.1:port for `host` (SNI and certificate check against cafile)."""
    ctx = ssl.create_default_context(cafile=cafile) if cafile else ssl._create_unverified_context()
    ctx.set_alpn_protocols(["http/1.1"])
    return _SNIHTTPSConnection(port, host, ctx, timeout)


def https_get(port, host, path="/", cafile=None, conn=None, headers=None):
    """GET over HTTPS; returns (status, headers dict lower-case, body bytes, conn)."""
    c = conn or https_conn(port, host, cafile)
    c.request("GET", path, headers={"Host": host, **(headers or {})})
    r = c.getresponse()
    body = r.read()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, body, c

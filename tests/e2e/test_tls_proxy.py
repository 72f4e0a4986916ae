"""TLS termination in `davit proxy` (docs/proxy.md "TLS"): protocol versions,
SNI over several certificates (exact and wildcard), ALPN, requests and bodies
over TLS, session resumption and ticket key rotation, hot certificate swap on
SIGHUP with an open connection kept, HTTP->HTTPS redirect, handshake timeout
and garbage on the TLS port.

Certificates come from a throwaway CA made with the openssl CLI
(tlsutil.TestCA); the proxy runs on loopback with free ports."""

import json
import os
import shutil
import socket
import time

import pytest

import tlsutil
from upstreams import free_port, wait_until


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    return tlsutil.TestCA(tmp_path_factory.mktemp("ca"))


@pytest.fixture
def certs_dir(tmp_path, ca):
    """DIR/NAME/{fullchain,privkey}.pem for a.test, b.test and *.wild.test."""
    d = tmp_path / "certs"
    for name in ("a.test", "b.test", "star.wild.test"):
        sans = ["*.wild.test"] if name.startswith("star") else [name]
        ca.leaf(sans[0], sans, out_dir=str(d / name))
    return d


@pytest.fixture
def tls_proxy(start_proxy, upstream, certs_dir):
    up = upstream("tls-up")
    port = free_port()

    def start(extra=()):
        p = start_proxy(routes=[f"*=127.0.0.1:{up.port}"],
                        args=["--tls-listen", f"127.0.0.1:{port}", "--certs", str(certs_dir)] + list(extra))
        p.tls_port = port
        p.up = up
        return p
    return start


def subject_cn(sc):
    assert sc.subject, f"no certificate shown:\n{sc.out}"
    return sc.subject.split("CN = ")[-1].split(",")[0].strip()


def test_protocol_versions(tls_proxy):
    p = tls_proxy()
    for old in ("tls1", "tls1_1"):
        sc = tlsutil.s_client(p.tls_port, "a.test", old)
        assert not sc.ok, f"{old} must be refused: {sc.out}"
        assert sc.alert == "protocol version", f"{old}: expected a protocol_version alert from the server:\n{sc.out}"
    for ok, name in (("tls1_2", "TLSv1.2"), ("tls1_3", "TLSv1.3")):
        sc = tlsutil.s_client(p.tls_port, "a.test", ok)
        assert sc.ok and sc.protocol == name, sc.out
        assert subject_cn(sc) == "a.test"
    # TLS 1.2 offers only forward-secret AEAD suites
    sc = tlsutil.s_client(p.tls_port, "a.test", "tls1_2", extra=["-cipher", "AES128-SHA:AES256-SHA256"])
    assert not sc.ok, f"a static-RSA CBC suite must not be negotiated: {sc.out}"
    sc = tlsutil.s_client(p.tls_port, "a.test", "tls1_2")
    assert sc.cipher.startswith("ECDHE-") and ("GCM" in sc.cipher or "CHACHA20" in sc.cipher), sc.cipher


def test_sni_picks_the_certificate(tls_proxy):
    p = tls_proxy()
    assert subject_cn(tlsutil.s_client(p.tls_port, "a.test")) == "a.test"
    assert subject_cn(tlsutil.s_client(p.tls_port, "B.TEST")) == "b.test"  # case-insensitive
    assert subject_cn(tlsutil.s_client(p.tls_port, "x.wild.test")) == "*.wild.test"
    # a wildcard covers one label only; unknown names and no SNI get the default (first) certificate
    assert subject_cn(tlsutil.s_client(p.tls_port, "y.x.wild.test")) == "a.test"
    assert subject_cn(tlsutil.s_client(p.tls_port, "nope.test")) == "a.test"
    assert subject_cn(tlsutil.s_client(p.tls_port, None)) == "a.test"


def test_requests_over_tls(tls_proxy, ca):
    p = tls_proxy()
    c = tlsutil.https_conn(p.tls_port, "b.test", cafile=ca.cert)
    for i in range(5):  # keep-alive: one connection, several requests
        body = os.urandom(300_000) if i == 2 else b""
        c.request("POST" if body else "GET", f"/echo/{i}", body=body or None, headers={"Host": "b.test"})
        r = c.getresponse()
        j = json.loads(r.read())
        assert r.status == 200
        assert j["path"] == f"/echo/{i}"
        hdrs = {k.lower(): v for k, v in j["headers"]}
        assert hdrs["x-forwarded-proto"] == "https"
        if body:
            import hashlib
            assert j["body_len"] == len(body) and j["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert c.sock.version() in ("TLSv1.3", "TLSv1.2")
    assert c.sock.selected_alpn_protocol() == "http/1.1"
    assert p.up.accepted <= 2
    c.close()
    # a large download streams through TLS intact
    n = 3 * 1024 * 1024 + 17
    status, _, body, c2 = tlsutil.https_get(p.tls_port, "a.test", f"/stream/{n}", cafile=ca.cert)
    assert status == 200 and len(body) == n
    c2.close()
    # plain HTTP still says http
    import http.client
    h = http.client.HTTPConnection("127.0.0.1", p.port, timeout=5)
    h.request("GET", "/", headers={"Host": "nocert.test"})
    j = json.loads(h.getresponse().read())
    assert {k.lower(): v for k, v in j["headers"]}["x-forwarded-proto"] == "http"


def test_alpn(tls_proxy):
    p = tls_proxy()
    assert tlsutil.s_client(p.tls_port, "a.test", extra=["-alpn", "h2,http/1.1"]).alpn == "http/1.1"
    sc = tlsutil.s_client(p.tls_port, "a.test", extra=["-alpn", "h2"])
    assert sc.ok and sc.alpn is None, "no common protocol: the handshake goes on without ALPN"


def test_session_resumption_and_ticket_rotation(tls_proxy, tmp_path):
    p = tls_proxy(["--ticket-key-rotate", "2s"])
    for v in ("tls1_2", "tls1_3"):
        sess = str(tmp_path / f"{v}.sess")
        first = tlsutil.s_client(p.tls_port, "a.test", v, sess_out=sess)
        assert first.ok and not first.reused
        again = tlsutil.s_client(p.tls_port, "a.test", v, sess_in=sess)
        assert again.reused, f"{v}: the session ticket must resume:\n{again.out}"
    # Tickets issued within one interval share the key; after the interval a new key encrypts...
    s1, s2, s3 = (str(tmp_path / f"k{i}.sess") for i in range(3))
    tlsutil.s_client(p.tls_port, "a.test", "tls1_3", sess_out=s1)
    tlsutil.s_client(p.tls_port, "a.test", "tls1_3", sess_out=s2)
    k1, k2 = tlsutil.ticket_key_name(s1), tlsutil.ticket_key_name(s2)
    if k1 != k2:  # the first two straddled a rotation: take two fresh ones
        tlsutil.s_client(p.tls_port, "a.test", "tls1_3", sess_out=s1)
        tlsutil.s_client(p.tls_port, "a.test", "tls1_3", sess_out=s2)
        k1, k2 = tlsutil.ticket_key_name(s1), tlsutil.ticket_key_name(s2)
    assert k1 == k2
    time.sleep(2.2)  # one rotation interval (the rotation itself is what is tested)
    tlsutil.s_client(p.tls_port, "a.test", "tls1_3", sess_out=s3)
    assert tlsutil.ticket_key_name(s3) != k1, "the ticket key must rotate"
    # ...while the previous key still decrypts
    assert tlsutil.s_client(p.tls_port, "a.test", "tls1_3", sess_in=s1).reused


def test_hot_certificate_swap_keeps_open_connections(tls_proxy, ca, certs_dir):
    p = tls_proxy()
    before = tlsutil.cert_serial(p.tls_port, "a.test")
    status, _, _, conn = tlsutil.https_get(p.tls_port, "a.test", "/before", cafile=ca.cert)
    assert status == 200
    # replace a.test's certificate on disk and reload
    tmp = certs_dir.parent / "new-a"
    ca.leaf("a.test", out_dir=str(tmp))
    for f in ("fullchain.pem", "privkey.pem"):
        shutil.copy(tmp / f, certs_dir / "a.test" / f)
    p.sighup()
    wait_until(lambda: tlsutil.cert_serial(p.tls_port, "a.test") != before, 10, interval=0.1,
               what="the new certificate to be served")
    # the connection opened before the swap still works
    status, _, body, _ = tlsutil.https_get(p.tls_port, "a.test", "/after", conn=conn)
    assert status == 200 and json.loads(body)["path"] == "/after"
    conn.close()
    assert subject_cn(tlsutil.s_client(p.tls_port, "b.test")) == "b.test"  # others unchanged
    # a broken file on reload keeps the current set
    served = tlsutil.cert_serial(p.tls_port, "a.test")
    (certs_dir / "b.test" / "privkey.pem").write_text("not a key\n")
    p.sighup()
    wait_until(lambda: "certificate reload failed" in p.stderr(), 10, what="the reload error in the log")
    assert "b.test/privkey.pem" in p.stderr()
    assert tlsutil.cert_serial(p.tls_port, "a.test") == served
    assert subject_cn(tlsutil.s_client(p.tls_port, "b.test")) == "b.test"


def test_redirect_to_https(tls_proxy):
    import http.client
    p = tls_proxy()
    h = http.client.HTTPConnection("127.0.0.1", p.port, timeout=5)
    h.request("GET", "/some/path?q=1", headers={"Host": "a.test:8080"})
    r = h.getresponse()
    r.read()
    assert r.status == 301
    assert r.getheader("Location") == f"https://a.test:{p.tls_port}/some/path?q=1"
    h.request("GET", "/x", headers={"Host": "z.wild.test"})  # wildcard certificate: redirected too
    r = h.getresponse()
    r.read()
    assert r.status == 301 and r.getheader("Location") == f"https://z.wild.test:{p.tls_port}/x"
    # ACME challenges are not redirected (unknown tokens go to the route)
    h.request("GET", "/.well-known/acme-challenge/unknown-token", headers={"Host": "a.test"})
    r = h.getresponse()
    assert r.status == 200 and json.loads(r.read())["path"] == "/.well-known/acme-challenge/unknown-token"
    # hosts without a certificate are proxied as before
    h.request("GET", "/plain", headers={"Host": "nocert.test"})
    r = h.getresponse()
    assert r.status == 200 and json.loads(r.read())["path"] == "/plain"


def test_no_redirect_option(tls_proxy):
    import http.client
    p = tls_proxy(["--no-https-redirect"])
    h = http.client.HTTPConnection("127.0.0.1", p.port, timeout=5)
    h.request("GET", "/p", headers={"Host": "a.test"})
    r = h.getresponse()
    assert r.status == 200 and json.loads(r.read())["path"] == "/p"


def test_stalled_handshake_and_garbage(tls_proxy):
    p = tls_proxy(["--header-timeout", "1s"])
    silent = socket.create_connection(("127.0.0.1", p.tls_port), timeout=5)
    t0 = time.monotonic()
    assert silent.recv(100) == b"", "a client that never sends a ClientHello is closed"
    assert 0.5 < time.monotonic() - t0 < 4
    silent.close()
    junk = socket.create_connection(("127.0.0.1", p.tls_port), timeout=5)
    junk.sendall(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
    data = junk.recv(1000)  # a TLS alert or nothing, then EOF
    while data:
        assert b"HTTP/1.1" not in data
        data = junk.recv(1000)
    junk.close()
    assert tlsutil.s_client(p.tls_port, "a.test").ok, "the proxy still serves TLS"


def test_tls_needs_certificates(davit_bin):
    import subprocess
    r = subprocess.run([davit_bin, "proxy", "--tls-listen", "127.0.0.1:1", "--route", "*=127.0.0.1:2"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 2 and "--tls-listen needs certificates" in r.stderr
    r = subprocess.run([davit_bin, "proxy", "--listen", f"127.0.0.1:{free_port()}", "--cert",
                        "/nonexistent.pem,/nonexistent.key", "--route", "*=127.0.0.1:2"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 1 and "/nonexistent.pem" in r.stderr


def test_websocket_and_pipelining_over_tls(tls_proxy, ca):
    import ssl
    import websocket
    p = tls_proxy()
    ws = websocket.create_connection(f"wss://127.0.0.1:{p.tls_port}/ws", host="a.test", timeout=5,
                                     sslopt={"ca_certs": ca.cert, "server_hostname": "a.test"})
    for msg in ("hello", "x" * 70000):  # one small frame, one bigger than a TLS record
        ws.send(msg)
        assert ws.recv() == msg
    ws.close()
    # three pipelined requests in one TLS write: three responses, in order
    ctx = ssl.create_default_context(cafile=ca.cert)
    with socket.create_connection(("127.0.0.1", p.tls_port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="b.test") as s:
            s.sendall(b"".join(f"GET /pipe/{i} HTTP/1.1\r\nHost: b.test\r\n\r\n".encode() for i in range(3)))
            data = b""
            deadline = time.monotonic() + 5
            while data.count(b"HTTP/1.1 200") < 3 or not data.rstrip().endswith(b"}"):
                assert time.monotonic() < deadline, data
                chunk = s.recv(65536)
                assert chunk, data
                data += chunk
            assert [data.find(f'"/pipe/{i}"'.encode()) for i in range(3)] == sorted(
                data.find(f'"/pipe/{i}"'.encode()) for i in range(3))
            assert all(f'"/pipe/{i}"'.encode() in data for i in range(3))

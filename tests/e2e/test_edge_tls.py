"""Edge policies over TLS: HSTS is sent on TLS connections only, compression
and static files (the read + write path instead of sendfile) through TLS."""

import gzip
import os

import pytest

import tlsutil
from edge_upstream import EdgeUpstream, text
from rawhttp import get
from upstreams import free_port


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    return tlsutil.TestCA(tmp_path_factory.mktemp("ca"))


def test_hsts_compression_and_static_over_tls(start_proxy, ca, tmp_path):
    up = EdgeUpstream()
    try:
        certs = tmp_path / "certs"
        for name in ("a.test", "s.test"):
            ca.leaf(name, [name], out_dir=str(certs / name))
        www = tmp_path / "www"
        www.mkdir()
        big = os.urandom(2 * 1024 * 1024 + 5)
        (www / "big.bin").write_bytes(big)
        (www / "index.html").write_bytes(b"<p>tls</p>\n")
        port = free_port()
        p = start_proxy(routes=[f"a.test={up.addr} hsts=1y hsts_subdomains=on",
                                f"s.test=static:{www} hsts=600"],
                        args=["--tls-listen", f"127.0.0.1:{port}", "--certs", str(certs), "--no-https-redirect"])
        status, h, body, c = tlsutil.https_get(port, "a.test", "/text/100000", cafile=ca.cert,
                                               headers={"Accept-Encoding": "gzip"})
        assert status == 200
        assert h["strict-transport-security"] == "max-age=31536000; includeSubDomains", h
        assert h["content-encoding"] == "gzip" and gzip.decompress(body) == text(100000)
        assert h["x-content-type-options"] == "nosniff"
        c.close()
        status, h, body, c = tlsutil.https_get(port, "s.test", "/big.bin", cafile=ca.cert)
        assert status == 200 and body == big and h["strict-transport-security"] == "max-age=600"
        status, h, body, c = tlsutil.https_get(port, "s.test", "/", cafile=ca.cert, conn=c)
        assert status == 200 and body == b"<p>tls</p>\n"
        c.close()
        # The same routes over plain HTTP: no HSTS (RFC 6797 8.1: ignored there anyway).
        r = get(p.port, "/text/10", host="a.test")
        assert r.status == 200 and not r.has("Strict-Transport-Security"), r
        r = get(p.port, "/big.bin", host="s.test")
        assert r.status == 200 and r.body == big and not r.has("Strict-Transport-Security")
    finally:
        up.stop()

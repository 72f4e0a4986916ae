"""Static files and single-page apps served by the proxy itself
(docs/proxy.md, "Static sites"): index files, SPA fallback, ETag and
Last-Modified with 304, Range (206/416), precompressed siblings, caching
headers, and traversal attempts refused."""

import gzip
import os
import socket

import pytest

from rawhttp import Client, get, request

JS = b"console.log('davit');\n" * 400


@pytest.fixture
def site(tmp_path):
    root = tmp_path / "www"
    (root / "assets").mkdir(parents=True)
    (root / "docs").mkdir()
    (root / "index.html").write_bytes(b"<!doctype html><title>app</title>index\n")
    (root / "docs" / "index.html").write_bytes(b"docs index\n")
    (root / "assets" / "app.3f9a1c2b.js").write_bytes(JS)
    (root / "assets" / "app.3f9a1c2b.js.gz").write_bytes(gzip.compress(JS))
    (root / "assets" / "logo.png").write_bytes(b"\x89PNG" + os.urandom(3000))
    (root / "robots.txt").write_bytes(b"User-agent: *\n")
    (root / ".env").write_bytes(b"SECRET=1\n")
    (tmp_path / "secret.txt").write_bytes(b"outside the root\n")
    os.symlink(tmp_path / "secret.txt", root / "escape.txt")
    os.symlink("robots.txt", root / "inside.txt")  # relative: absolute links are refused (RESOLVE_BENEATH)
    return root


def raw(port, target):
    """Sends the target byte for byte (no client-side normalisation)."""
    with Client(port) as c:
        c.send(b"GET " + target + b" HTTP/1.1\r\nHost: site.test\r\n\r\n")
        return c.read_response()


def test_index_spa_fallback_and_cache_headers(start_proxy, site):
    p = start_proxy(routes=[f"site.test=static:{site} spa=on"])
    r = get(p.port, "/", host="site.test")
    assert r.status == 200 and b"index" in r.body
    assert r.header("Content-Type") == "text/html; charset=utf-8"
    assert r.header("Cache-Control") == "no-cache"
    assert r.header("X-Frame-Options") == "SAMEORIGIN"  # the security preset applies here too
    # try_files $uri /index.html: client-side routes get the app.
    for path in ("/settings/profile", "/no/such/file.js"):
        r = get(p.port, path, host="site.test")
        assert r.status == 200 and r.body.endswith(b"index\n"), (path, r)
        assert r.header("Cache-Control") == "no-cache"
    r = get(p.port, "/assets/app.3f9a1c2b.js", host="site.test")
    assert r.status == 200 and r.body == JS
    assert r.header("Cache-Control") == "public, max-age=31536000, immutable"
    assert r.header("Content-Type").startswith("text/javascript")
    r = get(p.port, "/robots.txt", host="site.test")
    assert r.status == 200 and r.header("Cache-Control") is None
    # A directory: redirect to its slash form, then its index.
    r = get(p.port, "/docs?x=1", host="site.test")
    assert r.status == 301 and r.header("Location") == "/docs/?x=1", r
    assert get(p.port, "/docs/", host="site.test").body == b"docs index\n"


def test_without_spa_missing_files_are_404(start_proxy, site):
    p = start_proxy(routes=[f"site.test=static:{site}"])
    assert get(p.port, "/settings", host="site.test").status == 404
    assert get(p.port, "/", host="site.test").status == 200
    assert request(p.port, "POST", "/", host="site.test", body=b"x").status == 405


def test_etag_last_modified_and_304(start_proxy, site):
    p = start_proxy(routes=[f"site.test=static:{site}"])
    r = get(p.port, "/robots.txt", host="site.test")
    etag, lm = r.header("ETag"), r.header("Last-Modified")
    assert etag.startswith('"') and lm.endswith("GMT"), r
    r = get(p.port, "/robots.txt", host="site.test", headers=[("If-None-Match", etag)])
    assert r.status == 304 and r.body == b"" and r.header("ETag") == etag, r
    r = get(p.port, "/robots.txt", host="site.test", headers=[("If-None-Match", f'"other", W/{etag}')])
    assert r.status == 304
    r = get(p.port, "/robots.txt", host="site.test", headers=[("If-Modified-Since", lm)])
    assert r.status == 304
    r = get(p.port, "/robots.txt", host="site.test", headers=[("If-None-Match", '"stale"')])
    assert r.status == 200 and r.body == b"User-agent: *\n"
    # A changed file gets a new ETag.
    (site / "robots.txt").write_bytes(b"User-agent: *\nDisallow: /\n")
    os.utime(site / "robots.txt", (1, 1))
    r = get(p.port, "/robots.txt", host="site.test", headers=[("If-None-Match", etag)])
    assert r.status == 200 and r.header("ETag") != etag


def test_range_206_and_416(start_proxy, site):
    p = start_proxy(routes=[f"site.test=static:{site}"])
    n = len(JS)
    path = "/assets/app.3f9a1c2b.js"
    r = get(p.port, path, host="site.test", headers=[("Range", "bytes=10-19")])
    assert r.status == 206 and r.body == JS[10:20] and r.header("Content-Range") == f"bytes 10-19/{n}", r
    r = get(p.port, path, host="site.test", headers=[("Range", "bytes=-5")])
    assert r.status == 206 and r.body == JS[-5:]
    r = get(p.port, path, host="site.test", headers=[("Range", f"bytes={n - 3}-")])
    assert r.status == 206 and r.body == JS[-3:]
    r = get(p.port, path, host="site.test", headers=[("Range", f"bytes={n}-")])
    assert r.status == 416 and r.header("Content-Range") == f"bytes */{n}", r
    # Several ranges: the whole file (allowed by RFC 9110).
    r = get(p.port, path, host="site.test", headers=[("Range", "bytes=0-1,5-6")])
    assert r.status == 200 and r.body == JS
    # If-Range with a stale validator: the whole file.
    r = get(p.port, path, host="site.test", headers=[("Range", "bytes=0-1"), ("If-Range", '"old"')])
    assert r.status == 200 and r.body == JS


def test_precompressed_siblings(start_proxy, site):
    p = start_proxy(routes=[f"site.test=static:{site}"])
    path = "/assets/app.3f9a1c2b.js"
    r = get(p.port, path, host="site.test", headers=[("Accept-Encoding", "gzip, br")])
    assert r.status == 200 and r.header("Content-Encoding") == "gzip" and gzip.decompress(r.body) == JS, r
    assert r.header("Vary") == "Accept-Encoding"
    plain = get(p.port, path, host="site.test")
    assert plain.header("Content-Encoding") is None and plain.body == JS
    assert plain.header("ETag") != r.header("ETag")  # different bytes, different validator
    # No .br sibling: a br-only client gets the identity file.
    r = get(p.port, path, host="site.test", headers=[("Accept-Encoding", "br")])
    assert r.header("Content-Encoding") is None and r.body == JS


def test_large_file_with_sendfile_and_keepalive(start_proxy, site):
    big = os.urandom(3 * 1024 * 1024 + 17)
    (site / "assets" / "big.bin").write_bytes(big)
    p = start_proxy(routes=[f"site.test=static:{site}"])
    with Client(p.port, timeout=30) as c:
        for _ in range(2):
            r = c.request("GET", "/assets/big.bin", host="site.test")
            assert r.status == 200 and r.body == big
        r = c.request("HEAD", "/assets/big.bin", host="site.test")
        assert r.status == 200 and r.header("Content-Length") == str(len(big)) and r.body == b""


@pytest.mark.parametrize("target", [
    b"/../secret.txt", b"/assets/../../secret.txt", b"/%2e%2e/secret.txt", b"/%2E%2E/secret.txt",
    b"/assets/%2e%2e/%2e%2e/secret.txt", b"/..%2fsecret.txt", b"/assets/..%5c..%5csecret.txt",
    b"/%00index.html", b"/index.html%00.js", b"/.env", b"/assets/./app.3f9a1c2b.js", b"/escape.txt",
    b"/%252e%252e/secret.txt", b"//etc/passwd", b"/assets/%zz",
])
def test_traversal_refused(start_proxy, site, target):
    p = start_proxy(routes=[f"site.test=static:{site} spa=on"])
    r = raw(p.port, target)
    assert b"outside the root" not in r.body and b"SECRET" not in r.body and b"root:" not in r.body, r
    if target not in (b"/%252e%252e/secret.txt", b"//etc/passwd"):
        assert r.status in (400, 404), r
    else:  # a literal "%2e%2e" directory name / "etc/passwd" under the root: SPA fallback, never the file
        assert r.status == 200 and r.body.endswith(b"index\n"), r


def test_symlink_inside_root_is_served(start_proxy, site):
    p = start_proxy(routes=[f"site.test=static:{site}"])
    r = get(p.port, "/inside.txt", host="site.test")
    assert r.status == 200 and r.body == b"User-agent: *\n"


def test_without_access_log_requests_end_cleanly(start_proxy, site):
    """With the access log off a static or refused request must still end
    (policy released, extra fields cleared) before the next one."""
    p = start_proxy(routes=[f"site.test=static:{site}"], access_log="off")
    n = len(JS)
    with Client(p.port) as c:
        r = c.request("GET", "/assets/app.3f9a1c2b.js", host="site.test", headers=[("Range", f"bytes={n}-")])
        assert r.status == 416 and r.header("Content-Range") == f"bytes */{n}"
        r = c.request("GET", "/missing", host="site.test")
        assert r.status == 404 and r.header("Content-Range") is None, r
        for _ in range(3):
            assert c.request("GET", "/robots.txt", host="site.test").status == 200

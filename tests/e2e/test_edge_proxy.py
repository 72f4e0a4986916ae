"""Edge policies on proxied routes (docs/proxy.md, "Edge policies"): security
headers, rate limits, gzip/brotli compression, body limits, basic auth, IP
lists and bans, driven through `davit proxy` against a real upstream."""

import base64
import gzip
import json
import time
import zlib

import pytest

try:
    import brotli
except ImportError:  # pragma: no cover - CI installs it
    brotli = None

from edge_upstream import EdgeUpstream, text
from rawhttp import Client, get, request
from upstreams import wait_until

# `openssl passwd` outputs for the password "s3cret" (fixed salts).
SHA512 = "$6$saltsalt$As4wrv0kZlfch1du9WeH7qhskyLriQWySXrZzynnvi46nFnNxjdpl6ksRegrrKexvhIa/Iny8S8uF3fVWTMuC1"
APR1 = "$apr1$abcdefgh$M2T3erDstkD7SsE2QQnfH0"
SHA1 = "{SHA}" + base64.b64encode(__import__("hashlib").sha1(b"s3cret").digest()).decode()


@pytest.fixture
def up():
    u = EdgeUpstream()
    yield u
    u.stop()


def log_entries(p, status, n=1):
    """Access log entries with `status`, once at least n are there (the log is
    flushed every second)."""
    def entries():
        out = [json.loads(l) for l in p.access_lines()]
        out = [e for e in out if e["status"] == status]
        return out if len(out) >= n else None
    return wait_until(entries, 3.0, interval=0.05, what=f"{n} access log lines with status {status}")


def basic(user, pw):
    return ("Authorization", "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode())


# ---------------------------------------------------------------- headers


def test_security_preset_headers(start_proxy, up):
    p = start_proxy(routes=[f"app.test={up.addr} csp=\"default-src 'self'; img-src *\""])
    r = get(p.port, "/text/10")
    assert r.status == 200
    assert r.header("X-Frame-Options") == "SAMEORIGIN"
    assert r.header("X-Content-Type-Options") == "nosniff"
    assert r.header("Referrer-Policy") == "strict-origin-when-cross-origin"
    assert "camera=()" in r.header("Permissions-Policy")
    assert r.header("Content-Security-Policy") == "default-src 'self'; img-src *"
    # HSTS only over TLS: this listener is plain HTTP.
    assert not r.has("Strict-Transport-Security"), r


def test_upstream_headers_win_over_preset_and_custom_override(start_proxy, up):
    p = start_proxy(routes=[f"app.test={up.addr} header=X-Custom:edge header=X-Drop: header=X-Added:yes "
                            "referrer=no-referrer nosniff=off"])
    r = get(p.port, "/headers")
    assert r.headers_all("X-Frame-Options") == ["DENY"], r  # the app's own choice is kept
    assert r.headers_all("X-Custom") == ["edge"], r          # header= overrides
    assert not r.has("X-Drop"), r                            # header=Name: removes
    assert r.header("X-Added") == "yes"
    assert r.header("Referrer-Policy") == "no-referrer"
    assert not r.has("X-Content-Type-Options"), r            # opt-out of one preset field


def test_headers_off_and_traefik_style_options(start_proxy, up):
    p = start_proxy(routes=[f"off.test={up.addr} headers=off",
                            f"t.test={up.addr} headers=off frame=deny nosniff=on xss=on hsts=1y"])
    r = get(p.port, "/text/10", host="off.test")
    for h in ("X-Frame-Options", "X-Content-Type-Options", "Referrer-Policy", "Permissions-Policy"):
        assert not r.has(h), r
    r = get(p.port, "/text/10", host="t.test")
    assert r.header("X-Frame-Options") == "DENY"
    assert r.header("X-Content-Type-Options") == "nosniff"
    assert r.header("X-XSS-Protection") == "1; mode=block"
    assert not r.has("Referrer-Policy")


def test_route_without_options_has_no_policy(start_proxy, up):
    p = start_proxy(routes=[f"app.test={up.addr}"])
    r = get(p.port, "/text/5000", headers=[("Accept-Encoding", "gzip")])
    assert not r.has("X-Frame-Options") and not r.has("Content-Encoding"), r
    assert r.body == text(5000)


def test_edge_defaults_for_every_route_and_bad_option(start_proxy, up, davit_bin):
    p = start_proxy(routes=[f"app.test={up.addr}"], args=["--edge", "headers=on"])
    assert get(p.port, "/").header("X-Frame-Options") == "SAMEORIGIN"
    import subprocess
    r = subprocess.run([davit_bin, "proxy", "--listen", "127.0.0.1:1", "--route", f"a.test={up.addr} ratelimit=lots"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode != 0
    assert "ratelimit=lots" in r.stderr and "COUNT/PERIOD" in r.stderr, r.stderr


# ---------------------------------------------------------------- rate limits


def test_rate_limit_429_with_retry_after_then_recovers(start_proxy, up):
    p = start_proxy(routes=[f"app.test={up.addr} ratelimit=4/2s"])
    statuses = []
    with Client(p.port) as c:
        for _ in range(6):
            r = c.request("GET", "/text/10")
            statuses.append(r.status)
            if r.status == 429:
                last = r
    assert statuses[:4] == [200] * 4 and statuses[4:] == [429, 429], statuses
    ra = int(last.header("Retry-After"))
    assert 1 <= ra <= 2, last
    lines = log_entries(p, 429, 2)
    assert lines[0]["edge"] == "rate_limited" and lines[0]["upstream"] is None, lines
    # One token comes back every 0.5 s.
    deadline = time.monotonic() + 5
    while get(p.port, "/text/10").status != 200:
        assert time.monotonic() < deadline, "the bucket never refilled"
        time.sleep(0.1)


def test_rate_limit_per_client_ip_via_trusted_proxy(start_proxy, up):
    p = start_proxy(routes=[f"app.test={up.addr} ratelimit=2/1m burst=2"],
                    args=["--trusted-proxy", "127.0.0.1/32"])

    def hit(xff):
        return get(p.port, "/", headers=[("X-Forwarded-For", xff)]).status

    assert [hit("10.0.0.1") for _ in range(3)] == [200, 200, 429]
    # Another client behind the same trusted proxy has its own bucket...
    assert hit("10.0.0.2") == 200
    # ...and the rightmost untrusted hop counts, not what the client prepends.
    assert hit("6.6.6.6, 10.0.0.1") == 429


def test_rate_limit_ignores_xff_from_untrusted_peer(start_proxy, up):
    p = start_proxy(routes=[f"app.test={up.addr} ratelimit=2/1m"])
    st = [get(p.port, "/", headers=[("X-Forwarded-For", f"10.0.0.{i}")]).status for i in range(3)]
    assert st == [200, 200, 429], st


# ---------------------------------------------------------------- compression


def decode(r):
    enc = r.header("Content-Encoding")
    if enc == "gzip":
        return gzip.decompress(r.body)
    if enc == "br":
        return brotli.decompress(r.body)
    assert enc is None, r
    return r.body


@pytest.mark.parametrize("chunked", [False, True])
def test_gzip_and_brotli_decode_to_the_original(start_proxy, up, chunked):
    if brotli is None:
        pytest.fail("python3-brotli is missing: apt-get install python3-brotli (scripts/install-deps.sh)")
    p = start_proxy(routes=[f"app.test={up.addr} compress=on"])
    q = "?chunked=1&step=777" if chunked else ""
    for n in (2000, 300000):
        want = text(n)
        for ae, enc in (("gzip", "gzip"), ("br", "br"), ("gzip, br", "br"), ("br;q=0.5, gzip;q=0.9", "gzip"),
                        ("deflate", None), ("*", "br"), ("gzip;q=0, br;q=0", None)):
            r = get(p.port, f"/text/{n}{q}", headers=[("Accept-Encoding", ae)])
            assert r.status == 200
            assert r.header("Content-Encoding") == enc, (ae, r)
            assert "Accept-Encoding" in (r.header("Vary") or ""), r
            assert decode(r) == want, (ae, n)
            if enc:
                assert r.chunked and not r.has("Content-Length"), r
                assert len(r.body) < n / 3, (ae, len(r.body))
                assert r.header("ETag") == 'W/"up-etag"', r


def test_compression_keeps_alive_and_streams_large_bodies(start_proxy, up):
    p = start_proxy(routes=[f"app.test={up.addr}"], args=["--edge", "compress=gzip"])
    n = 8 * 1024 * 1024
    with Client(p.port, timeout=30) as c:
        for _ in range(2):
            r = c.request("GET", f"/text/{n}", headers=[("Accept-Encoding", "gzip, br")])
            assert r.header("Content-Encoding") == "gzip"
            assert zlib.decompress(r.body, 47) == text(n)
    assert p.rss_kb() < 64 * 1024, p.rss_kb()


def test_never_compressed(start_proxy, up):
    p = start_proxy(routes=[f"app.test={up.addr} compress=on compress_min=1k"])
    ae = [("Accept-Encoding", "gzip, br")]
    cases = {
        "/png/5000": "image",
        "/encoded/5000": "already encoded",
        "/notransform/5000": "no-transform",
        "/text/500": "below the minimum size",
        "/sse": "server-sent events",
    }
    for path, why in cases.items():
        r = get(p.port, path, headers=ae)
        assert r.status == 200
        if path.startswith("/encoded"):
            assert r.header("Content-Encoding") == "gzip" and gzip.decompress(r.body) == text(5000), why
        else:
            assert not r.has("Content-Encoding"), (why, r)
    # HEAD and Range requests are passed through untouched.
    r = request(p.port, "HEAD", "/text/5000", headers=ae)
    assert not r.has("Content-Encoding") and r.header("Content-Length") == "5000", r
    r = get(p.port, "/text/5000", headers=ae + [("Range", "bytes=0-9")])
    assert not r.has("Content-Encoding"), r
    # HTTP/1.0 clients cannot take chunked re-encoding.
    with Client(p.port) as c:
        r = c.request("GET", "/text/5000", headers=ae, version="HTTP/1.0")
        assert not r.has("Content-Encoding") and r.body == text(5000), r


# ---------------------------------------------------------------- limits, auth, IP lists, bans


def test_body_limit_413_for_length_and_chunked(start_proxy, up):
    p = start_proxy(routes=[f"app.test={up.addr} maxbody=64k"])
    r = request(p.port, "POST", "/upload", body=b"x" * 60000)
    assert r.status == 200 and r.json()["length"] == 60000
    r = request(p.port, "POST", "/upload", body=b"x" * 70000)
    assert r.status == 413, r
    # A chunked upload is cut when it passes the limit, as it streams.
    with Client(p.port) as c:
        c.send(b"POST /upload HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(20):
            try:
                c.send(b"2000\r\n" + b"y" * 0x2000 + b"\r\n")
            except OSError:
                break
        r = c.read_response("POST")
        assert r.status == 413, r
    # Small chunked bodies pass.
    with Client(p.port) as c:
        c.send(b"POST /upload HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5\r\nhello\r\n0\r\n\r\n")
        r = c.read_response("POST")
        assert r.status == 200 and r.json()["length"] == 5, r


def test_default_body_limit_is_10_mib(start_proxy, up):
    p = start_proxy(routes=[f"app.test={up.addr} edge=on"])
    with Client(p.port) as c:
        c.send(f"POST /upload HTTP/1.1\r\nHost: app.test\r\nContent-Length: {10 * 1024 * 1024 + 1}\r\n\r\n".encode())
        r = c.read_response("POST")
        assert r.status == 413
        assert r.header("Connection") == "close"


@pytest.mark.parametrize("hashed", [SHA512, APR1, SHA1, "s3cret"])
def test_basic_auth(start_proxy, up, hashed):
    p = start_proxy(routes=[f"app.test={up.addr} auth=alice:{hashed} realm=team"])
    r = get(p.port, "/")
    assert r.status == 401 and r.header("WWW-Authenticate") == 'Basic realm="team", charset="UTF-8"', r
    assert get(p.port, "/", headers=[basic("alice", "wrong")]).status == 401
    assert get(p.port, "/", headers=[basic("bob", "s3cret")]).status == 401
    r = get(p.port, "/text/5", headers=[basic("alice", "s3cret")])
    assert r.status == 200 and r.body == text(5), r
    # One connection: a verified header is remembered, a different one is checked again.
    with Client(p.port) as c:
        assert c.request("GET", "/", headers=[basic("alice", "s3cret")]).status == 200
        assert c.request("GET", "/", headers=[basic("alice", "s3cret")]).status == 200
        assert c.request("GET", "/", headers=[basic("alice", "s3cre")]).status == 401
        assert c.request("GET", "/").status == 401
    assert sorted(l["edge"] for l in log_entries(p, 401, 5))[:3] == ["auth_failed", "auth_failed", "auth_failed"]
    assert {l["edge"] for l in log_entries(p, 401, 5)} == {"auth_failed", "auth_required"}


def test_bcrypt_hashes_are_refused_with_a_clear_message(start_proxy, up, davit_bin):
    import subprocess
    r = subprocess.run([davit_bin, "proxy", "--route", f"a.test={up.addr} auth=al:$2y$05$abcdefghijklmnopqrstuv"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode != 0 and "bcrypt" in r.stderr and "openssl passwd -6" in r.stderr, r.stderr


def test_ip_allow_and_deny(start_proxy, up):
    p = start_proxy(routes=[f"in.test={up.addr} allow=127.0.0.0/8",
                            f"out.test={up.addr} allow=10.0.0.0/8,192.168.0.0/16",
                            f"deny.test={up.addr} deny=127.0.0.1"])
    assert get(p.port, "/", host="in.test").status == 200
    r = get(p.port, "/", host="out.test")
    assert r.status == 403, r
    assert get(p.port, "/", host="deny.test").status == 403
    assert [l["edge"] for l in log_entries(p, 403, 2)] == ["ip_denied", "ip_denied"]


def test_ban_after_refusals_then_unban(start_proxy, up):
    p = start_proxy(routes=[f"app.test={up.addr} auth=alice:s3cret ban=3/10s/2s",
                            f"other.test={up.addr}"])
    bad = [basic("alice", "nope")]
    assert [get(p.port, "/", headers=bad).status for _ in range(3)] == [401, 401, 401]
    # Banned now: even the right password is refused, on this route only.
    r = get(p.port, "/", headers=[basic("alice", "s3cret")])
    assert r.status == 403, r
    assert get(p.port, "/", host="other.test").status == 200
    assert "banned 127.0.0.1 on app.test for 2 s" in p.stderr(), p.stderr()
    assert log_entries(p, 403)[0]["edge"] == "banned"
    # Upstream 401/403/429 count too, and the ban ends after its duration.
    deadline = time.monotonic() + 6
    while get(p.port, "/", headers=[basic("alice", "s3cret")]).status != 200:
        assert time.monotonic() < deadline, "the ban never ended"
        time.sleep(0.2)


def test_upstream_refusals_count_towards_a_ban(start_proxy, up):
    p = start_proxy(routes=[f"app.test={up.addr} ban=2/10s/30s"])
    assert get(p.port, "/status/403").status == 403
    assert get(p.port, "/status/429").status == 429
    assert get(p.port, "/text/1").status == 403


def test_refusals_without_access_log_carry_only_their_own_fields(start_proxy, up):
    p = start_proxy(routes=[f"app.test={up.addr} ratelimit=1/1m ban=2/1m/1m"], access_log="off")
    with Client(p.port) as c:
        assert c.request("GET", "/").status == 200
        r = c.request("GET", "/")
        assert r.status == 429 and r.has("Retry-After")
        assert c.request("GET", "/").status == 429  # the second strike starts the ban
        r = c.request("GET", "/")
        assert r.status == 403 and not r.has("Retry-After"), r


def test_routes_file_options_and_state_survive_reload(start_proxy, up, routes_file):
    f = routes_file(f"# edge options after the replicas\napp.test={up.addr} ratelimit=3/1m header=X-Gen:1\n")
    p = start_proxy(args=["--routes", str(f)])
    assert [get(p.port, "/").header("X-Gen") for _ in range(2)] == ["1", "1"]
    routes_file(f"app.test={up.addr} ratelimit=3/1m header=X-Gen:2\n")
    p.sighup()
    wait_until(lambda: "routes reloaded" in p.stderr() or None, 5, interval=0.05, what="the reload")
    # The bucket is keyed by the route, not by the table: one token left after the reload.
    r = get(p.port, "/")
    assert r.status == 200 and r.header("X-Gen") == "2", r
    assert get(p.port, "/").status == 429
    routes_file(f"app.test={up.addr} ratelimit=lots\n")
    p.sighup()
    wait_until(lambda: "reload failed" in p.stderr() or None, 5, interval=0.05, what="the reload error")
    assert "ratelimit=lots" in p.stderr() and ":1:" in p.stderr(), p.stderr()

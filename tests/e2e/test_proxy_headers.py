"""Forwarding headers, X-Request-Id, Host, hop-by-hop headers.
(docs/proxy.md, "Behaviour": Forwarding headers)"""

import re

from rawhttp import Client, get
from upstreams import hget, hgetall, route

ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,200}$")


def upstream_headers(resp):
    assert resp.status == 200, resp
    return [tuple(h) for h in resp.json()["headers"]]


def xff_list(headers):
    vals = hgetall(headers, "x-forwarded-for")
    return [x.strip() for v in vals for x in v.split(",")]


def test_forwarded_headers_set_from_connection(start_proxy, upstream):
    a = upstream("a")
    p = start_proxy(routes=[route("app.test", a)])
    h = upstream_headers(get(p.port, "/", host="app.test"))
    assert hgetall(h, "x-forwarded-for") == ["127.0.0.1"]
    assert hgetall(h, "x-forwarded-proto") == ["http"]
    assert hgetall(h, "x-forwarded-host") == ["app.test"]


def test_client_forwarded_headers_are_overwritten(start_proxy, upstream):
    a = upstream("a")
    p = start_proxy(routes=[route("app.test", a)])
    h = upstream_headers(get(p.port, "/", host="app.test", headers=[
        ("X-Forwarded-For", "1.2.3.4"),
        ("X-Forwarded-For", "5.6.7.8, 9.9.9.9"),
        ("x-forwarded-proto", "https"),
        ("X-Forwarded-Host", "evil.test"),
    ]))
    assert xff_list(h) == ["127.0.0.1"], h
    assert hgetall(h, "x-forwarded-proto") == ["http"], h
    assert hgetall(h, "x-forwarded-host") == ["app.test"], h


def test_untrusted_peer_when_trusted_proxy_does_not_match(start_proxy, upstream):
    a = upstream("a")
    p = start_proxy(routes=[route("app.test", a)], args=["--trusted-proxy", "10.0.0.0/8"])
    h = upstream_headers(get(p.port, "/", headers=[("X-Forwarded-For", "1.2.3.4"), ("X-Forwarded-Proto", "https")]))
    assert xff_list(h) == ["127.0.0.1"]
    assert hgetall(h, "x-forwarded-proto") == ["http"]


def test_trusted_proxy_keeps_and_appends(start_proxy, upstream):
    a = upstream("a")
    p = start_proxy(routes=[route("app.test", a)],
                    args=["--trusted-proxy", "192.168.0.0/16", "--trusted-proxy", "127.0.0.1/32"])
    h = upstream_headers(get(p.port, "/", host="app.test", headers=[
        ("X-Forwarded-For", "1.2.3.4, 10.0.0.1"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "public.example"),
    ]))
    assert xff_list(h) == ["1.2.3.4", "10.0.0.1", "127.0.0.1"], h
    assert hgetall(h, "x-forwarded-proto") == ["https"]
    assert hgetall(h, "x-forwarded-host") == ["public.example"]
    # a trusted peer that sent none gets them set
    h = upstream_headers(get(p.port, "/", host="app.test"))
    assert xff_list(h) == ["127.0.0.1"]
    assert hgetall(h, "x-forwarded-proto") == ["http"]
    assert hgetall(h, "x-forwarded-host") == ["app.test"]


def test_request_id_generated_and_returned(start_proxy, upstream):
    a = upstream("a")
    p = start_proxy(routes=[route("app.test", a)])
    ids = set()
    with Client(p.port) as c:
        for i in range(5):
            r = c.request("GET", f"/{i}")
            sent = hgetall(upstream_headers(r), "x-request-id")
            assert len(sent) == 1 and ID_RE.match(sent[0]), sent
            assert r.headers_all("X-Request-Id") == sent, "the response must carry the same X-Request-Id"
            ids.add(sent[0])
    assert len(ids) == 5, f"generated request ids are not unique: {ids}"


def test_request_id_kept_when_valid(start_proxy, upstream):
    a = upstream("a")
    p = start_proxy(routes=[route("app.test", a)])
    for rid in ["abc-123", "A.b_C-9", "x" * 200]:
        r = get(p.port, "/", headers=[("X-Request-Id", rid)])
        assert hgetall(upstream_headers(r), "x-request-id") == [rid]
        assert r.header("X-Request-Id") == rid


def test_request_id_replaced_when_invalid(start_proxy, upstream):
    a = upstream("a")
    p = start_proxy(routes=[route("app.test", a)])
    for rid in ["has space", "semi;colon", "x" * 201, "üñí", "a/b", ""]:
        r = get(p.port, "/", headers=[("X-Request-Id", rid)])
        sent = hgetall(upstream_headers(r), "x-request-id")
        assert len(sent) == 1 and sent[0] != rid and ID_RE.match(sent[0]), (rid, sent)
        assert r.header("X-Request-Id") == sent[0]


def test_host_passed_unchanged(start_proxy, upstream):
    a = upstream("a")
    p = start_proxy(routes=[route("app.test", a)])
    for host in ["app.test", "App.Test:8080", "APP.TEST"]:
        h = upstream_headers(get(p.port, "/", host=host))
        assert hgetall(h, "host") == [host]


def test_hop_by_hop_request_headers_not_forwarded(start_proxy, upstream):
    a = upstream("a")
    p = start_proxy(routes=[route("app.test", a)])
    r = get(p.port, "/", headers=[
        ("Connection", "keep-alive, X-Secret"),
        ("Connection", "X-Other"),
        ("X-Secret", "listed-in-connection"),
        ("X-Other", "also-listed"),
        ("Keep-Alive", "timeout=5, max=100"),
        ("TE", "gzip"),
        ("Proxy-Connection", "keep-alive"),
        ("X-Visible", "yes"),
    ])
    h = upstream_headers(r)
    names = {k.lower() for k, _ in h}
    assert hget(h, "x-visible") == "yes"
    for gone in ["x-secret", "x-other", "keep-alive", "proxy-connection"]:
        assert gone not in names, f"hop-by-hop header {gone} was forwarded: {h}"
    assert "gzip" not in " ".join(hgetall(h, "te")), f"TE was forwarded: {h}"
    for v in hgetall(h, "connection"):
        toks = {t.strip().lower() for t in v.split(",")}
        assert toks <= {"keep-alive", "close"}, f"client Connection tokens forwarded: {h}"


def test_hop_by_hop_response_headers_not_forwarded(start_proxy, upstream):
    a = upstream("a")
    p = start_proxy(routes=[route("app.test", a)])
    with Client(p.port) as c:
        r = c.request("GET", "/hop")
        assert r.status == 200
        assert r.header("X-Up-Visible") == "yes"
        assert r.header("X-Up-Secret") is None, r.headers
        assert r.header("Proxy-Connection") is None, r.headers
        assert "timeout=99" not in (r.header("Keep-Alive") or ""), r.headers
        for v in r.headers_all("Connection"):
            assert "x-up-secret" not in v.lower(), r.headers
        # the client connection is still keep-alive
        assert c.request("GET", "/").status == 200


def test_end_to_end_headers_pass_both_ways(start_proxy, upstream):
    a = upstream("a")
    p = start_proxy(routes=[route("app.test", a)])
    r = get(p.port, "/", headers=[("Authorization", "Bearer t"), ("Cookie", "a=1; b=2"),
                                  ("X-Dup", "1"), ("X-Dup", "2"), ("User-Agent", "e2e")])
    h = upstream_headers(r)
    assert hget(h, "authorization") == "Bearer t"
    assert hget(h, "cookie") == "a=1; b=2"
    assert hgetall(h, "x-dup") == ["1", "2"]
    assert hget(h, "user-agent") == "e2e"
    assert r.header("Content-Type") == "application/json" and r.upstream == "a"

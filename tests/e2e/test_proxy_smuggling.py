"""Request smuggling and limits: each malformed request gets its error status,
the connection is closed, and the upstream never sees a request.
(docs/proxy.md, "Behaviour": smuggling patterns; options --max-*)
The parser's unit tests cover the full list; these check the proxy wiring."""

import pytest

from rawhttp import Client, build_request, get
from upstreams import route

H = b"Host: app.test\r\n"

HEAD_CASES = {
    # id: (raw request, allowed statuses)
    "cl_and_te": (b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", {400}),
    "te_and_cl": (b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", {400}),
    "two_different_cl": (b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", {400}),
    "cl_list_differs": (b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5, 6\r\n\r\nhello!", {400}),
    "cl_not_digits": (b"POST / HTTP/1.1\r\n" + H + b"Content-Length: +5\r\n\r\nhello", {400}),
    "cl_negative": (b"POST / HTTP/1.1\r\n" + H + b"Content-Length: -1\r\n\r\n", {400}),
    "cl_overflow": (b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 99999999999999999999999\r\n\r\n", {400}),
    "te_chunked_not_final": (b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n", {400}),
    "te_chunked_twice": (b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", {400}),
    "te_two_headers": (b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", {400}),
    # another coding before chunked: not a smuggling vector as such; the
    # parser's contract says 501, the proxy's error list says 400 -- either refuses
    "te_gzip_chunked": (b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", {400, 501}),
    "te_in_http10": (b"POST / HTTP/1.0\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", {400}),
    "te_unknown_value": (b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", {400, 501}),
    "obs_fold": (b"GET / HTTP/1.1\r\n" + H + b"X-Foo: a\r\n b\r\n\r\n", {400}),
    "obs_fold_tab": (b"GET / HTTP/1.1\r\n" + H + b"X-Foo: a\r\n\tb\r\n\r\n", {400}),
    "space_before_colon": (b"POST / HTTP/1.1\r\n" + H + b"Content-Length : 5\r\n\r\nhello", {400}),
    "tab_before_colon": (b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding\t: chunked\r\n\r\n0\r\n\r\n", {400}),
    "bare_lf": (b"GET / HTTP/1.1\nHost: app.test\n\n", {400}),
    "bare_lf_in_header": (b"GET / HTTP/1.1\r\n" + H + b"X-A: 1\nX-B: 2\r\n\r\n", {400}),
    "bare_cr_in_value": (b"GET / HTTP/1.1\r\n" + H + b"X-A: 1\rX-B: 2\r\n\r\n", {400}),
    "ctl_in_value": (b"GET / HTTP/1.1\r\n" + H + b"X-A: a\x01b\r\n\r\n", {400}),
    "nul_in_value": (b"GET / HTTP/1.1\r\n" + H + b"X-A: a\x00b\r\n\r\n", {400}),
    "space_in_target": (b"GET /a b HTTP/1.1\r\n" + H + b"\r\n", {400, 505}),
    "empty_header_name": (b"GET / HTTP/1.1\r\n" + H + b": x\r\n\r\n", {400}),
    "two_hosts": (b"GET / HTTP/1.1\r\nHost: app.test\r\nHost: other.test\r\n\r\n", {400}),
}

BODY_CASES = {
    # the head is fine; the chunked body is not. The proxy may already have
    # forwarded the head, but the upstream must never get a complete request.
    "bad_chunk_size": b"zz\r\nhello\r\n0\r\n\r\n",
    "chunk_size_overflow": b"fffffffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
    "chunk_size_0x": b"0x5\r\nhello\r\n0\r\n\r\n",
    "chunk_missing_crlf": b"5\r\nhelloXX0\r\n\r\n",
    "chunk_size_bare_lf": b"5\nhello\r\n0\r\n\r\n",
    "chunk_size_empty": b"\r\nhello\r\n0\r\n\r\n",
}


@pytest.fixture
def one_upstream_proxy(start_proxy, upstream):
    a = upstream("a")
    p = start_proxy(routes=[route("*", a)])
    return p, a


def expect_refused(p, raw, allowed):
    with Client(p.port, timeout=5) as c:
        c.send(raw)
        r = c.read_response(timeout=5)
        assert r.status in allowed, f"expected {sorted(allowed)}, got {r}"
        # after a framing error the proxy must not keep reading this connection
        c.wait_closed(5)
    return r


@pytest.mark.parametrize("case", sorted(HEAD_CASES))
def test_malformed_head_refused(one_upstream_proxy, case):
    p, a = one_upstream_proxy
    raw, allowed = HEAD_CASES[case]
    expect_refused(p, raw, allowed)
    assert a.requests == [] and a.bad_requests == [], "the upstream saw the request"
    # the proxy is still fine
    assert get(p.port, "/ok").status == 200


@pytest.mark.parametrize("case", sorted(BODY_CASES))
def test_malformed_chunked_body_refused(one_upstream_proxy, case):
    p, a = one_upstream_proxy
    raw = b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n" + BODY_CASES[case]
    expect_refused(p, raw, {400})
    assert a.requests == [], "the upstream got a complete request"
    assert a.bad_requests == [], "the proxy passed a malformed chunked body to the upstream"
    assert get(p.port, "/ok").status == 200


def test_smuggled_second_request_never_reaches_upstream(one_upstream_proxy):
    """The classic CL.TE payload: if any part were accepted, /smuggled would
    reach the upstream as a second request."""
    p, a = one_upstream_proxy
    smuggled = b"GET /smuggled HTTP/1.1\r\nHost: app.test\r\n\r\n"
    body = b"0\r\n\r\n" + smuggled
    raw = (b"POST /front HTTP/1.1\r\n" + H + b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n" % len(body) + body)
    expect_refused(p, raw, {400})
    assert not [r for r in a.requests if "smuggled" in r.path]
    assert a.requests == []


def test_request_line_too_long_414(one_upstream_proxy):
    p, a = one_upstream_proxy
    with Client(p.port, timeout=5) as c:
        c.send(b"GET /" + b"a" * (9 * 1024) + b" HTTP/1.1\r\n" + H + b"\r\n")
        assert c.read_response(timeout=5).status == 414
    # a long line under the limit is fine
    path = "/" + "b" * 8000
    r = get(p.port, path)
    assert r.status == 200 and r.json()["path"] == path
    assert len(a.requests) == 1


def test_headers_too_large_431(one_upstream_proxy):
    p, a = one_upstream_proxy
    headers = [(f"X-Big-{i}", "v" * 1000) for i in range(70)]  # ~70 KiB, 71 fields
    with Client(p.port, timeout=5) as c:
        c.send(build_request("GET", "/", headers=headers))
        assert c.read_response(timeout=5).status == 431
    # 60 KiB is under the 64 KiB default
    r = get(p.port, "/", headers=headers[:60])
    assert r.status == 200
    assert len(a.requests) == 1


def test_too_many_header_fields_431(one_upstream_proxy):
    p, a = one_upstream_proxy
    with Client(p.port, timeout=5) as c:
        c.send(build_request("GET", "/", headers=[(f"X-F-{i}", "v") for i in range(100)]))  # + Host = 101
        assert c.read_response(timeout=5).status == 431
    r = get(p.port, "/", headers=[(f"X-F-{i}", "v") for i in range(99)])  # + Host = 100: allowed
    assert r.status == 200
    assert len(a.requests) == 1


def test_limits_are_configurable(start_proxy, upstream):
    a = upstream("a")
    p = start_proxy(routes=[route("*", a)],
                    args=["--max-request-line", "1024", "--max-header-bytes", "4096", "--max-headers", "10"])
    assert get(p.port, "/" + "a" * 900).status == 200
    assert get(p.port, "/" + "a" * 1100).status == 414
    assert get(p.port, "/", headers=[(f"X-{i}", "v") for i in range(9)]).status == 200
    assert get(p.port, "/", headers=[(f"X-{i}", "v") for i in range(10)]).status == 431
    assert get(p.port, "/", headers=[("X-Big", "v" * 3000)]).status == 200
    assert get(p.port, "/", headers=[("X-Big", "v" * 5000)]).status == 431
    assert a.count() == 3

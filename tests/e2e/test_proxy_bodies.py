"""Message bodies: chunked requests and responses, trailers, close-delimited
responses, HEAD/204/304 framing, Expect: 100-continue.
(docs/proxy.md, "Behaviour")"""

import hashlib
import time

from rawhttp import BodyStream, Client, build_request, get
from upstreams import encode_chunked, pattern_chunks, pattern_sha256, route


def test_chunked_request_body_forwarded_intact(start_proxy, upstream):
    a = upstream("a")
    p = start_proxy(routes=[route("app.test", a)])
    pieces = [b"a", b"bc" * 50, bytes(range(256)) * 300, b"\r\n0\r\n\r\n", b"z" * 70000, b"end"]
    body = b"".join(pieces)
    with Client(p.port) as c:
        head = build_request("POST", "/upload", headers=[("Transfer-Encoding", "chunked")])
        wire = encode_chunked(pieces)
        # send in awkward pieces: head, then the chunked body split mid-size-line
        c.send(head)
        for i in range(0, len(wire), 7777):
            c.send(wire[i:i + 7777])
        r = c.read_response()
        assert r.status == 200, r
        d = r.json()
        assert d["body_len"] == len(body)
        assert d["body_sha256"] == hashlib.sha256(body).hexdigest()
        # the connection is still in sync afterwards
        assert c.request("GET", "/after").json()["path"] == "/after"


def test_chunked_request_with_extensions(start_proxy, upstream):
    a = upstream("a")
    p = start_proxy(routes=[route("app.test", a)])
    wire = b"5;name=value\r\nhello\r\n6; quoted=\"a b\"\r\n world\r\n0\r\n\r\n"
    with Client(p.port) as c:
        c.send(build_request("POST", "/upload", headers=[("Transfer-Encoding", "chunked")]) + wire)
        d = c.read_response().json()
        assert d["body"] == "hello world"


def test_request_trailers_survive(start_proxy, upstream):
    a = upstream("a")
    p = start_proxy(routes=[route("app.test", a)])
    with Client(p.port) as c:
        c.send(build_request("POST", "/upload", headers=[("Transfer-Encoding", "chunked"), ("Trailer", "X-Req-Sum")])
               + encode_chunked([b"hello"], [("X-Req-Sum", "abc123")]))
        d = c.read_response().json()
        assert d["body"] == "hello"
        assert ["X-Req-Sum", "abc123"] in d["trailers"], f"request trailers lost: {d['trailers']}"


def test_chunked_response_forwarded_intact(start_proxy, upstream):
    a = upstream("a")
    p = start_proxy(routes=[route("app.test", a)])
    sizes = [1, 100, 5000, 70000, 3, 65536, 65537]
    expect = b"".join(bytes([65 + i % 26]) * n for i, n in enumerate(sizes))
    with Client(p.port) as c:
        r = c.request("GET", "/chunked?sizes=" + ",".join(map(str, sizes)))
        assert r.status == 200 and r.body == expect
        r = c.request("GET", "/after")  # framing was respected
        assert r.json()["path"] == "/after"


def test_response_trailers_survive(start_proxy, upstream):
    a = upstream("a")
    p = start_proxy(routes=[route("app.test", a)])
    with Client(p.port) as c:
        r = c.request("GET", "/chunked?sizes=10,20000&trailer=1")
        assert r.status == 200 and len(r.body) == 20010
        tr = dict(r.trailers)
        assert tr.get("X-Trailer-Test") == "yes", f"response trailers lost: {r.trailers} (chunked={r.chunked})"
        assert tr.get("X-Sum") == hashlib.sha256(r.body).hexdigest()


def test_close_delimited_response_delivered_fully(start_proxy, upstream):
    a = upstream("a")
    p = start_proxy(routes=[route("app.test", a)])
    n = 3 * 1024 * 1024 + 17
    with Client(p.port) as c:
        r = c.request("GET", f"/close/{n}", timeout=20)
        assert r.status == 200
        assert len(r.body) == n and hashlib.sha256(r.body).hexdigest() == pattern_sha256(n)
    # and the proxy keeps working with that upstream afterwards
    assert get(p.port, "/x").status == 200


def test_medium_bodies_both_ways(start_proxy, upstream):
    a = upstream("a")
    p = start_proxy(routes=[route("app.test", a)])
    n = 64 * 1024 * 1024
    with Client(p.port, timeout=30) as c:
        c.silence = 5.0  # fail fast (and say so) if the transfer stalls
        for path in [f"/stream/{n}", f"/stream/{n}?chunked=1"]:
            h = hashlib.sha256()
            got = [0]

            def sink(d):
                h.update(d)
                got[0] += len(d)
            c.send(build_request("GET", path))
            r = c.read_response(sink=sink, timeout=30)
            assert r.status == 200 and got[0] == n and h.hexdigest() == pattern_sha256(n), path
        # chunked upload of the same pattern
        c.send(build_request("POST", "/upload", headers=[("Transfer-Encoding", "chunked")]))
        for chunk in pattern_chunks(n):
            c.send(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
        c.send(b"0\r\n\r\n")
        d = c.read_response(timeout=30).json()
        assert d["body_len"] == n and d["body_sha256"] == pattern_sha256(n)


def test_head_204_304_have_no_body(start_proxy, upstream):
    a = upstream("a")
    p = start_proxy(routes=[route("app.test", a)])
    with Client(p.port) as c:
        c.send(build_request("HEAD", "/head"))
        r = c.read_response("HEAD", timeout=5)
        assert r.status == 200 and int(r.header("Content-Length")) > 0
        r = c.request("GET", "/status/204/x", timeout=5)
        assert r.status == 204 and r.body == b""
        r = c.request("GET", "/status/304/x", timeout=5)
        assert r.status == 304 and r.body == b""
        # nothing stray was sent: the next response parses
        r = c.request("GET", "/next", timeout=5)
        assert r.status == 200 and r.json()["path"] == "/next"


def test_expect_100_continue(start_proxy, upstream):
    a = upstream("a")
    p = start_proxy(routes=[route("app.test", a)])
    body = b"hello world"
    with Client(p.port) as c:
        c.send(build_request("POST", "/upload", headers=[("Expect", "100-continue"),
                                                          ("Content-Length", str(len(body)))]))
        interim = c.read_head(timeout=5)  # before any body byte is sent
        assert interim.status == 100, f"expected 100 Continue before the body, got {interim}"
        c.send(body)
        r = c.read_response(timeout=5)
        assert r.status == 200
        d = r.json()
        assert d["body"] == "hello world"
        assert not [k for k, _ in d["headers"] if k.lower() == "expect"], "Expect was forwarded"
        # and the connection keeps working
        assert c.request("GET", "/again").status == 200


def test_expect_100_continue_unroutable_gets_final_status(start_proxy, upstream):
    a = upstream("a")
    p = start_proxy(routes=[route("app.test", a)])
    with Client(p.port) as c:
        c.send(build_request("POST", "/upload", host="nowhere.test",
                             headers=[("Expect", "100-continue"), ("Content-Length", "1000")]))
        r = c.read_head(timeout=5)
        assert r.status == 404, f"an unroutable request must not get 100 Continue: {r}"
    assert a.count() == 0


def test_streamed_response_arrives_incrementally(start_proxy, upstream):
    """A response whose second part is only sent later: the first part must
    reach the client first (the proxy does not wait for the whole body)."""
    a = upstream("a")
    p = start_proxy(routes=[route("app.test", a)])
    with Client(p.port) as c:
        c.send(build_request("GET", "/sse/inc"))
        r = c.read_head(timeout=5)
        s = BodyStream(c, r)
        t0 = time.monotonic()
        s.read_until(b"data: one\n\n", timeout=5)
        assert time.monotonic() - t0 < 5
        a.signal("inc")
        s.read_until(b"data: two\n\n", timeout=5)


def test_truncated_upstream_response_closes_client_connection(start_proxy, upstream):
    """The upstream dies mid-body: the client must see a truncated response
    (its connection closed), never a response that looks complete."""
    from rawhttp import Truncated
    import pytest
    a = upstream("a")
    p = start_proxy(routes=[route("app.test", a)])
    with Client(p.port) as c:
        c.send(build_request("GET", "/truncate/100000"))
        r = c.read_head(timeout=5)
        assert r.status == 200
        with pytest.raises(Truncated):
            c.read_body(r, "GET", time.monotonic() + 5)
    assert get(p.port, "/after").status == 200


def test_client_abort_mid_download_does_not_poison_pool(start_proxy, upstream):
    """A client that goes away in the middle of a large response: the
    half-read upstream connection must not be reused for the next request."""
    a = upstream("a")
    p = start_proxy(routes=[route("app.test", a)], workers=1)
    for k in range(3):
        c = Client(p.port)
        c.send(build_request("GET", f"/stream/{256 * 1024 * 1024}"))
        c.read_head(timeout=5)
        got = 0
        while got < 4 * 1024 * 1024:
            got += len(c.sock.recv(1 << 20))
        c.close()
        with Client(p.port) as c2:
            for i in range(5):
                r = c2.request("GET", f"/next/{k}/{i}", timeout=10)
                assert r.status == 200 and r.json()["path"] == f"/next/{k}/{i}", r


def test_client_abort_mid_upload_does_not_poison_pool(start_proxy, upstream):
    a = upstream("a")
    p = start_proxy(routes=[route("app.test", a)], workers=1)
    for k in range(3):
        c = Client(p.port)
        c.send(build_request("POST", "/upload", headers=[("Content-Length", str(100 * 1024 * 1024))]))
        c.send(b"u" * (2 * 1024 * 1024))
        c.close()
        with Client(p.port) as c2:
            for i in range(5):
                r = c2.request("GET", f"/next/{k}/{i}", timeout=10)
                assert r.status == 200 and r.json()["path"] == f"/next/{k}/{i}", r
    assert not [q for q in a.requests if q.path == "/upload"], "an incomplete upload reached the upstream as a request"


def test_repeated_downloads_never_stall(start_proxy, upstream):
    """Many medium downloads in a row, each on a fresh connection: every one
    completes (a lost wake-up in the proxy shows up here as a transfer that
    stops with data left unread in the proxy's upstream socket)."""
    a = upstream("a")
    p = start_proxy(routes=[route("app.test", a)])
    n = 32 * 1024 * 1024
    want = pattern_sha256(n)
    for i in range(16):
        path = f"/stream/{n}" + ("?chunked=1" if i % 2 else "")
        h = hashlib.sha256()
        with Client(p.port, timeout=30) as c:
            c.silence = 5.0
            c.send(build_request("GET", path))
            r = c.read_response(sink=h.update, timeout=30)
        assert r.status == 200 and h.hexdigest() == want, f"download #{i} ({path}) corrupt"

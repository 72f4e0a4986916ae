"""Connection handling: upstream keep-alive reuse, client keep-alive, pipelining,
HTTP/1.0, and a bounded load run. (docs/proxy.md, "Behaviour", first item)"""

import threading

from rawhttp import Client, build_request, get
from upstreams import route

WORKERS = 2


def test_upstream_connection_reused_over_one_client_connection(start_proxy, upstream):
    a = upstream("a")
    p = start_proxy(routes=[route("app.test", a)], workers=WORKERS)
    with Client(p.port) as c:
        for i in range(100):
            r = c.request("GET", f"/k/{i}")
            assert r.status == 200 and r.json()["path"] == f"/k/{i}"
    assert a.count() == 100
    assert a.accepted <= WORKERS, f"upstream accepted {a.accepted} connections for 100 sequential requests"


def test_upstream_connections_reused_across_client_connections(start_proxy, upstream):
    a = upstream("a")
    p = start_proxy(routes=[route("app.test", a)], workers=WORKERS)
    for i in range(30):
        assert get(p.port, f"/n/{i}").status == 200
    # a client's "Connection: close" is hop-by-hop: the upstream connection stays pooled
    for i in range(20):
        r = get(p.port, f"/c/{i}", headers=[("Connection", "close")])
        assert r.status == 200
    # HTTP/1.0 clients too
    for i in range(10):
        with Client(p.port) as c:
            r = c.request("GET", f"/h10/{i}", version="HTTP/1.0")
            assert r.status == 200
    assert a.count() == 60
    assert a.accepted <= WORKERS, f"upstream accepted {a.accepted} connections for 60 sequential requests"


def test_client_keepalive_and_connection_close(start_proxy, upstream):
    a = upstream("a")
    p = start_proxy(routes=[route("app.test", a)])
    with Client(p.port) as c:
        assert c.request("GET", "/1").status == 200
        assert c.request("GET", "/2").status == 200
        r = c.request("GET", "/3", headers=[("Connection", "close")])
        assert r.status == 200
        c.wait_closed(5)


def test_http10_client(start_proxy, upstream):
    a = upstream("a")
    p = start_proxy(routes=[route("app.test", a)])
    with Client(p.port) as c:
        r = c.request("GET", "/old", version="HTTP/1.0")
        assert r.status == 200 and r.json()["path"] == "/old"
        assert r.version in ("HTTP/1.0", "HTTP/1.1")
        c.wait_closed(5)  # HTTP/1.0 without keep-alive: the proxy closes
    with Client(p.port) as c:
        r = c.request("GET", "/ka1", version="HTTP/1.0", headers=[("Connection", "keep-alive")])
        assert r.status == 200
        r = c.request("GET", "/ka2", version="HTTP/1.0", headers=[("Connection", "keep-alive")])
        assert r.status == 200 and r.json()["path"] == "/ka2"


def test_pipelining_responses_in_order(start_proxy, upstream):
    a, b = upstream("a"), upstream("b")
    p = start_proxy(routes=[route("app.test", a), route("app.test/b", b)])
    reqs = []
    for i in range(10):
        if i == 4:
            reqs.append(build_request("POST", f"/p/{i}", body=b"x" * 1000))
        elif i == 9:
            reqs.append(build_request("GET", f"/p/{i}", headers=[("Connection", "close")]))
        elif i % 3 == 0:
            reqs.append(build_request("GET", f"/b/p/{i}"))  # another upstream
        else:
            reqs.append(build_request("GET", f"/p/{i}"))
    with Client(p.port) as c:
        c.send(b"".join(reqs))  # one write
        for i in range(10):
            r = c.read_response()
            assert r.status == 200
            d = r.json()
            want = f"/b/p/{i}" if i % 3 == 0 and i != 9 else f"/p/{i}"
            assert d["path"] == want, f"response {i} out of order: {d['path']}"
            if i == 4:
                assert d["body_len"] == 1000
        c.wait_closed(5)


def test_pipelined_requests_with_slow_first(start_proxy, upstream):
    a = upstream("a")
    p = start_proxy(routes=[route("app.test", a)])
    with Client(p.port) as c:
        c.send(build_request("GET", "/sleep/0.3") + build_request("GET", "/fast"))
        assert c.read_response().json()["path"] == "/sleep/0.3"
        assert c.read_response().json()["path"] == "/fast"


def test_load_sanity(start_proxy, upstream):
    """2000 requests over 20 keep-alive connections from threads: no failures."""
    a, b = upstream("a"), upstream("b")
    p = start_proxy(routes=[route("app.test", a, b)])
    failures = []
    ok = [0]
    lock = threading.Lock()

    def worker(n):
        try:
            with Client(p.port, timeout=20) as c:
                for i in range(100):
                    path = f"/load/{n}/{i}"
                    body = None if i % 4 else f"body-{n}-{i}".encode()
                    r = c.request("POST" if body else "GET", path, body=body)
                    d = r.json()
                    if r.status != 200 or d["path"] != path or (body and d["body"] != body.decode()):
                        with lock:
                            failures.append((path, r.status, d.get("path")))
                    else:
                        with lock:
                            ok[0] += 1
        except Exception as e:  # noqa: BLE001 - any error is a failure to report
            with lock:
                failures.append((n, repr(e)))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads), "load threads did not finish within 120 s"
    assert not failures, f"{len(failures)} failures, first: {failures[:5]}"
    assert ok[0] == 2000
    assert a.count() + b.count() == 2000
    assert min(a.count(), b.count()) > 500, (a.count(), b.count())

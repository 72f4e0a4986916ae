"""Route reload on SIGHUP, and draining of routes a reload removed.
(docs/proxy.md, "Behaviour": SIGHUP; option --drain-timeout)"""

import time

from rawhttp import Client, build_request, get
from upstreams import route, wait_until


def served_by(port, name, host="app.test"):
    def check():
        r = get(port, "/probe", host=host)
        return r.status == 200 and r.upstream == name
    return check


def test_sighup_switches_upstream_keeps_connections(start_proxy, upstream, routes_file):
    a, b = upstream("a"), upstream("b")
    f = routes_file(route("app.test", a) + "\n")
    p = start_proxy(args=["--routes", f])
    old = Client(p.port)
    assert old.request("GET", "/1").upstream == "a"
    f = routes_file("# moved\n" + route("app.test", b) + "\n")
    p.sighup()
    wait_until(served_by(p.port, "b"), 5, interval=0.05, what="new requests to go to the new upstream after SIGHUP")
    # the client connection opened before the reload is still usable, and routes by the new table
    r = old.request("GET", "/2")
    assert r.status == 200 and r.upstream == "b"
    for i in range(10):
        assert get(p.port, f"/n/{i}").upstream == "b"
    assert p.alive()


def test_sighup_adds_and_removes_routes(start_proxy, upstream, routes_file):
    a, b = upstream("a"), upstream("b")
    f = routes_file(route("one.test", a) + "\n")
    p = start_proxy(args=["--routes", f])
    assert get(p.port, "/", host="two.test").status == 404
    routes_file(route("two.test", b) + "\n")
    p.sighup()
    wait_until(served_by(p.port, "b", host="two.test"), 5, interval=0.05, what="the added route")
    assert get(p.port, "/", host="one.test").status == 404


def test_sighup_bad_file_keeps_old_table(start_proxy, upstream, routes_file):
    a, b = upstream("a"), upstream("b")
    f = routes_file(route("app.test", a) + "\n")
    p = start_proxy(args=["--routes", f])
    assert get(p.port, "/").upstream == "a"
    # line 1 alone would be valid and change the route; line 3 is broken
    routes_file(route("app.test", b) + "\n# comment\nother.test=127.0.0.1\n")
    p.sighup()
    wait_until(lambda: f"{f.name}:3" in p.stderr(), 5, interval=0.05,
               what=f"the proxy to log the error naming {f.name}:3")
    for i in range(10):
        r = get(p.port, f"/{i}")
        assert r.status == 200 and r.upstream == "a", "a bad routes file changed the table"
    assert get(p.port, "/", host="other.test").status == 404
    # a later good file is loaded normally
    routes_file(route("app.test", b) + "\n")
    p.sighup()
    wait_until(served_by(p.port, "b"), 5, interval=0.05, what="the good file to be loaded")


def test_sighup_without_routes_file_is_harmless(start_proxy, upstream):
    a = upstream("a")
    p = start_proxy(routes=[route("app.test", a)])
    p.sighup()
    p.sighup()
    with Client(p.port) as c:
        for i in range(5):
            assert c.request("GET", f"/{i}").upstream == "a"
    assert p.alive()


def test_inflight_request_completes_after_reload(start_proxy, upstream, routes_file):
    a, b = upstream("a"), upstream("b")
    f = routes_file(route("app.test", a) + "\n")
    p = start_proxy(args=["--routes", f])
    slow = Client(p.port)
    slow.send(build_request("GET", "/sleep/2"))
    a.wait_inflight("/sleep/2")
    routes_file(route("app.test", b) + "\n")
    p.sighup()
    wait_until(served_by(p.port, "b"), 5, interval=0.05, what="the reload")
    r = slow.read_response(timeout=6)
    assert r.status == 200 and r.upstream == "a" and r.json()["path"] == "/sleep/2"


def test_inflight_request_on_removed_route_drains(start_proxy, upstream, routes_file):
    a, b = upstream("a"), upstream("b")
    f = routes_file(route("app.test", a) + "\n" + route("other.test", b) + "\n")
    p = start_proxy(args=["--routes", f])  # default --drain-timeout 30s
    slow = Client(p.port)
    slow.send(build_request("GET", "/sleep/2"))
    a.wait_inflight("/sleep/2")
    routes_file(route("other.test", b) + "\n")
    p.sighup()
    wait_until(lambda: get(p.port, "/").status == 404, 5, interval=0.05, what="the reload removing app.test")
    r = slow.read_response(timeout=6)
    assert r.status == 200 and r.upstream == "a"


def test_drain_timeout_cuts_inflight_with_504(start_proxy, upstream, routes_file):
    a, b = upstream("a"), upstream("b")
    f = routes_file(route("app.test", a) + "\n" + route("other.test", b) + "\n")
    p = start_proxy(args=["--routes", f, "--drain-timeout", "1s"])
    slow = Client(p.port)
    slow.send(build_request("GET", "/sleep/5"))
    a.wait_inflight("/sleep/5")
    routes_file(route("other.test", b) + "\n")
    t0 = time.monotonic()
    p.sighup()
    r = slow.read_response(timeout=8)
    elapsed = time.monotonic() - t0
    assert r.status == 504, r
    assert 0.5 <= elapsed < 3.5, f"in-flight request cut {elapsed:.2f}s after the reload (drain timeout 1s)"
    assert get(p.port, "/").status == 404
    assert get(p.port, "/", host="other.test").upstream == "b"


def test_reloads_under_load_drop_nothing(start_proxy, upstream, routes_file):
    """Keep-alive clients send requests continuously while the routes are
    swapped back and forth five times: not one request fails."""
    import threading
    a, b = upstream("a"), upstream("b")
    f = routes_file(route("app.test", a) + "\n")
    p = start_proxy(args=["--routes", f])
    stop = threading.Event()
    failures, served = [], []
    lock = threading.Lock()

    def load(n):
        try:
            with Client(p.port) as c:
                i = 0
                while not stop.is_set():
                    r = c.request("GET", f"/l/{n}/{i}")
                    with lock:
                        (served if r.status == 200 else failures).append((r.status, r.upstream))
                    i += 1
        except Exception as e:  # noqa: BLE001
            with lock:
                failures.append(repr(e))
    ts = [threading.Thread(target=load, args=(n,)) for n in range(4)]
    for t in ts:
        t.start()
    try:
        for k in range(5):
            target = b if k % 2 == 0 else a
            routes_file(route("app.test", target) + "\n")
            p.sighup()
            wait_until(served_by(p.port, target.name), 5, interval=0.05, what=f"reload #{k + 1}")
    finally:
        stop.set()
        for t in ts:
            t.join(10)
    assert not failures, failures[:5]
    assert len(served) > 50 and a.count() > 0 and b.count() > 0

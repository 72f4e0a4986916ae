"""Replica failure, ejection, and load balancing.
(docs/proxy.md, "Behaviour": Replica failure; options --balance, --eject-*)"""

import threading
from collections import Counter

from rawhttp import Client, build_request, get
from upstreams import closed_port, route, wait_until


def test_one_replica_down_all_requests_succeed(start_proxy, upstream):
    a = upstream("a")
    dead = f"127.0.0.1:{closed_port()}"
    p = start_proxy(routes=[route("app.test", dead, a)])
    for i in range(10):  # fresh connections
        r = get(p.port, f"/f/{i}")
        assert r.status == 200 and r.upstream == "a"
    with Client(p.port) as c:  # one keep-alive connection
        for i in range(20):
            r = c.request("POST" if i % 2 else "GET", f"/k/{i}", body=b"data" if i % 2 else None)
            assert r.status == 200 and r.upstream == "a"
    assert a.count() == 30


def test_ejected_replica_gets_no_requests_until_eject_for_passes(start_proxy, upstream):
    """After --eject-after consecutive connect failures the replica is skipped
    for --eject-for. Proven by bringing a server up on the dead replica's port
    right after the ejection: while ejected it must get nothing (round-robin
    would otherwise send it every second request); afterwards it must get
    requests again."""
    a = upstream("a")
    dead_port = closed_port()
    p = start_proxy(routes=[route("app.test", f"127.0.0.1:{dead_port}", a)],
                    args=["--eject-after", "2", "--eject-for", "3s"], workers=1)
    with Client(p.port) as c:
        for i in range(8):  # enough picks of the dead replica to reach 2 failures
            r = c.request("GET", f"/warm/{i}")
            assert r.status == 200 and r.upstream == "a"
        revived = upstream("revived", port=dead_port)
        for i in range(20):
            r = c.request("GET", f"/ejected/{i}")
            assert r.status == 200
        assert revived.count() == 0, "an ejected replica got requests within --eject-for"

        def revived_used():
            return c.request("GET", "/probe").upstream == "revived"
        wait_until(revived_used, 10, interval=0.05, what="the ejected replica to be used again after --eject-for")


def test_replica_killed_mid_test(start_proxy, upstream):
    a, b = upstream("a"), upstream("b")
    p = start_proxy(routes=[route("app.test", a, b)])
    with Client(p.port) as c:
        seen = Counter(c.request("GET", f"/before/{i}").upstream for i in range(10))
        assert seen["a"] > 0 and seen["b"] > 0
        b.stop()  # closes its listener and every connection, pooled ones included
        for i in range(30):
            r = c.request("GET", f"/after/{i}")
            assert r.status == 200 and r.upstream == "a", f"request {i} after the kill: {r}"
    for i in range(10):
        r = get(p.port, f"/fresh/{i}")
        assert r.status == 200 and r.upstream == "a"


def test_all_replicas_down_502(start_proxy):
    d1, d2 = closed_port(), closed_port()
    p = start_proxy(routes=[f"app.test=127.0.0.1:{d1},127.0.0.1:{d2}"])
    assert get(p.port, "/").status == 502
    # once both are ejected the proxy may answer 503 (no replica available)
    for i in range(6):
        r = get(p.port, f"/{i}")
        assert r.status in (502, 503), r


def test_round_robin_even(start_proxy, upstream):
    ups = [upstream(n) for n in "abc"]
    p = start_proxy(routes=[route("app.test", *ups)], args=["--balance", "round-robin"])
    with Client(p.port) as c:
        seen = Counter(c.request("GET", f"/{i}").upstream for i in range(30))
    assert all(9 <= seen[n] <= 11 for n in "abc"), f"uneven over one connection: {seen}"
    seen = Counter(get(p.port, f"/n/{i}").upstream for i in range(30))
    assert all(7 <= seen[n] <= 13 for n in "abc"), f"uneven over new connections: {seen}"


def test_round_robin_is_default(start_proxy, upstream):
    ups = [upstream(n) for n in "ab"]
    p = start_proxy(routes=[route("app.test", *ups)])
    with Client(p.port) as c:
        seen = Counter(c.request("GET", f"/{i}").upstream for i in range(20))
    assert seen["a"] >= 8 and seen["b"] >= 8, seen


def _least_conn(start_proxy, upstream, workers, new_connections):
    a, b = upstream("a"), upstream("b")
    p = start_proxy(routes=[route("app.test", a, b)], args=["--balance", "least-conn"], workers=workers)
    slow = Client(p.port)
    slow.send(build_request("GET", "/sleep/3"))
    wait_until(lambda: a.is_active("/sleep/3") or b.is_active("/sleep/3"), 5,
               what="the slow request to reach an upstream")
    busy, idle = (a, b) if a.is_active("/sleep/3") else (b, a)
    seen = Counter()
    if new_connections:
        for i in range(10):
            seen[get(p.port, f"/q/{i}").upstream] += 1
    else:
        with Client(p.port) as c:
            for i in range(10):
                seen[c.request("GET", f"/q/{i}").upstream] += 1
    assert seen == {idle.name: 10}, (
        f"least-conn sent requests to the replica with a request in flight: {dict(seen)} (busy: {busy.name})")
    r = slow.read_response(timeout=6)
    assert r.status == 200 and r.upstream == busy.name


def test_least_conn_avoids_busy_replica(start_proxy, upstream):
    _least_conn(start_proxy, upstream, workers=1, new_connections=False)


def test_least_conn_across_workers(start_proxy, upstream):
    """Same with 2 workers and new client connections (which the kernel spreads
    over the workers): the in-flight count must be shared."""
    _least_conn(start_proxy, upstream, workers=2, new_connections=True)


def test_concurrent_slow_requests_spread(start_proxy, upstream):
    """Round-robin with concurrent slow requests: both replicas work at once."""
    a, b = upstream("a"), upstream("b")
    p = start_proxy(routes=[route("app.test", a, b)])
    results = []

    def one(i):
        results.append(get(p.port, f"/sleep/0.5/{i}").upstream)
    ts = [threading.Thread(target=one, args=(i,)) for i in range(6)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(10)
    assert len(results) == 6 and set(results) == {"a", "b"}


def test_idempotent_request_retried_when_reused_connection_was_closed(start_proxy, upstream):
    """The keep-alive race: the proxy sends a GET on a pooled upstream
    connection that the upstream closes without answering. The GET had no
    body and nothing came back, so the proxy retries it on a new connection."""
    a = upstream("a")
    p = start_proxy(routes=[route("app.test", a)], workers=1)
    with Client(p.port) as c:
        for i in range(3):
            assert c.request("GET", "/arm-drop").status == 200
            r = c.request("GET", f"/retry-me/{i}")
            assert r.status == 200 and r.json()["path"] == f"/retry-me/{i}", r
            assert a.dropped[-1] == ("GET", f"/retry-me/{i}"), "the request did not go over the reused connection"
    assert len(a.dropped) == 3


def test_request_with_body_not_retried(start_proxy, upstream):
    a = upstream("a")
    p = start_proxy(routes=[route("app.test", a)], workers=1)
    with Client(p.port) as c:
        assert c.request("GET", "/arm-drop").status == 200
        r = c.request("POST", "/no-retry", body=b"payload")
    assert r.status == 502, r
    assert a.dropped == [("POST", "/no-retry")]
    assert not [q for q in a.requests if q.path == "/no-retry"], "a POST was sent twice"


def test_idempotent_request_retried_on_another_replica(start_proxy, upstream):
    """A GET without a body whose upstream connection breaks before any
    response (a replica killed mid-request) is sent to another replica once;
    each replica sees it at most once, and when every replica drops it the
    client gets 502. (docs/proxy.md, Behaviour: replica failure)"""
    a, b = upstream("a"), upstream("b")
    p = start_proxy(routes=[route("app.test", a, b)], workers=1)
    r = get(p.port, "/drop")  # both replicas drop /drop: tried on each, then 502
    assert r.status == 502, r
    assert sorted(x[0] for x in a.dropped + b.dropped) == ["GET", "GET"], (a.dropped, b.dropped)
    assert len(a.dropped) == 1 and len(b.dropped) == 1, (a.dropped, b.dropped)


def test_post_on_fresh_connection_not_retried(start_proxy, upstream):
    """A request with a body is never sent twice, even to another replica."""
    a, b = upstream("a"), upstream("b")
    p = start_proxy(routes=[route("app.test", a, b)], workers=1)
    with Client(p.port) as c:
        r = c.request("POST", "/drop", body=b"once")
    assert r.status == 502, r
    assert len(a.dropped) + len(b.dropped) == 1, (a.dropped, b.dropped)

"""Routing: host (exact, wildcard, `*`), path prefixes on segment boundaries,
precedence, 404 for unknown hosts, routes files. (docs/proxy.md, "Routes")"""

import socket

import pytest

from rawhttp import Client, get
from upstreams import route


def test_host_and_path_routing(start_proxy, upstream):
    ups = {n: upstream(n) for n in ["app", "api", "apiv2", "wild", "deepwild", "www", "fallback"]}
    p = start_proxy(routes=[
        route("app.test", ups["app"]),
        route("app.test/api", ups["api"]),
        route("app.test/api/v2", ups["apiv2"]),
        route("*.wild.test", ups["wild"]),
        route("*.deep.wild.test", ups["deepwild"]),
        route("www.wild.test", ups["www"]),
        route("*", ups["fallback"]),
    ])
    cases = [
        # host, path, expected upstream
        ("app.test", "/", "app"),
        ("app.test", "/index.html", "app"),
        ("app.test", "/api", "api"),
        ("app.test", "/api/", "api"),
        ("app.test", "/api/users/1", "api"),
        ("app.test", "/api?q=1", "api"),
        ("app.test", "/apis", "app"),           # segment boundary
        ("app.test", "/api2/x", "app"),
        ("app.test", "/ap", "app"),
        ("app.test", "/api/v2", "apiv2"),       # longest prefix wins
        ("app.test", "/api/v2/x?y=1", "apiv2"),
        ("app.test", "/api/v20", "api"),
        ("APP.Test", "/", "app"),               # case-insensitive host
        ("app.test:8080", "/api/x", "api"),     # :port ignored
        ("App.TEST:1", "/", "app"),
        ("x.wild.test", "/", "wild"),
        ("a.b.wild.test", "/api", "wild"),
        ("X.WILD.test:99", "/", "wild"),
        ("x.deep.wild.test", "/", "deepwild"),  # longer wildcard suffix first
        ("deep.wild.test", "/", "wild"),
        ("www.wild.test", "/", "www"),          # exact before wildcard
        ("wild.test", "/", "fallback"),         # *.wild.test does not match wild.test
        ("other.test", "/", "fallback"),
        ("127.0.0.1", "/api", "fallback"),
    ]
    # all over one keep-alive connection: routing is per request
    with Client(p.port) as c:
        for host, path, want in cases:
            r = c.request("GET", path, host=host)
            assert r.status == 200, (host, path, r)
            assert r.upstream == want, f"Host {host!r} path {path!r} went to {r.upstream}, expected {want}"
            assert r.json()["path"] == path, "the request target must reach the upstream unchanged"
    # and on fresh connections too
    for host, path, want in cases[::5]:
        assert get(p.port, path, host=host).upstream == want


def test_unknown_host_is_404_and_reaches_no_upstream(start_proxy, upstream):
    a, w = upstream("a"), upstream("w")
    p = start_proxy(routes=[route("app.test", a), route("*.wild.test", w)])
    for host in ["other.test", "wild.test", "app.test.evil", "xapp.test", "app.tes"]:
        r = get(p.port, "/", host=host)
        assert r.status == 404, (host, r)
    assert get(p.port, "/", host="app.test").upstream == "a"
    assert a.count() == 1 and w.count() == 0


def test_path_routes_with_trailing_slash_and_query(start_proxy, upstream):
    a, b = upstream("a"), upstream("b")
    p = start_proxy(routes=[route("app.test", a), route("app.test/static/img", b)])
    for path, want in [("/static/img", "b"), ("/static/img/x.png", "b"), ("/static/img?v=2", "b"),
                       ("/static/imgs", "a"), ("/static", "a"), ("/static/im", "a")]:
        assert get(p.port, path).upstream == want, path


def test_routes_file_with_comments_and_blank_lines(start_proxy, upstream, routes_file):
    a, b, c = upstream("a"), upstream("b"), upstream("c")
    f = routes_file(
        "# davit routes\n"
        "\n"
        f"app.test={a.addr}\n"
        "# the API\n"
        f"app.test/api={b.addr}   # trailing comment\n"
        "\n"
        f"*={c.addr}\n"
    )
    p = start_proxy(args=["--routes", f])
    assert get(p.port, "/").upstream == "a"
    assert get(p.port, "/api/x").upstream == "b"
    assert get(p.port, "/", host="zzz.test").upstream == "c"


def test_multiple_replicas_in_one_route_all_serve(start_proxy, upstream):
    a, b = upstream("a"), upstream("b")
    p = start_proxy(routes=[route("app.test", a, b)])
    with Client(p.port) as c:
        seen = {c.request("GET", f"/{i}").upstream for i in range(10)}
    assert seen == {"a", "b"}


def test_ipv6_and_hostname_replicas(start_proxy, upstream):
    try:
        v6 = upstream("v6", host="::1")
    except OSError as e:
        pytest.fail(f"cannot listen on [::1] ({e}); the test machine needs IPv6 on loopback")
    # "localhost" may resolve to 127.0.0.1 and/or ::1: listen on both, same port
    named = upstream("named")
    upstream("named", host="::1", port=named.port)
    p = start_proxy(routes=[route("v6.test", v6), f"named.test=localhost:{named.port}"])
    assert get(p.port, "/", host="v6.test").upstream == "v6"
    r = get(p.port, "/", host="named.test")
    assert r.status == 200 and r.upstream == "named", r


def test_listen_on_several_addresses(start_proxy, upstream):
    from upstreams import free_port
    a = upstream("a")
    extra = free_port()
    p = start_proxy(routes=[route("*", a)], args=["--listen", f"127.0.0.1:{extra}"])
    assert get(p.port, "/").upstream == "a"
    # the second listener may come up a moment after the first
    from upstreams import wait_until

    def up():
        try:
            with socket.create_connection(("127.0.0.1", extra), timeout=0.5):
                return True
        except OSError:
            return False
    wait_until(up, 5, what=f"second listener 127.0.0.1:{extra}")
    assert get(extra, "/").upstream == "a"

"""Timeouts, with short values given as flags. (docs/proxy.md, "Options")

Each check has a lower bound (the timeout did not fire at once: the proxy
really waited) and an upper bound well under the default (the flag is used)."""

import base64
import os
import select
import time

import pytest

from rawhttp import Client, Timeout, Truncated, build_request
from upstreams import HangingListener, closed_port, route, wait_until

LOW = 0.5   # a 1 s timeout must not fire before this
HIGH = 4.0  # ... and must have fired by this


def test_header_timeout_half_head(start_proxy, upstream):
    a = upstream("a")
    p = start_proxy(routes=[route("app.test", a)], args=["--header-timeout", "1s"])
    with Client(p.port) as c:
        c.send(b"GET / HTTP/1.1\r\nHost: app.test\r\nX-Half: ")
        t0 = time.monotonic()
        r = c.read_response(timeout=6)
        elapsed = time.monotonic() - t0
        assert r.status == 408
        assert LOW <= elapsed < HIGH, f"408 after {elapsed:.2f}s (header timeout 1s)"
        c.wait_closed(3)
    assert a.count() == 0


def test_header_timeout_slowloris_trickle(start_proxy, upstream):
    """One byte every 100 ms: each byte is progress, but the whole head must
    arrive within --header-timeout."""
    a = upstream("a")
    p = start_proxy(routes=[route("app.test", a)], args=["--header-timeout", "1s"])
    head = b"GET / HTTP/1.1\r\nHost: app.test\r\nX-Slow: " + b"a" * 200 + b"\r\n\r\n"
    with Client(p.port) as c:
        t0 = time.monotonic()
        i = 0
        while True:
            readable, _, _ = select.select([c.sock], [], [], 0.1)
            if readable:
                break
            assert time.monotonic() - t0 < 8, "the proxy kept a slowloris connection for 8 s"
            try:
                c.send(head[i:i + 1])
            except OSError:
                break
            i += 1
        elapsed = time.monotonic() - t0
        r = c.read_response(timeout=3)
        assert r.status == 408
        assert LOW <= elapsed < HIGH, f"408 after {elapsed:.2f}s of trickling (header timeout 1s)"
        c.wait_closed(3)
    assert a.count() == 0


def test_header_timeout_idle_new_connection(start_proxy, upstream):
    a = upstream("a")
    p = start_proxy(routes=[route("app.test", a)], args=["--header-timeout", "1s"])
    with Client(p.port) as c:
        t0 = time.monotonic()
        data = c.wait_closed(6)  # a 408 page or a silent close are both fine
        elapsed = time.monotonic() - t0
        assert LOW <= elapsed < HIGH, f"idle new connection closed after {elapsed:.2f}s"
        assert data == b"" or data.startswith(b"HTTP/1.1 408"), data


def test_keepalive_timeout(start_proxy, upstream):
    a = upstream("a")
    p = start_proxy(routes=[route("app.test", a)], args=["--keepalive-timeout", "1s"])
    with Client(p.port) as c:
        # requests spaced 0.4 s apart keep the connection alive past 1 s
        for i in range(4):
            assert c.request("GET", f"/{i}").status == 200
            assert c.is_open_after(0.4)
        t0 = time.monotonic()
        data = c.wait_closed(6)
        elapsed = time.monotonic() - t0
        assert LOW <= elapsed < HIGH, f"idle keep-alive connection closed after {elapsed:.2f}s (timeout 1s)"
        assert data == b"" or data.startswith(b"HTTP/1.1 408"), data


def test_response_timeout_504(start_proxy, upstream):
    a = upstream("slow")
    p = start_proxy(routes=[route("app.test", a)], args=["--response-timeout", "1s"])
    with Client(p.port) as c:
        assert c.request("GET", "/sleep/0.2").status == 200  # under the limit
    with Client(p.port) as c:
        t0 = time.monotonic()
        r = c.request("GET", "/sleep/3", timeout=6)
        elapsed = time.monotonic() - t0
        assert r.status == 504
        assert LOW <= elapsed < 2.5, f"504 after {elapsed:.2f}s (response timeout 1s)"


def test_response_timeout_not_applied_to_streaming_body(start_proxy, upstream):
    """--response-timeout covers the response head; a body that keeps arriving
    (SSE) is governed by --read-timeout instead."""
    a = upstream("sse")
    p = start_proxy(routes=[route("app.test", a)], args=["--response-timeout", "500ms"])
    from rawhttp import BodyStream
    with Client(p.port) as c:
        c.send(build_request("GET", "/sse/rt"))
        r = c.read_head(timeout=5)
        s = BodyStream(c, r)
        s.read_until(b"one\n\n", timeout=5)
        assert c.is_open_after(1.0)  # longer than the response timeout
        a.signal("rt")
        s.read_until(b"two\n\n", timeout=5)


def test_connect_timeout(start_proxy, upstream):
    hang = HangingListener()
    try:
        if not hang.connect_hangs():
            # cannot make connect() hang on this machine: check refused -> 502
            dead = closed_port()
            p = start_proxy(routes=[f"app.test=127.0.0.1:{dead}"], args=["--connect-timeout", "500ms"])
            with Client(p.port) as c:
                assert c.request("GET", "/").status == 502
            pytest.fail("connect() to a full accept queue did not hang here; only checked "
                        "connection refused -> 502, not --connect-timeout")
        good = upstream("good")
        p = start_proxy(routes=[route("hang.test", hang), route("mixed.test", hang, good)],
                        args=["--connect-timeout", "500ms"])
        with Client(p.port) as c:
            t0 = time.monotonic()
            r = c.request("GET", "/", host="hang.test", timeout=8)
            elapsed = time.monotonic() - t0
            assert r.status in (502, 504), r
            assert 0.3 <= elapsed < 3, f"gave up after {elapsed:.2f}s (connect timeout 500ms, default 5s)"
        # a replica whose connect times out is skipped: the other one answers
        for i in range(4):
            t0 = time.monotonic()
            r = Client(p.port).request("GET", f"/{i}", host="mixed.test", timeout=8)
            assert r.status == 200 and r.upstream == "good"
            assert time.monotonic() - t0 < 3
    finally:
        hang.close()


def test_read_timeout_download(start_proxy, upstream):
    a = upstream("stall")
    p = start_proxy(routes=[route("app.test", a)], args=["--read-timeout", "1s"])
    with Client(p.port) as c:
        c.send(build_request("GET", "/stall/1000"))
        r = c.read_head(timeout=5)
        assert r.status == 200 and r.header("Content-Length") == "1000"
        t0 = time.monotonic()
        with pytest.raises(Truncated) as ei:
            c.read_body(r, "GET", time.monotonic() + 6)
        elapsed = time.monotonic() - t0
        assert ei.value.received == b"x" * 10 or len(ei.value.received) < 1000
        assert LOW <= elapsed < HIGH, f"stalled body cut after {elapsed:.2f}s (read timeout 1s)"


def test_read_timeout_upload(start_proxy, upstream):
    a = upstream("a")
    p = start_proxy(routes=[route("app.test", a)], args=["--read-timeout", "1s"])
    with Client(p.port) as c:
        c.send(build_request("POST", "/upload", headers=[("Content-Length", "1000")]) + b"y" * 10)
        t0 = time.monotonic()
        try:
            data = c.wait_closed(6)  # an error page (408/504/...) or a plain close
        except Timeout:
            pytest.fail("a client that stopped sending its body was not cut off within 6 s (read timeout 1s)")
        elapsed = time.monotonic() - t0
        assert LOW <= elapsed < HIGH, f"stalled upload cut after {elapsed:.2f}s (read timeout 1s)"
        assert not data.startswith(b"HTTP/1.1 200"), data
    assert a.count() == 0, "the upstream got a complete request"


def test_tunnel_timeout(start_proxy, upstream):
    a = upstream("ws")
    p = start_proxy(routes=[route("app.test", a)], args=["--tunnel-timeout", "1s", "--read-timeout", "60s"])
    from upstreams import Conn, ws_encode, ws_read_frame
    with Client(p.port) as c:
        key = base64.b64encode(os.urandom(16)).decode()
        c.send(build_request("GET", "/ws", headers=[("Upgrade", "websocket"), ("Connection", "Upgrade"),
                                                     ("Sec-WebSocket-Key", key), ("Sec-WebSocket-Version", "13")]))
        assert c.read_head(timeout=5).status == 101
        c.sock.settimeout(5)
        conn = Conn(c.sock)
        conn.buf += c.buf
        c.buf.clear()
        for i in range(3):  # traffic every 0.4 s keeps it open past 1 s
            c.send(ws_encode(0x1, b"ping %d" % i, mask=True))
            assert ws_read_frame(conn)[2] == b"ping %d" % i
            assert c.is_open_after(0.4)
        t0 = time.monotonic()
        c.wait_closed(6)
        elapsed = time.monotonic() - t0
        assert LOW <= elapsed < HIGH, f"idle tunnel closed after {elapsed:.2f}s (tunnel timeout 1s)"


def test_upstream_idle_timeout(start_proxy, upstream):
    a = upstream("a")
    p = start_proxy(routes=[route("app.test", a)], args=["--upstream-idle-timeout", "1s"])
    with Client(p.port) as c:
        assert c.request("GET", "/").status == 200
        t0 = time.monotonic()
        wait_until(lambda: not a.open_conns, 6, what="the proxy to close its idle upstream connection")
        elapsed = time.monotonic() - t0
        assert LOW <= elapsed < HIGH, f"idle upstream connection closed after {elapsed:.2f}s (timeout 1s)"
        # the client connection is unaffected, and a new upstream connection is made
        r = c.request("GET", "/again")
        assert r.status == 200 and a.accepted == 2

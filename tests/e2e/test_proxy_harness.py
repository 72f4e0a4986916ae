"""Self-tests of the test harness (upstream servers and raw client) without the
proxy: if one of these fails, the proxy tests' verdicts cannot be trusted."""

import hashlib
import time

import websocket

import rawhttp
from rawhttp import Client
from upstreams import HangingListener, closed_port, encode_chunked, pattern_sha256


def test_echo_and_keepalive_counting(upstream):
    up = upstream("a")
    with Client(up.port) as c:
        for i in range(5):
            r = c.request("GET", f"/x/{i}", headers=[("X-T", "1")])
            assert r.status == 200 and r.upstream == "a"
            d = r.json()
            assert d["path"] == f"/x/{i}" and ["X-T", "1"] in d["headers"] and d["seq"] == i + 1
    assert up.accepted == 1 and up.count() == 5


def test_request_bodies(upstream):
    up = upstream("a")
    body = bytes(range(256)) * 1000
    with Client(up.port) as c:
        r = c.request("POST", "/upload", body=body)
        assert r.json()["body_len"] == len(body)
        assert r.json()["body_sha256"] == hashlib.sha256(body).hexdigest()
        c.send(rawhttp.build_request("POST", "/upload", headers=[("Transfer-Encoding", "chunked")])
               + encode_chunked([body[:10], body[10:]], [("X-T", "v")]))
        d = c.read_response().json()
        assert d["body_len"] == len(body) and d["chunked"] and d["trailers"] == [["X-T", "v"]]


def test_response_framings(upstream):
    up = upstream("a")
    with Client(up.port) as c:
        r = c.request("GET", "/chunked?sizes=1,70000,3&trailer=1")
        assert r.chunked and len(r.body) == 70004
        assert dict(r.trailers)["X-Sum"] == hashlib.sha256(r.body).hexdigest()
        r = c.request("GET", "/stream/300000")
        assert hashlib.sha256(r.body).hexdigest() == pattern_sha256(300000)
        r = c.request("GET", "/stream/300000?chunked=1")
        assert r.chunked and hashlib.sha256(r.body).hexdigest() == pattern_sha256(300000)
        r = c.request("GET", "/close/200000")
        assert r.close_delimited and hashlib.sha256(r.body).hexdigest() == pattern_sha256(200000)


def test_sleep_and_inflight(upstream):
    up = upstream("a")
    c = Client(up.port)
    t0 = time.monotonic()
    c.send(rawhttp.build_request("GET", "/sleep/0.3"))
    up.wait_inflight("/sleep/0.3", 2)
    assert c.read_response().status == 200
    assert time.monotonic() - t0 >= 0.3
    rawhttp.close_all()


def test_bad_request_is_418(upstream):
    up = upstream("a")
    with Client(up.port) as c:
        c.send(b"GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n")
        assert c.read_response().status == 418
    assert up.bad_requests and not up.requests


def test_websocket_echo_direct(upstream):
    up = upstream("a")
    ws = websocket.create_connection(f"ws://127.0.0.1:{up.port}/ws", timeout=5)
    ws.send("hello")
    assert ws.recv() == "hello"
    ws.send_binary(b"\x00\x01" * 40000)
    assert ws.recv() == b"\x00\x01" * 40000
    ws.close()


def test_sse_waits_for_signal(upstream):
    up = upstream("a")
    with Client(up.port) as c:
        c.send(rawhttp.build_request("GET", "/sse/t1"))
        r = c.read_head()
        assert r.status == 200
        first = c._until(b"one\n\n", time.monotonic() + 5, "event one")
        assert b"data: one" in first
        assert c.is_open_after(0.2)  # nothing more until signalled
        up.signal("t1")
        c._until(b"two\n\n", time.monotonic() + 5, "event two")


def test_hanging_listener_hangs_or_refused_port():
    h = HangingListener()
    try:
        assert h.connect_hangs(), "loopback connect to a full accept queue did not hang"
    finally:
        h.close()
    import socket
    s = socket.socket()
    try:
        s.settimeout(1)
        assert s.connect_ex(("127.0.0.1", closed_port())) != 0
    finally:
        s.close()

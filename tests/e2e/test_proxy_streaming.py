"""WebSocket tunnels and server-sent events through the proxy.
(docs/proxy.md, "Behaviour": Upgrade, streamed responses)"""

import base64
import os
import time

import pytest
import websocket

from rawhttp import BodyStream, Client, Timeout, Truncated, build_request
from upstreams import Conn, route, ws_accept_key, ws_encode, ws_read_frame


def test_websocket_echo_with_websocket_client(start_proxy, upstream):
    a = upstream("ws")
    other = upstream("other")
    p = start_proxy(routes=[route("app.test", other), route("app.test/ws", a)])
    ws = websocket.create_connection(f"ws://127.0.0.1:{p.port}/ws", host="app.test", timeout=5)
    try:
        for i in range(5):
            ws.send(f"hello {i}")
            assert ws.recv() == f"hello {i}"
        blob = os.urandom(200_000)  # 64-bit length frame
        ws.send_binary(blob)
        assert ws.recv() == blob
        ws.send_binary(b"\x00" * 300)  # 16-bit length frame
        assert ws.recv() == b"\x00" * 300
        ws.ping(b"are you there")
        op, frame = ws.recv_data_frame(control_frame=True)
        assert op == websocket.ABNF.OPCODE_PONG and frame.data == b"are you there"
    finally:
        ws.close(timeout=5)
    assert [r.path for r in a.requests] == ["/ws"] and other.count() == 0


def test_websocket_raw_handshake_frames_and_close(start_proxy, upstream):
    a = upstream("ws")
    p = start_proxy(routes=[route("app.test", a)])
    key = base64.b64encode(os.urandom(16)).decode()
    with Client(p.port) as c:
        c.send(build_request("GET", "/ws", headers=[
            ("Upgrade", "websocket"), ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", key), ("Sec-WebSocket-Version", "13")]))
        r = c.read_head(timeout=5)
        assert r.status == 101, r
        assert r.header("Upgrade", "").lower() == "websocket"
        assert "upgrade" in r.header("Connection", "").lower()
        assert r.header("Sec-WebSocket-Accept") == ws_accept_key(key)
        # everything from here on is a byte tunnel; frames from the client are masked
        c.sock.settimeout(5)
        conn = Conn(c.sock)
        conn.buf += c.buf
        c.buf.clear()
        msgs = [(0x1, b"text frame"), (0x2, bytes(range(256)) * 10), (0x1, "ünïcode".encode())]
        c.send(b"".join(ws_encode(op, data, mask=True) for op, data in msgs))  # several in one write
        for op, data in msgs:
            fin, rop, payload = ws_read_frame(conn)
            assert (fin, rop, payload) == (True, op, data)
        # fragmented message: frames pass through as they are
        c.send(ws_encode(0x1, b"frag-1 ", fin=False, mask=True) + ws_encode(0x0, b"frag-2", mask=True))
        assert ws_read_frame(conn) == (False, 0x1, b"frag-1 ")
        assert ws_read_frame(conn) == (True, 0x0, b"frag-2")
        # close handshake; the upstream then closes, and so must the proxy
        c.send(ws_encode(0x8, b"\x03\xe8bye", mask=True))
        assert ws_read_frame(conn) == (True, 0x8, b"\x03\xe8bye")
        c.buf += conn.buf
        c.wait_closed(5)


def test_websocket_rejected_upgrade_stays_http(start_proxy, upstream):
    """An upgrade the upstream does not accept (it answers 200, not 101) is an
    ordinary response; the connection stays HTTP."""
    a = upstream("a")
    p = start_proxy(routes=[route("app.test", a)])
    with Client(p.port) as c:
        r = c.request("GET", "/not-ws", headers=[("Upgrade", "websocket"), ("Connection", "Upgrade"),
                                                  ("Sec-WebSocket-Key", "x"), ("Sec-WebSocket-Version", "13")])
        assert r.status == 200
        r2 = c.request("GET", "/after")
        assert r2.status == 200 and r2.json()["path"] == "/after"


@pytest.mark.parametrize("framing", ["chunked", "close-delimited"])
def test_sse_not_buffered(start_proxy, upstream, framing):
    a = upstream("sse")
    p = start_proxy(routes=[route("app.test", a)])
    token = f"sse-{framing}"
    path = f"/sse/{token}" + ("?close=1" if framing == "close-delimited" else "")
    with Client(p.port) as c:
        c.send(build_request("GET", path, headers=[("Accept", "text/event-stream")]))
        r = c.read_head(timeout=5)
        assert r.status == 200 and r.header("Content-Type") == "text/event-stream"
        s = BodyStream(c, r)
        # event 2 is only sent once we signal: event 1 must arrive on its own
        s.read_until(b"data: one\n\n", timeout=5)
        assert b"two" not in s.data
        t_signal = time.monotonic()
        a.signal(token)
        s.read_until(b"data: two\n\n", timeout=5)
        assert time.monotonic() - t_signal < 5
        assert bytes(s.data) == b"id: 1\ndata: one\n\nid: 2\ndata: two\n\n"
        # the upstream then ends the stream (last chunk, or close): so must the proxy
        try:
            s.read_until(b"never sent", timeout=5)
        except Truncated:
            pass  # the body ended
        except Timeout:
            raise AssertionError(f"the upstream ended the {framing} stream, the proxy did not end it within 5 s")
        assert bytes(s.data) == b"id: 1\ndata: one\n\nid: 2\ndata: two\n\n"

"""Real upstream servers for the proxy's end-to-end tests.

Everything here is plain sockets and threads (standard library only), so a test
controls every byte an upstream sends and can see every request it received.

One server class, `Upstream`, answers according to the request path:

  (anything else)      echo: JSON describing the request (method, path, headers,
                       body length and sha256, trailers), identifying the
                       server by name (field "name" and header X-Upstream)
  /sleep/SECS[/...]    sleep SECS (a float) before the echo
  /status/N[/...]      echo, with status N
  /chunked[?...]       chunked response; ?sizes=1,100,70000 picks the chunk
                       sizes, &trailer=1 adds trailers X-Sum (sha256 of the
                       body) and X-Trailer-Test: yes
  /close/N             HTTP/1.1 response without Content-Length or chunking:
                       N bytes, then the server closes
  /stream/N            N bytes generated on the fly (pattern_chunks), with
                       Content-Length (or chunked with ?chunked=1)
  /stall/N             Content-Length N, sends 10 body bytes, then stalls
                       until the server is stopped (or 60 s)
  /stall-head          accepts the request and never answers (until stopped)
  /raw/NAME            sends RAW_RESPONSES[NAME] (malformed) and closes
  /truncate/N          Content-Length N, sends N/2 bytes, closes
  /pause-upload/SECS   waits SECS before reading the request body, then echoes
  /drop                reads the request, closes the connection without answering
  /arm-drop            answers normally (keep-alive), but the NEXT request on
                       the same connection is read and dropped (connection
                       closed, no answer): the keep-alive race a proxy must
                       handle by retrying idempotent requests
  /hop                 echo, plus hop-by-hop response headers that a proxy
                       must drop (Connection: X-Up-Secret, X-Up-Secret,
                       Keep-Alive, Proxy-Connection)
  /ws                  WebSocket echo server (RFC 6455), own codec
  /sse/TOKEN[?close=1] server-sent events: sends event "one", waits until
                       the test calls server.signal(TOKEN), sends "two",
                       ends (chunked, or close-delimited with close=1)

Request bodies (Content-Length or chunked, any size) are consumed
incrementally: the server keeps the length and sha256 of every body and the
first 64 KiB of it, so /anything doubles as the "upload consumer".

Every server counts accepted TCP connections (`accepted`), records each
complete request (`requests`), counts requests in flight (`inflight`), and
records requests it could not parse (`bad_requests`; it answers those with
status 418 so a test never mistakes them for a proxy's 400).
"""

import base64
import hashlib
import json
import os
import socket
import struct
import threading
import time
import urllib.parse

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

# ---------------------------------------------------------------- utilities


def free_port(host="127.0.0.1"):
    """A TCP port that was free a moment ago (bound, read, closed)."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def closed_port():
    """A port nobody listens on (connect gets ECONNREFUSED)."""
    return free_port()


def wait_until(pred, timeout, interval=0.01, what="condition"):
    """Polls pred() until it is truthy or `timeout` seconds passed; returns its
    value, or raises AssertionError naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


_PATTERN_BLOCK = hashlib.sha256(b"davit").digest() * (65536 // 32)  # 64 KiB


def pattern_chunks(n, chunk=1 << 20):
    """Yields n bytes of a deterministic, position-dependent pattern in pieces of
    at most `chunk` bytes (each 64 KiB block starts with its own index, so a
    lost, duplicated or reordered block changes the checksum)."""
    assert chunk % 65536 == 0
    sent = 0
    block_no = 0
    while sent < n:
        want = min(chunk, n - sent)
        nblocks = (want + 65535) // 65536
        parts = []
        for _ in range(nblocks):
            parts.append(struct.pack(">Q", block_no) + _PATTERN_BLOCK[8:])
            block_no += 1
        data = b"".join(parts)[:want]
        sent += len(data)
        yield data


_pattern_sums = {}


def pattern_sha256(n):
    if n not in _pattern_sums:
        h = hashlib.sha256()
        for c in pattern_chunks(n):
            h.update(c)
        _pattern_sums[n] = h.hexdigest()
    return _pattern_sums[n]


# ------------------------------------------------------ HTTP/1.1 primitives


class ParseError(Exception):
    pass


class Conn:
    """A buffered reader over a socket."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()

    def fill(self):
        data = self.sock.recv(262144)
        if not data:
            raise EOFError
        self.buf += data

    def read_until(self, sep, limit=1 << 20):
        while True:
            i = self.buf.find(sep)
            if i >= 0:
                out = bytes(self.buf[: i + len(sep)])
                del self.buf[: i + len(sep)]
                return out
            if len(self.buf) > limit:
                raise ParseError("line too long")
            self.fill()

    def read_some(self, maxn):
        if not self.buf:
            self.fill()
        out = bytes(self.buf[:maxn])
        del self.buf[:maxn]
        return out

    def read_exact(self, n):
        while len(self.buf) < n:
            self.fill()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out


def parse_head(raw):
    """raw: bytes up to and including CRLFCRLF. Returns (start_line, [(k, v)])."""
    text = raw.decode("latin-1")
    if not text.endswith("\r\n\r\n"):
        raise ParseError("head does not end with CRLFCRLF")
    lines = text[:-4].split("\r\n")
    start = lines[0]
    headers = []
    for line in lines[1:]:
        if "\n" in line or "\r" in line:
            raise ParseError("bare CR/LF")
        if line[:1] in (" ", "\t"):
            raise ParseError("obs-fold")
        k, sep, v = line.partition(":")
        if not sep or not k or k != k.strip():
            raise ParseError("bad header line %r" % line)
        headers.append((k, v.strip(" \t")))
    return start, headers


def hget(headers, name, default=None):
    name = name.lower()
    for k, v in headers:
        if k.lower() == name:
            return v
    return default


def hgetall(headers, name):
    name = name.lower()
    return [v for k, v in headers if k.lower() == name]


def conn_tokens(headers):
    toks = set()
    for v in hgetall(headers, "connection"):
        for t in v.split(","):
            if t.strip():
                toks.add(t.strip().lower())
    return toks


class BodyInfo:
    def __init__(self):
        self.length = 0
        self.sha = hashlib.sha256()
        self.head = bytearray()
        self.trailers = []
        self.chunked = False

    def add(self, data):
        self.length += len(data)
        self.sha.update(data)
        if len(self.head) < 65536:
            self.head += data[: 65536 - len(self.head)]


def read_body(conn, headers, on_data=None):
    """Reads a request body framed by Content-Length or chunked."""
    info = BodyInfo()
    add = info.add if on_data is None else (lambda d: (info.add(d), on_data(d)))
    te = hget(headers, "transfer-encoding")
    if te is not None:
        if te.lower().replace(" ", "").split(",")[-1] != "chunked":
            raise ParseError("unsupported transfer-encoding %r" % te)
        info.chunked = True
        while True:
            line = conn.read_until(b"\r\n", 8192)[:-2].decode("latin-1")
            size_s = line.split(";", 1)[0].strip()
            try:
                size = int(size_s, 16)
            except ValueError:
                raise ParseError("bad chunk size %r" % line)
            if size_s == "" or any(c not in "0123456789abcdefABCDEF" for c in size_s):
                raise ParseError("bad chunk size %r" % line)
            if size == 0:
                while True:
                    tl = conn.read_until(b"\r\n", 65536)[:-2].decode("latin-1")
                    if tl == "":
                        return info
                    k, _, v = tl.partition(":")
                    info.trailers.append((k.strip(), v.strip()))
            left = size
            while left:
                d = conn.read_some(min(left, 1 << 20))
                left -= len(d)
                add(d)
            if conn.read_exact(2) != b"\r\n":
                raise ParseError("missing CRLF after chunk")
    cls = hgetall(headers, "content-length")
    if cls:
        vals = set(v.strip() for c in cls for v in c.split(","))
        if len(vals) != 1 or not next(iter(vals)).isdigit():
            raise ParseError("bad content-length %r" % cls)
        left = int(next(iter(vals)))
        while left:
            d = conn.read_some(min(left, 1 << 20))
            left -= len(d)
            add(d)
    return info


def encode_chunked(pieces, trailers=()):
    out = bytearray()
    for p in pieces:
        if p:
            out += b"%x\r\n" % len(p) + p + b"\r\n"
    out += b"0\r\n"
    for k, v in trailers:
        out += f"{k}: {v}\r\n".encode()
    out += b"\r\n"
    return bytes(out)


# ---------------------------------------------------------------- WebSocket


def ws_accept_key(key):
    return base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()


def ws_encode(opcode, payload, fin=True, mask=False):
    b0 = (0x80 if fin else 0) | opcode
    n = len(payload)
    mbit = 0x80 if mask else 0
    if n < 126:
        head = struct.pack(">BB", b0, mbit | n)
    elif n < 65536:
        head = struct.pack(">BBH", b0, mbit | 126, n)
    else:
        head = struct.pack(">BBQ", b0, mbit | 127, n)
    if mask:
        key = os.urandom(4)
        payload = ws_mask(payload, key)
        head += key
    return head + payload


def ws_mask(payload, key):
    n = len(payload)
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(k, "big")).to_bytes(n, "big") if n else b""


def ws_read_frame(conn):
    """Returns (fin, opcode, payload) from a Conn; unmasks."""
    b0, b1 = conn.read_exact(2)
    fin = bool(b0 & 0x80)
    opcode = b0 & 0x0F
    masked = bool(b1 & 0x80)
    n = b1 & 0x7F
    if n == 126:
        (n,) = struct.unpack(">H", conn.read_exact(2))
    elif n == 127:
        (n,) = struct.unpack(">Q", conn.read_exact(8))
    key = conn.read_exact(4) if masked else None
    payload = conn.read_exact(n)
    if masked:
        payload = ws_mask(payload, key)
    return fin, opcode, payload


# canned malformed responses for /raw/NAME
RAW_RESPONSES = {
    "garbage": b"HTTP/1.1 abc Nonsense\r\nContent-Length: 2\r\n\r\nhi",
    "not-http": b"SSH-2.0-OpenSSH_9.2\r\n\r\n",
    "cl-te": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "obs-fold": b"HTTP/1.1 200 OK\r\nX-A: 1\r\n folded\r\nContent-Length: 2\r\n\r\nhi",
    "two-cl": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nhi!",
}

# ----------------------------------------------------------------- the server


class Request:
    def __init__(self, method, target, version, headers, body, conn_no, seq):
        self.method = method
        self.target = target
        self.path = target
        self.version = version
        self.headers = headers
        self.body = body
        self.conn_no = conn_no
        self.seq = seq  # 1 for the first request on its connection

    def header(self, name, default=None):
        return hget(self.headers, name, default)


class Upstream:
    """A threaded HTTP/1.1 upstream on 127.0.0.1 (or `host`), port chosen by
    the kernel unless given."""

    def __init__(self, name="up", host="127.0.0.1", port=0):
        self.name = name
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.lsock = socket.socket(fam, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind((host, port))
        self.lsock.listen(512)
        self.host = host
        self.port = self.lsock.getsockname()[1]
        self.addr = f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"
        self.lock = threading.Condition()
        self.accepted = 0
        self.requests = []
        self.bad_requests = []
        self.dropped = []  # requests taken and dropped without an answer (see /arm-drop, /drop)
        self.inflight = 0
        self.body_bytes = 0  # request body bytes received so far (all requests)
        self.active = []  # targets of the requests being handled now
        self.open_conns = set()
        self.stopping = threading.Event()
        self.signals = {}
        self.events = []  # (monotonic time, text) log for debugging
        self.stream_chunk = 1 << 20
        self.threads = []
        t = threading.Thread(target=self._accept_loop, name=f"{name}-accept", daemon=True)
        t.start()
        self.threads.append(t)

    # ----- test-side API
    def __repr__(self):
        return f"<Upstream {self.name} {self.addr}>"

    def signal(self, token):
        self._signal_event(token).set()

    def _signal_event(self, token):
        with self.lock:
            return self.signals.setdefault(token, threading.Event())

    def wait_inflight(self, path, timeout=5.0):
        """Waits until a request for `path` (exact target) is being handled."""
        def check():
            with self.lock:
                return path in self.active
        wait_until(check, timeout, what=f"{self.name}: a request for {path} in flight")

    def is_active(self, path):
        with self.lock:
            return path in self.active

    def count(self):
        with self.lock:
            return len(self.requests)

    def stop(self):
        """Stops listening and closes every connection (the server 'dies')."""
        self.stopping.set()
        try:
            self.lsock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.lsock.close()
        with self.lock:
            conns = list(self.open_conns)
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                s.close()
            except OSError:
                pass
        for t in self.threads:
            t.join(5)

    # ----- internals
    def _accept_loop(self):
        while not self.stopping.is_set():
            try:
                s, _ = self.lsock.accept()
            except OSError:
                return
            with self.lock:
                if self.stopping.is_set():
                    s.close()
                    return
                self.accepted += 1
                n = self.accepted
                self.open_conns.add(s)
            t = threading.Thread(target=self._serve, args=(s, n), name=f"{self.name}-c{n}", daemon=True)
            t.start()
            self.threads = [x for x in self.threads if x.is_alive()] + [t]

    def _serve(self, s, conn_no):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = Conn(s)
        seq = 0
        try:
            while not self.stopping.is_set():
                try:
                    raw = conn.read_until(b"\r\n\r\n", 1 << 20)
                except (EOFError, ConnectionError):
                    return
                seq += 1
                try:
                    start, headers = parse_head(raw)
                    method, target, version = start.split(" ")
                except (ParseError, ValueError) as e:
                    self._bad(s, raw, str(e))
                    return
                with self.lock:
                    self.inflight += 1
                    self.active.append(target)
                    self.lock.notify_all()
                try:
                    keep = self._handle(s, conn, method, target, version, headers, conn_no, seq)
                finally:
                    with self.lock:
                        self.inflight -= 1
                        self.active.remove(target)
                        self.lock.notify_all()
                if not keep:
                    return
        except (OSError, EOFError, ParseError) as e:
            if isinstance(e, ParseError):
                try:
                    self._bad(s, b"", str(e))
                except OSError:
                    pass
            return
        finally:
            with self.lock:
                self.open_conns.discard(s)
            try:
                s.close()
            except OSError:
                pass

    def _bad(self, s, raw, why):
        with self.lock:
            self.bad_requests.append((raw, why))
        body = f"upstream {self.name} could not parse the request: {why}".encode()
        s.sendall(b"HTTP/1.1 418 Upstream Parse Error\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)

    def _sleep(self, secs):
        self.stopping.wait(secs)

    def _handle(self, s, conn, method, target, version, headers, conn_no, seq):
        path, _, query = target.partition("?")
        q = dict(urllib.parse.parse_qsl(query))
        parts = path.split("/")
        keep = version == "HTTP/1.1" and "close" not in conn_tokens(headers)
        if version == "HTTP/1.0" and "keep-alive" in conn_tokens(headers):
            keep = True

        if path == "/ws" and (hget(headers, "upgrade") or "").lower() == "websocket":
            body = BodyInfo()
            self._record(method, target, version, headers, body, conn_no, seq)
            self._websocket(s, conn, headers)
            return False

        if len(parts) >= 3 and parts[1] == "pause-upload":
            self._sleep(float(parts[2]))  # let the client's body pile up before reading it
        body = read_body(conn, headers, on_data=self._count_body)
        if getattr(conn, "drop_next", False):
            # armed by /arm-drop: take this request and close without answering
            with self.lock:
                self.dropped.append((method, target))
            return False
        self._record(method, target, version, headers, body, conn_no, seq)
        if path == "/arm-drop":
            conn.drop_next = True
        status = 200
        extra = []

        if len(parts) >= 3 and parts[1] == "sleep":
            self._sleep(float(parts[2]))
        elif len(parts) >= 3 and parts[1] == "status":
            status = int(parts[2])
        elif path == "/chunked":
            sizes = [int(x) for x in q.get("sizes", "1,100,5000,70000,3").split(",")]
            pieces = []
            for i, n in enumerate(sizes):
                pieces.append((bytes([65 + i % 26]) * n))
            data = b"".join(pieces)
            trailers = []
            if q.get("trailer"):
                trailers = [("X-Sum", hashlib.sha256(data).hexdigest()), ("X-Trailer-Test", "yes")]
            head = "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n"
            if trailers:
                head += "Trailer: X-Sum, X-Trailer-Test\r\n"
            head += f"X-Upstream: {self.name}\r\n\r\n"
            s.sendall(head.encode())
            # send chunk by chunk, with small pauses in between is not needed
            for p in pieces:
                s.sendall(b"%x\r\n" % len(p) + p + b"\r\n")
            s.sendall(encode_chunked([], trailers))
            return keep
        elif len(parts) >= 3 and parts[1] == "close":
            n = int(parts[2])
            s.sendall(f"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nX-Upstream: {self.name}\r\n\r\n".encode())
            for c in pattern_chunks(n):
                s.sendall(c)
            s.shutdown(socket.SHUT_WR)
            return False
        elif len(parts) >= 3 and parts[1] == "stream":
            n = int(parts[2])
            if q.get("chunked"):
                s.sendall(f"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Upstream: {self.name}\r\n\r\n".encode())
                for c in pattern_chunks(n, self.stream_chunk):
                    s.sendall(b"%x\r\n" % len(c) + c + b"\r\n")
                s.sendall(b"0\r\n\r\n")
            else:
                s.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {n}\r\nX-Upstream: {self.name}\r\n\r\n".encode())
                for c in pattern_chunks(n, self.stream_chunk):
                    s.sendall(c)
            return keep
        elif len(parts) >= 3 and parts[1] == "stall":
            n = int(parts[2])
            s.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {n}\r\nX-Upstream: {self.name}\r\n\r\n".encode() + b"x" * 10)
            self._sleep(60)
            return False
        elif len(parts) >= 3 and parts[1] == "raw":
            s.sendall(RAW_RESPONSES[parts[2]])
            return False
        elif len(parts) >= 3 and parts[1] == "truncate":
            n = int(parts[2])
            s.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {n}\r\nX-Upstream: {self.name}\r\n\r\n".encode())
            s.sendall(b"t" * (n // 2))
            s.shutdown(socket.SHUT_WR)
            return False
        elif path == "/drop":
            with self.lock:
                self.dropped.append((method, target))
            return False
        elif path == "/stall-head":
            self._sleep(60)
            return False
        elif len(parts) >= 3 and parts[1] == "sse":
            ev = self._signal_event(parts[2])
            close = bool(q.get("close"))
            head = f"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nX-Upstream: {self.name}\r\n"
            head += "\r\n" if close else "Transfer-Encoding: chunked\r\n\r\n"
            s.sendall(head.encode())

            def send(data):
                s.sendall(data if close else b"%x\r\n" % len(data) + data + b"\r\n")

            send(b"id: 1\ndata: one\n\n")
            self.events.append((time.monotonic(), "sse one sent"))
            if not ev.wait(30):
                return False
            send(b"id: 2\ndata: two\n\n")
            self.events.append((time.monotonic(), "sse two sent"))
            if close:
                s.shutdown(socket.SHUT_WR)
                return False
            s.sendall(b"0\r\n\r\n")
            return keep
        elif path == "/hop":
            extra = [
                ("Connection", "X-Up-Secret"),
                ("X-Up-Secret", "must-not-reach-client"),
                ("Keep-Alive", "timeout=99"),
                ("Proxy-Connection", "keep-alive"),
                ("X-Up-Visible", "yes"),
            ]

        doc = {
            "name": self.name,
            "method": method,
            "path": target,
            "version": version,
            "headers": headers,
            "body_len": body.length,
            "body_sha256": body.sha.hexdigest(),
            "body": body.head.decode("latin-1") if body.length <= 65536 else None,
            "chunked": body.chunked,
            "trailers": body.trailers,
            "conn": conn_no,
            "seq": seq,
        }
        payload = json.dumps(doc).encode()
        if status in (204, 304):
            out = f"HTTP/1.1 {status} X\r\nX-Upstream: {self.name}\r\n"
            payload = b""
        else:
            out = f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(payload)}\r\nX-Upstream: {self.name}\r\n"
        for k, v in extra:
            out += f"{k}: {v}\r\n"
        if not keep:
            out += "Connection: close\r\n"
        s.sendall(out.encode() + b"\r\n" + (payload if method != "HEAD" else b""))
        return keep

    def _count_body(self, data):
        self.body_bytes += len(data)  # only this connection's thread writes while a body streams

    def _record(self, method, target, version, headers, body, conn_no, seq):
        req = Request(method, target, version, headers, body, conn_no, seq)
        with self.lock:
            self.requests.append(req)
            self.lock.notify_all()
        return req

    def _websocket(self, s, conn, headers):
        key = hget(headers, "sec-websocket-key", "")
        resp = (
            "HTTP/1.1 101 Switching Protocols\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {ws_accept_key(key)}\r\nX-Upstream: {self.name}\r\n\r\n"
        )
        s.sendall(resp.encode())
        while True:
            try:
                fin, op, payload = ws_read_frame(conn)
            except (EOFError, OSError):
                return
            if op == 0x8:  # close: echo it and close
                s.sendall(ws_encode(0x8, payload))
                return
            if op == 0x9:  # ping -> pong
                s.sendall(ws_encode(0xA, payload))
                continue
            if op == 0xA:
                continue
            s.sendall(ws_encode(op, payload, fin=fin))


class HangingListener:
    """A listening socket whose accept queue is full and that never accepts:
    on Linux, SYNs to it are dropped, so a connect() to it hangs (retries SYN)
    instead of completing or being refused."""

    def __init__(self):
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(0)
        self.port = self.lsock.getsockname()[1]
        self.addr = f"127.0.0.1:{self.port}"
        self.fillers = []
        for _ in range(8):
            c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            c.settimeout(0.3)
            try:
                c.connect(("127.0.0.1", self.port))
                self.fillers.append(c)
            except (socket.timeout, OSError):
                c.close()
                break

    def connect_hangs(self, probe=0.5):
        c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        c.settimeout(probe)
        try:
            c.connect(("127.0.0.1", self.port))
            return False
        except socket.timeout:
            return True
        except OSError:
            return False
        finally:
            c.close()

    def close(self):
        for c in self.fillers:
            c.close()
        self.lsock.close()


def route(host, *replicas):
    """route('app.test/api', up1, 'localhost:80') -> 'app.test/api=ADDR,ADDR'."""
    addrs = [r.addr if hasattr(r, "addr") else str(r) for r in replicas]
    return f"{host}={','.join(addrs)}"

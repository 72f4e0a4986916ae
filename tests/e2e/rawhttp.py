"""A raw-socket HTTP/1.1 client with deadlines, for exact control over bytes.

http.client normalises too much (it adds headers, refuses malformed input,
hides 1xx responses and connection state); these tests need to send exact
bytes and to see exactly what comes back and when the connection closes.
"""

import json
import socket
import time

_open = set()


def close_all():
    """Closes every client socket still open (called before a proxy stops, so
    idle keep-alive connections do not hold up its graceful shutdown)."""
    for c in list(_open):
        c.close()


class Timeout(AssertionError):
    pass


class Truncated(AssertionError):
    """The connection ended before the response was complete."""

    def __init__(self, msg, response=None, received=b""):
        super().__init__(msg)
        self.response = response
        self.received = received


class Response:
    def __init__(self, version, status, reason, headers, raw_head):
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers
        self.raw_head = raw_head
        self.body = b""
        self.trailers = []
        self.chunked = False
        self.close_delimited = False

    def header(self, name, default=None):
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return default

    def headers_all(self, name):
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    def has(self, name):
        return self.header(name) is not None

    def json(self):
        return json.loads(self.body)

    @property
    def upstream(self):
        return self.header("X-Upstream")

    def __repr__(self):
        b = self.body[:300]
        return f"<Response {self.status} {self.reason!r} headers={self.headers} body={b!r}>"


def build_request(method="GET", path="/", host="app.test", headers=(), body=None, version="HTTP/1.1"):
    lines = [f"{method} {path} {version}"]
    if host is not None:
        lines.append(f"Host: {host}")
    names = set()
    for k, v in headers:
        lines.append(f"{k}: {v}")
        names.add(k.lower())
    if body is not None and "content-length" not in names and "transfer-encoding" not in names:
        lines.append(f"Content-Length: {len(body)}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head + (body or b"")


class Client:
    def __init__(self, port, addr="127.0.0.1", timeout=10.0):
        self.port = port
        self.timeout = timeout
        fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
        self.sock = socket.socket(fam, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect((addr, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.eof = False
        self.silence = None  # if set: fail when nothing arrives for this long
        self.received = 0    # bytes received on this connection so far
        _open.add(self)

    # ----------------------------------------------------------- low level
    def send(self, data):
        self.sock.sendall(data)

    def close(self):
        _open.discard(self)
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def _fill(self, deadline, what):
        """Reads more bytes into buf; returns False at EOF."""
        if self.eof:
            return False
        left = deadline - time.monotonic()
        if left <= 0:
            raise Timeout(f"timed out waiting for {what}; received so far: {bytes(self.buf[:500])!r}")
        wait = left if self.silence is None else min(left, self.silence)
        self.sock.settimeout(wait)
        try:
            data = self.sock.recv(1 << 20)
        except socket.timeout:
            if wait < left:
                raise Timeout(f"nothing arrived for {self.silence}s while waiting for {what} "
                              f"({self.received} bytes received on this connection)")
            raise Timeout(f"timed out waiting for {what} ({self.received} bytes received on this connection); "
                          f"buffered: {bytes(self.buf[:500])!r}")
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.received += len(data)
        self.buf += data
        return True

    def _until(self, sep, deadline, what):
        while True:
            i = self.buf.find(sep)
            if i >= 0:
                out = bytes(self.buf[: i + len(sep)])
                del self.buf[: i + len(sep)]
                return out
            if not self._fill(deadline, what):
                raise Truncated(f"connection closed while waiting for {what}", received=bytes(self.buf))

    def _exact(self, n, deadline, what, sink=None):
        got = 0
        out = [] if sink is None else None
        while got < n:
            if not self.buf and not self._fill(deadline, what):
                raise Truncated(f"connection closed after {got} of {n} bytes of {what}", received=b"".join(out or []))
            take = min(n - got, len(self.buf))
            piece = bytes(self.buf[:take])
            del self.buf[:take]
            got += take
            if sink is None:
                out.append(piece)
            else:
                sink(piece)
        return b"".join(out) if sink is None else b""

    def wait_closed(self, timeout=5.0):
        """Waits until the peer closes; returns the bytes received meanwhile,
        raises Timeout if the connection is still open at the deadline."""
        deadline = time.monotonic() + timeout
        while self._fill(deadline, "the connection to close"):
            pass
        out = bytes(self.buf)
        self.buf.clear()
        return out

    def is_open_after(self, seconds):
        """True if nothing arrives and the connection stays open for `seconds`."""
        try:
            self.sock.settimeout(seconds)
            data = self.sock.recv(1, socket.MSG_PEEK)
            return bool(data)  # data pending: open (caller reads it)
        except socket.timeout:
            return True
        except OSError:
            return False

    # ---------------------------------------------------------- responses
    def read_head(self, timeout=None):
        deadline = time.monotonic() + (timeout or self.timeout)
        raw = self._until(b"\r\n\r\n", deadline, "a response head")
        text = raw.decode("latin-1")
        lines = text[:-4].split("\r\n")
        parts = lines[0].split(" ", 2)
        version, status = parts[0], int(parts[1])
        reason = parts[2] if len(parts) > 2 else ""
        headers = []
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers.append((k, v.strip()))
        return Response(version, status, reason, headers, raw)

    def read_response(self, method="GET", timeout=None, skip_1xx=True, sink=None):
        """Reads one complete response (head and body, framed per RFC 9112).
        With sink, body bytes are passed to sink(bytes) instead of kept."""
        timeout = timeout or self.timeout
        deadline = time.monotonic() + timeout
        while True:
            resp = self.read_head(max(0.001, deadline - time.monotonic()))
            if 100 <= resp.status < 200 and resp.status != 101 and skip_1xx:
                continue
            break
        self.read_body(resp, method, deadline, sink)
        return resp

    def read_body(self, resp, method, deadline, sink=None):
        st = resp.status
        if method == "HEAD" or 100 <= st < 200 or st in (204, 304):
            return resp
        te = resp.header("Transfer-Encoding")
        chunks = [] if sink is None else None
        put = chunks.append if sink is None else sink
        try:
            if te is not None and te.lower().split(",")[-1].strip() == "chunked":
                resp.chunked = True
                while True:
                    line = self._until(b"\r\n", deadline, "a chunk size line")
                    size = int(line[:-2].split(b";")[0].strip(), 16)
                    if size == 0:
                        while True:
                            tl = self._until(b"\r\n", deadline, "trailers")
                            if tl == b"\r\n":
                                break
                            k, _, v = tl.decode("latin-1")[:-2].partition(":")
                            resp.trailers.append((k.strip(), v.strip()))
                        break
                    self._exact(size, deadline, "chunk data", put)
                    crlf = self._exact(2, deadline, "chunk CRLF")
                    assert crlf == b"\r\n", f"bad chunk framing from proxy: {crlf!r}"
            elif resp.header("Content-Length") is not None:
                n = int(resp.header("Content-Length"))
                self._exact(n, deadline, "the response body", put)
            else:
                resp.close_delimited = True
                while True:
                    if self.buf:
                        put(bytes(self.buf))
                        self.buf.clear()
                    if not self._fill(deadline, "a close-delimited body"):
                        break
        except Truncated as e:
            if chunks is not None:
                resp.body = b"".join(chunks)
            e.response = resp
            raise
        if chunks is not None:
            resp.body = b"".join(chunks)
        return resp

    def request(self, method="GET", path="/", host="app.test", headers=(), body=None, timeout=None, version="HTTP/1.1"):
        self.send(build_request(method, path, host, headers, body, version))
        return self.read_response(method, timeout)


def request(port, method="GET", path="/", host="app.test", headers=(), body=None, timeout=10.0, addr="127.0.0.1"):
    """One request on a fresh connection, which is then closed."""
    with Client(port, addr=addr, timeout=timeout) as c:
        return c.request(method, path, host, headers, body, timeout)


def get(port, path="/", host="app.test", headers=(), timeout=10.0):
    return request(port, "GET", path, host, headers, None, timeout)


class BodyStream:
    """Incremental reader of a response body that is still arriving (SSE,
    streaming): read_until(needle) returns as soon as the decoded body so far
    contains needle, without waiting for the rest."""

    def __init__(self, client, resp):
        self.c = client
        self.resp = resp
        te = resp.header("Transfer-Encoding")
        self.chunked = te is not None and te.lower().split(",")[-1].strip() == "chunked"
        self.length = None if self.chunked or resp.header("Content-Length") is None else int(resp.header("Content-Length"))
        self.data = bytearray()
        self.chunk_left = 0
        self.done = False

    def read_until(self, needle, timeout=5.0):
        deadline = time.monotonic() + timeout
        while needle not in self.data:
            if self.done:
                raise Truncated(f"body ended without {needle!r}; got {bytes(self.data)!r}")
            try:
                self._step(deadline)
            except Timeout:
                raise Timeout(f"{needle!r} did not arrive within {timeout}s; body so far: {bytes(self.data)!r}")
        return bytes(self.data)

    def _take_available(self, limit, deadline):
        c = self.c
        if not c.buf and not c._fill(deadline, "more body"):
            self.done = True
            return 0
        take = len(c.buf) if limit is None else min(limit, len(c.buf))
        self.data += c.buf[:take]
        del c.buf[:take]
        return take

    def _step(self, deadline):
        c = self.c
        if self.chunked:
            if self.chunk_left == 0:
                line = c._until(b"\r\n", deadline, "a chunk size line")
                size = int(line[:-2].split(b";")[0].strip(), 16)
                if size == 0:
                    while c._until(b"\r\n", deadline, "trailers") != b"\r\n":
                        pass
                    self.done = True
                    return
                self.chunk_left = size
            self.chunk_left -= self._take_available(self.chunk_left, deadline)
            if self.chunk_left == 0:
                assert c._exact(2, deadline, "chunk CRLF") == b"\r\n"
        elif self.length is not None:
            left = self.length - len(self.data)
            if left == 0:
                self.done = True
                return
            self._take_available(left, deadline)
        else:
            self._take_available(None, deadline)

"""A small real upstream for the edge-policy tests (standard library only).

Paths:
  /text/N[?chunked=1&type=T&step=K]  N bytes of text (TEXT pattern), Content-Length
                       or chunked in chunks of K bytes; Content-Type T (text/plain)
  /sse                 text/event-stream, two events, chunked
  /png/N               N bytes, image/png
  /encoded/N           N bytes gzip'd by the upstream itself (Content-Encoding: gzip)
  /notransform/N       text with Cache-Control: no-transform
  /headers             sets X-Frame-Options: DENY and X-Custom: up, X-Drop: up
  /status/N            status N, small text body
  /upload              reads the request body (Content-Length or chunked) and
                       answers {"length": N}
Every response carries ETag "up-etag" (so tests can see it weakened).
"""

import gzip
import http.server
import json
import threading

TEXT = (b"The quick brown fox jumps over the lazy dog; davit edge policy test line. " * 2000)


def text(n):
    return (TEXT * (n // len(TEXT) + 1))[:n]


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def _send(self, status, body, ctype="text/plain", extra=(), chunked=False, step=4096):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("ETag", '"up-etag"')
        for k, v in extra:
            self.send_header(k, v)
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(0, len(body), step):
                part = body[i:i + step]
                self.wfile.write(b"%x\r\n" % len(part) + part + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

    def _query(self):
        path, _, q = self.path.partition("?")
        args = dict(p.split("=", 1) for p in q.split("&") if "=" in p)
        return path, args

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        path, args = self._query()
        parts = path.strip("/").split("/")
        n = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
        if parts[0] == "text":
            self._send(200, text(n), args.get("type", "text/plain").replace("%2F", "/"),
                       chunked=args.get("chunked") == "1", step=int(args.get("step", "4096")))
        elif parts[0] == "sse":
            body = b"event: one\ndata: " + text(3000) + b"\n\nevent: two\ndata: x\n\n"
            self._send(200, body, "text/event-stream", chunked=True)
        elif parts[0] == "png":
            self._send(200, text(n), "image/png")
        elif parts[0] == "encoded":
            self._send(200, gzip.compress(text(n)), "text/plain", extra=[("Content-Encoding", "gzip")])
        elif parts[0] == "notransform":
            self._send(200, text(n), "text/plain", extra=[("Cache-Control", "no-transform")])
        elif parts[0] == "headers":
            self._send(200, b"headers", "text/plain",
                       extra=[("X-Frame-Options", "DENY"), ("X-Custom", "up"), ("X-Drop", "up")])
        elif parts[0] == "status":
            self._send(n, b"status %d" % n, "text/plain")
        else:
            self._send(200, b"hello", "text/plain")

    def do_POST(self):
        length = 0
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                length += len(self.rfile.read(size))
                self.rfile.readline()
        else:
            n = int(self.headers.get("Content-Length", "0"))
            while length < n:
                chunk = self.rfile.read(min(65536, n - length))
                if not chunk:
                    break
                length += len(chunk)
        self._send(200, json.dumps({"length": length}).encode(), "application/json")


class EdgeUpstream:
    def __init__(self):
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.addr = f"127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

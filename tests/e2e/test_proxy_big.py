"""1 GiB through the proxy in each direction: complete, correct, bounded in
time, and without growing the proxy's memory. (docs/proxy.md, "Behaviour":
bodies stream with bounded buffers)"""

import hashlib
import threading
import time

import pytest

from rawhttp import Client, Timeout, build_request, get
from upstreams import pattern_chunks, pattern_sha256, route

N = 1 << 30
TIME_LIMIT = 60.0
RSS_SLACK_KB = 32 * 1024
SILENCE = 10.0  # a transfer that makes no progress for this long has stalled


class RssSampler:
    def __init__(self, proxy, interval=0.02):
        self.proxy = proxy
        self.interval = interval
        self.max_kb = 0
        self.samples = 0
        self.stop_ev = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop_ev.is_set():
            try:
                self.max_kb = max(self.max_kb, self.proxy.rss_kb())
                self.samples += 1
            except (OSError, AssertionError):
                return
            self.stop_ev.wait(self.interval)

    def __enter__(self):
        self.t.start()
        return self

    def __exit__(self, *a):
        self.stop_ev.set()
        self.t.join(5)


def baseline(p):
    # warm the proxy up (a request through it, worker buffers touched)
    for i in range(3):
        assert get(p.port, f"/warm/{i}").status == 200
    return p.rss_kb()


@pytest.mark.slow
def test_1gib_download(start_proxy, upstream):
    a = upstream("big")
    p = start_proxy(routes=[route("app.test", a)])
    want = pattern_sha256(N)
    base = baseline(p)
    h = hashlib.sha256()
    got = [0]

    def sink(d):
        h.update(d)
        got[0] += len(d)

    t0 = time.monotonic()
    with RssSampler(p) as rss, Client(p.port, timeout=TIME_LIMIT) as c:
        c.silence = SILENCE
        c.send(build_request("GET", f"/stream/{N}"))
        r = c.read_response(sink=sink, timeout=TIME_LIMIT)
    elapsed = time.monotonic() - t0
    assert r.status == 200
    assert got[0] == N, f"received {got[0]} of {N} bytes"
    assert h.hexdigest() == want, "downloaded body differs from what the upstream sent"
    assert elapsed < TIME_LIMIT
    assert rss.samples > 5
    assert rss.max_kb - base < RSS_SLACK_KB, (
        f"proxy RSS grew from {base} kB to {rss.max_kb} kB during a 1 GiB download (limit +{RSS_SLACK_KB} kB)")
    print(f"1 GiB download: {elapsed:.1f}s, RSS {base} -> max {rss.max_kb} kB")


@pytest.mark.slow
def test_1gib_upload(start_proxy, upstream):
    a = upstream("big")
    p = start_proxy(routes=[route("app.test", a)])
    want = pattern_sha256(N)
    base = baseline(p)
    t0 = time.monotonic()
    with RssSampler(p) as rss, Client(p.port, timeout=TIME_LIMIT) as c:
        c.silence = SILENCE
        c.send(build_request("POST", "/upload", headers=[("Content-Length", str(N))]))
        sent = 0
        for chunk in pattern_chunks(N):
            c.sock.settimeout(min(SILENCE, max(0.1, TIME_LIMIT - (time.monotonic() - t0))))
            try:
                c.sock.sendall(chunk)
            except TimeoutError:
                pytest.fail(f"upload stalled: the proxy accepted nothing for {SILENCE}s after {sent} of {N} bytes "
                            f"(upstream received {a.body_bytes})")
            sent += len(chunk)
        try:
            r = c.read_response(timeout=max(1, TIME_LIMIT - (time.monotonic() - t0)))
        except Timeout as e:
            pytest.fail(f"upload stalled: client sent all {N} bytes, upstream received {a.body_bytes}: {e}")
    elapsed = time.monotonic() - t0
    assert r.status == 200, r
    d = r.json()
    assert d["body_len"] == N, f"upstream received {d['body_len']} of {N} bytes"
    assert d["body_sha256"] == want, "uploaded body differs from what the client sent"
    assert elapsed < TIME_LIMIT
    assert rss.samples > 5
    assert rss.max_kb - base < RSS_SLACK_KB, (
        f"proxy RSS grew from {base} kB to {rss.max_kb} kB during a 1 GiB upload (limit +{RSS_SLACK_KB} kB)")
    print(f"1 GiB upload: {elapsed:.1f}s, RSS {base} -> max {rss.max_kb} kB")


def test_backpressure_stalled_client_download(start_proxy, upstream):
    """The client stops reading while the upstream could send 256 MiB: the
    proxy must stop reading the upstream (bounded buffers), not buffer it."""
    n = 256 * 1024 * 1024
    a = upstream("big")
    p = start_proxy(routes=[route("app.test", a)])
    want = pattern_sha256(n)
    base = baseline(p)
    h = hashlib.sha256()
    got = [0]

    def sink(d):
        h.update(d)
        got[0] += len(d)

    with RssSampler(p) as rss, Client(p.port, timeout=TIME_LIMIT) as c:
        c.silence = SILENCE
        c.send(build_request("GET", f"/stream/{n}"))
        r = c.read_head(timeout=5)
        # stall: read nothing for 1.5 s while sampling the proxy's memory
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            time.sleep(0.05)
        stalled_max = rss.max_kb
        c.read_body(r, "GET", time.monotonic() + TIME_LIMIT, sink)
    assert got[0] == n and h.hexdigest() == want
    assert stalled_max - base < RSS_SLACK_KB, (
        f"proxy RSS grew from {base} kB to {stalled_max} kB while the client was not reading")
    assert rss.max_kb - base < RSS_SLACK_KB


def test_backpressure_stalled_upstream_upload(start_proxy, upstream):
    """The upstream does not read the body for 1.5 s while the client pushes
    as fast as it can: the proxy must stop reading the client."""
    n = 256 * 1024 * 1024
    a = upstream("big")
    p = start_proxy(routes=[route("app.test", a)])
    want = pattern_sha256(n)
    base = baseline(p)
    sent = [0]
    err = []

    with RssSampler(p) as rss, Client(p.port, timeout=TIME_LIMIT) as c:
        c.silence = SILENCE

        def push():
            try:
                c.sock.sendall(build_request("POST", "/pause-upload/1.5", headers=[("Content-Length", str(n))]))
                for chunk in pattern_chunks(n):
                    c.sock.sendall(chunk)
                    sent[0] += len(chunk)
            except OSError as e:
                err.append(e)
        t = threading.Thread(target=push, daemon=True)
        t.start()
        a.wait_inflight("/pause-upload/1.5", 5)
        # the sampler watches the proxy while the upstream pauses, then reads
        try:
            r = c.read_response(timeout=TIME_LIMIT)
        except Timeout as e:
            pytest.fail(f"upload stalled: client sent {sent[0]} of {n} body bytes, upstream received "
                        f"{a.body_bytes}: {e}")
        t.join(TIME_LIMIT)
    assert not err, err
    assert r.status == 200 and r.json()["body_len"] == n and r.json()["body_sha256"] == want
    assert rss.max_kb - base < RSS_SLACK_KB, (
        f"proxy RSS grew from {base} kB to {rss.max_kb} kB while the upstream was not reading")

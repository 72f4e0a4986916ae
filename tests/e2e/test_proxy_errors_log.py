"""Error pages (JSON when asked for) and the access log.
(docs/proxy.md, "Behaviour": Errors, Access log)"""

import datetime
import json
import re

from rawhttp import Client, get
from upstreams import closed_port, route, wait_until

FIELDS = ["time", "host", "method", "path", "status", "bytes_in", "bytes_out", "duration_ms", "upstream", "request_id"]
TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def json_error(r, status):
    assert r.status == status, r
    try:
        doc = json.loads(r.body)
    except ValueError:
        raise AssertionError(f"error body is not JSON: {r.body!r}")
    assert set(doc) == {"error"} and doc["error"]["status"] == status, doc
    assert isinstance(doc["error"]["message"], str) and doc["error"]["message"], doc
    assert "json" in (r.header("Content-Type") or ""), f"JSON error with Content-Type {r.header('Content-Type')}"
    return doc


def test_errors_as_json_when_accepted(start_proxy, upstream):
    a = upstream("a")
    dead = closed_port()
    p = start_proxy(routes=[route("app.test", a), f"dead.test=127.0.0.1:{dead}"])
    json_error(get(p.port, "/", host="dead.test", headers=[("Accept", "application/json")]), 502)
    json_error(get(p.port, "/", host="nowhere.test",
                   headers=[("Accept", "text/html, application/json;q=0.9, */*;q=0.1")]), 404)
    assert get(p.port, "/", host="app.test").status == 200


def test_errors_not_json_by_default(start_proxy):
    dead = closed_port()
    p = start_proxy(routes=[f"dead.test=127.0.0.1:{dead}"])
    for accept in [None, "text/html"]:
        r = get(p.port, "/", host="dead.test", headers=[("Accept", accept)] if accept else [])
        assert r.status == 502 and r.body, r
        try:
            json.loads(r.body)
        except ValueError:
            pass
        else:
            raise AssertionError(f"JSON error page for Accept {accept!r}: {r.body!r}")


def test_504_as_json(start_proxy, upstream):
    a = upstream("slow")
    p = start_proxy(routes=[route("app.test", a)], args=["--response-timeout", "300ms"])
    r = get(p.port, "/sleep/2", headers=[("Accept", "application/json")])
    json_error(r, 504)


def parse_log(p):
    out = []
    for line in p.access_lines():
        try:
            out.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"access log line is not JSON: {line!r} (file {p.access_log})")
    return out


def test_access_log_lines(start_proxy, upstream):
    a = upstream("a")
    p = start_proxy(routes=[route("app.test", a)])
    now = datetime.datetime.now(datetime.timezone.utc)
    with Client(p.port) as c:
        r1 = c.request("GET", "/x?q=1", host="app.test", headers=[("X-Request-Id", "log-test-1")])
        r2 = c.request("POST", "/upload", host="app.test", body=b"b" * 1234)
        r3 = c.request("GET", "/sleep/0.3", host="app.test")
        r4 = c.request("DELETE", "/nope", host="unknown.test")
    assert [r.status for r in (r1, r2, r3, r4)] == [200, 200, 200, 404]
    # the log is buffered, but must be flushed within about a second
    wait_until(lambda: len(p.access_lines()) >= 4, 2.5, interval=0.05,
               what=f"4 access log lines in {p.access_log} (buffered log not flushed within 2.5 s)")
    log = parse_log(p)
    for e in log:
        missing = [k for k in FIELDS if k not in e]
        assert not missing, f"access log entry lacks {missing}: {e}"
        assert TIME_RE.match(e["time"]), e["time"]
        t = datetime.datetime.strptime(e["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc)
        assert abs((t - now).total_seconds()) < 60, f"time {e['time']} is not now ({now.isoformat()})"
        assert isinstance(e["status"], int) and isinstance(e["bytes_in"], int) and isinstance(e["bytes_out"], int)
        assert isinstance(e["duration_ms"], (int, float)) and e["duration_ms"] >= 0
    e1, e2, e3, e4 = log[:4]
    assert (e1["host"], e1["method"], e1["status"]) == ("app.test", "GET", 200)
    assert e1["path"] in ("/x?q=1", "/x"), e1
    assert e1["request_id"] == "log-test-1"
    assert e1["upstream"] == a.addr
    assert e1["bytes_in"] == 0
    assert len(r1.body) <= e1["bytes_out"] <= len(r1.body) + len(r1.raw_head) + 512, e1
    assert (e2["method"], e2["path"], e2["bytes_in"]) == ("POST", "/upload", 1234), e2
    assert e2["request_id"] == r2.header("X-Request-Id")
    assert e3["duration_ms"] >= 250, f"a 0.3 s request logged {e3['duration_ms']} ms"
    assert e3["duration_ms"] < 5000
    assert (e4["host"], e4["method"], e4["status"]) == ("unknown.test", "DELETE", 404)
    assert e4["request_id"] == r4.header("X-Request-Id") or r4.header("X-Request-Id") is None
    # exactly one line per request (checked after the proxy flushed on exit)
    assert p.stop() is None
    assert len(parse_log(p)) == 4, p.access_lines()


def test_access_log_to_stdout(start_proxy, upstream):
    a = upstream("a")
    p = start_proxy(routes=[route("app.test", a)], access_log="-")
    assert get(p.port, "/stdout-log").status == 200
    assert p.stop() is None
    lines = [l for l in p.stdout_path.read_text().splitlines() if l.strip()]
    assert len(lines) == 1 and json.loads(lines[0])["path"] == "/stdout-log", lines


def test_access_log_defaults_to_stdout(start_proxy, upstream):
    a = upstream("a")
    p = start_proxy(routes=[route("app.test", a)], access_log=None)  # no --access-log
    assert get(p.port, "/default-log").status == 200
    assert p.stop() is None
    lines = [l for l in p.stdout_path.read_text().splitlines() if l.strip()]
    assert len(lines) == 1 and json.loads(lines[0])["path"] == "/default-log", lines


def test_access_log_off(start_proxy, upstream, tmp_path):
    a = upstream("a")
    p = start_proxy(routes=[route("app.test", a)], access_log="off")
    assert get(p.port, "/").status == 200
    assert p.stop() is None
    assert p.stdout_path.read_text().strip() == ""
    assert not (tmp_path / "off").exists()


def test_access_log_under_load_whole_lines(start_proxy, upstream):
    """Lines from concurrent workers are never interleaved."""
    import threading
    a = upstream("a")
    p = start_proxy(routes=[route("app.test", a)])

    def run(n):
        with Client(p.port) as c:
            for i in range(50):
                c.request("GET", f"/w{n}/{i}/" + "p" * 200)
    ts = [threading.Thread(target=run, args=(n,)) for n in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert p.stop() is None
    log = parse_log(p)
    assert len(log) == 400
    assert len({e["path"] for e in log}) == 400


def test_malformed_upstream_response_is_502(start_proxy, upstream):
    """An invalid response from the upstream is never passed on (RFC 9110
    15.6.3): the client gets 502."""
    from upstreams import RAW_RESPONSES
    a = upstream("a")
    p = start_proxy(routes=[route("app.test", a)])
    for name in sorted(RAW_RESPONSES):
        r = get(p.port, f"/raw/{name}")
        assert r.status == 502, (name, r)


def test_access_log_escapes_json(start_proxy, upstream):
    """Characters a client controls ('"', '\\', '{') cannot break a log line."""
    a = upstream("a")
    p = start_proxy(routes=[route("app.test", a)])
    path = '/q"uote\\back{x}%22\''
    r = get(p.port, path)
    assert r.status == 200 and r.json()["path"] == path
    assert p.stop() is None
    log = parse_log(p)  # raises if a line is not JSON
    assert len(log) == 1 and log[0]["path"] in (path, path.split("?")[0]), log

"""`davit proxy --metrics-listen`: the per-worker request counters of the
standalone proxy, merged and served in the Prometheus text format, per route.
(docs/proxy.md; the daemon's /metrics is tested in test_obs.py)"""

import subprocess
import threading

from conftest import DAVIT_BIN
from promutil import scrape

from rawhttp import get, request
from upstreams import closed_port, free_port, route, wait_until


def value(text, line_prefix):
    for line in text.splitlines():
        if line.startswith(line_prefix + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_route_counters_on_metrics(start_proxy, upstream):
    up, up2 = upstream("app"), upstream("st")  # one pool each (same replicas would share one)
    mport = free_port()
    p = start_proxy(routes=[route("app.test", up), route("st.test", up2),
                            route("down.test", f"127.0.0.1:{closed_port()}")],
                    args=["--metrics-listen", f"127.0.0.1:{mport}", "--metrics-token", "tok"], workers=2)
    for i in range(40):  # spread over both workers (new connection each)
        assert get(p.port, f"/x{i}", host="app.test").status == 200
    for _ in range(5):
        assert get(p.port, "/status/404", host="st.test").status == 404
    assert get(p.port, "/status/503", host="st.test").status == 503  # the upstream's own 503
    assert get(p.port, "/", host="down.test").status == 502               # ours: nothing listens
    body = b"x" * 1000
    assert request(p.port, "POST", "/upload", host="st.test", body=body).status == 200

    assert scrape(mport)[0] == 401
    status, text = scrape(mport, "tok")
    assert status == 200
    assert value(text, 'davit_http_requests_total{route="app.test",code="2xx"}') == 40
    assert value(text, 'davit_http_requests_total{route="st.test",code="4xx"}') == 5
    assert value(text, 'davit_http_requests_total{route="st.test",code="5xx"}') == 1
    assert value(text, 'davit_http_requests_total{route="st.test",code="2xx"}') == 1
    assert value(text, 'davit_http_requests_total{route="down.test",code="5xx"}') == 1
    # only the 502 davit made itself is an upstream error
    assert value(text, 'davit_http_upstream_errors_total{route="down.test"}') == 1
    assert value(text, 'davit_http_upstream_errors_total{route="st.test"}') == 0
    assert value(text, 'davit_http_request_body_bytes_total{route="st.test"}') == 1000
    assert value(text, 'davit_http_request_duration_seconds_count{route="app.test"}') == 40
    assert value(text, 'davit_http_request_duration_seconds_bucket{route="app.test",le="+Inf"}') == 40
    assert value(text, 'davit_http_requests_in_flight{route="app.test"}') == 0
    assert value(text, "davit_http_connections_accepted_total") >= 48
    assert scrape(mport, "tok")[1].count("# TYPE davit_http_requests_total counter") == 1


def test_in_flight_and_open_connections(start_proxy, upstream):
    up = upstream("app")
    mport = free_port()
    p = start_proxy(routes=[route("app.test", up)], args=["--metrics-listen", f"127.0.0.1:{mport}"])
    t = threading.Thread(target=lambda: get(p.port, "/sleep/1.5", host="app.test"), daemon=True)
    t.start()
    def busy():
        text = scrape(mport)[1]
        return (value(text, 'davit_http_requests_in_flight{route="app.test"}') == 1
                and value(text, "davit_http_connections_open") >= 1)
    wait_until(busy, 5, interval=0.05, what="one request in flight")
    t.join(5)
    wait_until(lambda: value(scrape(mport)[1], 'davit_http_requests_in_flight{route="app.test"}') == 0, 5,
               interval=0.05, what="nothing in flight")


def test_no_metrics_excludes_a_listener(upstream):
    up = upstream("app")
    r = subprocess.run([DAVIT_BIN, "proxy", "--listen", f"127.0.0.1:{free_port()}", "--route", route("app.test", up),
                        "--no-metrics", "--metrics-listen", f"127.0.0.1:{free_port()}"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode != 0
    assert "--metrics-listen and --no-metrics exclude each other" in r.stderr

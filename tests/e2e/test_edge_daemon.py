"""End-to-end through the real daemon: edge policies from x-davit keys and
Traefik middleware labels of a compose file, a static SPA service served by
the proxy, and compose errors (FILE:LINE) for bad edge values."""

import base64
import hashlib
import re

import pytest

pytest.register_assert_rewrite("davitctl")
from davitctl import wait_until  # noqa: E402
from rawhttp import get  # noqa: E402

pytest_plugins = ["davitctl"]

API = """\
import http.server, os
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_GET(self):
        body = (b"api says hello. " * 400)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
print("listening on", os.environ["PORT"], flush=True)
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"""

SHA = "{SHA}" + base64.b64encode(hashlib.sha1(b"pw").digest()).decode()

COMPOSE = f"""\
name: edgeapp
services:
  web:
    x-davit:
      static: ./www
      spa: true
      domains: [site.edge.localhost]
  api:
    labels:
      traefik.http.routers.api.rule: Host(`api.edge.localhost`) || Host(`admin.edge.localhost`)
      traefik.http.routers.api.middlewares: sec@docker,limit
      traefik.http.middlewares.sec.headers.customresponseheaders.X-From-Traefik: "yes"
      traefik.http.middlewares.sec.headers.framedeny: "true"
      traefik.http.middlewares.limit.ratelimit.average: "3"
      traefik.http.middlewares.limit.ratelimit.period: 1m
      traefik.http.middlewares.limit.ratelimit.burst: "3"
    x-davit:
      run: /usr/bin/python3 api.py
      port: 3101
      csp: "default-src 'none'"
      per_domain:
        admin.edge.localhost:
          basic_auth: ["admin:{SHA}"]
          rate_limit: off
"""


def test_compose_edge_policies_and_static_spa(davit_env):
    d = davit_env()
    (davit_env.tmp_path / "penpal" / "www").mkdir()
    (davit_env.tmp_path / "penpal" / "www" / "index.html").write_text("<p>spa</p>\n")
    davit_env.write("api.py", API)
    path = davit_env.write("edge.yml", COMPOSE)
    r = d.deploy(path, json_out=True)
    assert r.json["ok"] is True, f"{r.json}\n{d.where()}"

    # The static service: no replicas, served by the proxy, with the SPA fallback.
    wait_until(lambda: get(d.port, "/", host="site.edge.localhost").status == 200, 10, what="the static site")
    for p in ("/", "/some/client/route"):
        resp = get(d.port, p, host="site.edge.localhost")
        assert resp.status == 200 and resp.body == b"<p>spa</p>\n", resp
        assert resp.header("Cache-Control") == "no-cache"
        assert resp.header("X-Content-Type-Options") == "nosniff"  # the daemon's defaults

    web = d.services("edgeapp")["web"]
    assert web["static"].endswith("/www") and web["replicas"] == [] and web["stopped"] is False, web
    assert "static" in d.cli("ps").stdout

    # The API: Traefik headers middleware + x-davit csp + the preset; gzip by default.
    wait_until(lambda: get(d.port, "/", host="api.edge.localhost").status in (200, 429), 15, what="the api")
    resp = get(d.port, "/", host="api.edge.localhost", headers=[("Accept-Encoding", "gzip")])
    assert resp.header("X-From-Traefik") == "yes", resp
    assert resp.header("X-Frame-Options") == "DENY", resp
    assert resp.header("Content-Security-Policy") == "default-src 'none'", resp
    assert resp.header("Content-Encoding") == "gzip", resp
    assert not resp.has("Strict-Transport-Security")  # plain HTTP listener
    statuses = [get(d.port, "/", host="api.edge.localhost").status for _ in range(4)]
    assert 429 in statuses, statuses  # Traefik ratelimit: 3 per minute per client
    # per_domain: the admin host needs a password and has no rate limit.
    assert get(d.port, "/", host="admin.edge.localhost").status == 401
    auth = ("Authorization", "Basic " + base64.b64encode(b"admin:pw").decode())
    assert [get(d.port, "/", host="admin.edge.localhost", headers=[auth]).status for _ in range(5)] == [200] * 5


BAD = {
    "rate": ("      rate_limit: 100 per minute   #!\n", ["rate_limit", "COUNT/PERIOD"]),
    "max_body": ("      max_body: huge   #!\n", ["maxbody", "huge"]),
    # A literal $ in compose is $$ (interpolation).
    "auth": ("      basic_auth: [\"bob:$$2y$$05$$abcdefghijklmnopqrstuv\"]   #!\n", ["bcrypt"]),
    "allow": ("      allow: [10.0.0.0/99]   #!\n", ["10.0.0.0/99"]),
    "ban": ("      ban: {after: 5, within: soon, for: 1h}   #!\n", ["ban", "COUNT/WINDOW/DURATION"]),
    "header": ("      headers: {frame: maybe}   #!\n", ["frame", "maybe"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_edge_values_report_file_and_line(davit_env, case):
    d = davit_env()
    line, words = BAD[case]
    text = "name: edgebad\nservices:\n  api:\n    x-davit:\n      run: /usr/bin/python3 api.py\n      port: 3101\n" + line
    path = davit_env.write(f"bad-{case}.yml", text)
    r = d.deploy(path, check=False)
    assert r.returncode != 0, r.stdout
    out = r.stdout + r.stderr
    m = re.search(re.escape(path) + r":(\d+):(\d+): (.*)", out)
    assert m, out
    want = [i + 1 for i, l in enumerate(text.splitlines()) if "#!" in l]
    assert int(m.group(1)) in want, (m.group(0), want)
    for w in words:
        assert w in m.group(3), (w, m.group(0))


def test_bad_traefik_label_reports_its_line(davit_env):
    d = davit_env()
    text = ("name: edgebad\nservices:\n  api:\n    labels:\n"
            "      traefik.http.routers.api.middlewares: body\n"
            "      traefik.http.middlewares.body.buffering.maxRequestBodyBytes: lots   #!\n"
            "    x-davit: {run: /usr/bin/python3 api.py, port: 3101}\n")
    path = davit_env.write("bad-label.yml", text)
    r = d.deploy(path, check=False)
    assert r.returncode != 0
    out = r.stdout + r.stderr
    m = re.search(re.escape(path) + r":(\d+):(\d+): (.*)", out)
    assert m and m.group(1) == "6" and "lots" in m.group(3), out


def test_missing_static_directory_fails_the_deploy(davit_env):
    d = davit_env()
    text = "name: edgebad\nservices:\n  web:   #!\n    x-davit: {static: ./no-such-dir}\n"
    path = davit_env.write("bad-static.yml", text)
    r = d.deploy(path, check=False)
    assert r.returncode != 0
    out = r.stdout + r.stderr
    m = re.search(re.escape(path) + r":(\d+):(\d+): (.*)", out)
    assert m and m.group(1) == "3" and "no-such-dir" in m.group(3) and "No such file" in m.group(3), out

"""End-to-end tests of davit's observability (issue 6) with real receivers.

- A real Prometheus (Debian's `prometheus`) scrapes the daemon's /metrics (with
  a bearer token) and a PromQL query over its HTTP API returns davit's counts.
- `davit top`, `davit metrics` show what the proxy measured.
- Every default alert rule is driven to fire and to resolve: host CPU and
  memory through a fake /proc (DAVIT_HOST_ROOT), disk through a small tmpfs
  (DAVIT_DISK_PATH), service down through a failing health check, error rate
  and p95 through real requests, certificate expiry and backup failure
  through `davit event`. Durations are shortened with DAVIT_ALERT_FOR.
- Notifications reach a generic webhook, a Slack- and a Discord-shaped
  webhook (HTTP receivers in this file) and a real SMTP server
  (python3-aiosmtpd on loopback); a dead notifier blocks nothing.
Every server is started here on 127.0.0.1 with a free port and stopped by PID.
"""

import email
import http.server
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.request

import pytest

import davitctl
from promutil import sample, scrape
from davitctl import Daemon, clean_env, free_port
from davitctl import wait_until as _wait_until


def wait_until(pred, timeout, what="condition"):
    # CLI calls and HTTP polls: a gentler interval than the proxy tests use.
    return _wait_until(pred, timeout, interval=0.2, what=what)

pytest_plugins = ["davitctl"]

APP_PY = r'''
import http.server, os, time
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_GET(self):
        code, body = 200, b"ok\n"
        if self.path.startswith("/fail"):
            code, body = 500, b"fail\n"
            print("ERROR failing on purpose: " + self.path, flush=True)
        elif self.path.startswith("/hello"):
            print('{"level":"warn","msg":"hello ' + self.path + '"}', flush=True)
        elif self.path.startswith("/slow"):
            time.sleep(0.35)
        elif self.path.startswith("/health") and os.path.exists(os.environ["SICK_FILE"]):
            code, body = 500, b"sick\n"
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
'''


class ObsDaemon(Daemon):
    """A Daemon with extra environment (DAVIT_* knobs that clean_env drops)."""

    def __init__(self, workdir, env, **kw):
        super().__init__(workdir, **kw)
        self.extra_env = env

    def start(self, wait=True):
        with open(self.log_path, "ab") as log:
            log.write(f"==== {' '.join(self.cmd())}\n".encode())
            log.flush()
            env = clean_env()
            env.update(self.extra_env)
            self.proc = subprocess.Popen(self.cmd(), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         cwd=self.workdir, env=env)
        self.generations.append(self.proc)
        if wait:
            self.wait_ready()
        return self


@pytest.fixture
def obs_daemon(tmp_path):
    started = []

    def make(args=(), env=None):
        d = ObsDaemon(tmp_path, env or {}, args=args, name=f"daemon{len(started)}")
        started.append(d)
        return d.start()

    yield make
    problems = [p for p in (d.stop() for d in started) if p]
    for d in started:
        for pid in d.replica_pids:
            if davitctl.alive(pid):
                os.kill(pid, signal.SIGKILL)
    assert not problems, "; ".join(problems)


def write_app(dirpath, extra_top="", extra_service="", name="obsapp"):
    os.makedirs(dirpath, exist_ok=True)
    with open(os.path.join(dirpath, "app.py"), "w") as f:
        f.write(APP_PY)
    sick = os.path.join(dirpath, "sick")
    compose = f"""name: {name}
services:
  web:
    environment:
      SICK_FILE: {sick}
    x-davit:
      run: /usr/bin/python3 app.py
      port: 8000
      health: {{path: /health, interval: 1s, timeout: 1s, retries: 1}}
{extra_service}
{extra_top}
"""
    path = os.path.join(dirpath, "compose.yml")
    with open(path, "w") as f:
        f.write(compose)
    return path, sick


def get(port, path="/", host="web.obsapp.localhost", timeout=5):
    s, _ = davitctl.http_get(port, host, path, timeout=timeout)
    return s


# ----------------------------------------------------------------- Prometheus


def start_prometheus(tmp_path, target_port, token):
    prom = shutil.which("prometheus")
    if not prom:
        pytest.fail("Debian's prometheus is not installed: run `bash scripts/install-deps.sh` "
                    "(apt-get install prometheus)")
    port = free_port()
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(f"""global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: davit
    authorization:
      credentials: {token}
    static_configs:
      - targets: ['127.0.0.1:{target_port}']
""")
    log = open(tmp_path / "prometheus.log", "wb")
    proc = subprocess.Popen([prom, f"--config.file={cfg}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=log,
                            stdin=subprocess.DEVNULL)

    def ready():
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False
    try:
        wait_until(ready, 30, what="prometheus ready")
    except AssertionError:
        proc.kill()
        raise
    return proc, port


def promql(port, query):
    url = f"http://127.0.0.1:{port}/api/v1/query?query=" + urllib.request.quote(query)
    with urllib.request.urlopen(url, timeout=5) as r:
        j = json.loads(r.read())
    assert j["status"] == "success", j
    return j["data"]["result"]


def test_prometheus_scrapes_davit_request_counts(tmp_path, obs_daemon):
    mport = free_port()
    token = "s3cret-token"
    d = obs_daemon(args=["--metrics-listen", f"127.0.0.1:{mport}", "--metrics-token", token],
                   env={"DAVIT_METRICS_INTERVAL": "1s"})
    compose, _ = write_app(tmp_path / "app")
    d.deploy(compose)
    for _ in range(30):
        assert get(d.port) == 200
    for _ in range(3):
        assert get(d.port, "/fail") == 500

    # The token is required; with it the counts are exact.
    status, body = scrape(mport)
    assert status == 401, body
    status, body = scrape(mport, "wrong")
    assert status == 401
    def scraped():
        st, tx = scrape(mport, token)  # replica and host series come with the next collection tick
        return st == 200 and sample(tx, "davit_service_up", app="obsapp", service="web") is not None and tx
    text = wait_until(scraped, 10, what="a /metrics answer with the service's series")
    assert sample(text, "davit_http_requests_total", app="obsapp", service="web", code="2xx") == 30, text
    assert sample(text, "davit_http_requests_total", app="obsapp", service="web", code="5xx") == 3
    assert sample(text, "davit_http_request_duration_seconds_count", app="obsapp", service="web") == 33
    assert sample(text, "davit_service_up", app="obsapp", service="web") == 1
    assert sample(text, "davit_replica_state", app="obsapp", service="web", replica="0", state="healthy") == 1
    assert sample(text, "davit_replica_state", app="obsapp", service="web", replica="0", state="unhealthy") == 0
    assert sample(text, "davit_replica_memory_rss_bytes", app="obsapp", service="web", replica="0") > 1_000_000
    assert sample(text, "davit_replica_restarts_total", app="obsapp", service="web", replica="0") == 0
    assert sample(text, "davit_host_memory_total_bytes") > 0
    assert sample(text, "davit_deploys_total", app="obsapp", result="succeeded") == 1
    assert "# TYPE davit_http_request_duration_seconds histogram" in text

    proc, pport = start_prometheus(tmp_path, mport, token)
    try:
        def counted():
            r = promql(pport, 'sum(davit_http_requests_total{job="davit",app="obsapp",service="web"})')
            return r and float(r[0]["value"][1]) == 33
        wait_until(counted, 30, what="prometheus to return davit's 33 requests")
        r = promql(pport, 'davit_http_requests_total{service="web",code="5xx"}')
        assert float(r[0]["value"][1]) == 3
        r = promql(pport, 'up{job="davit"}')
        assert float(r[0]["value"][1]) == 1
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def test_top_and_metrics_history(tmp_path, obs_daemon):
    d = obs_daemon(args=["--metrics-listen", "off"], env={"DAVIT_METRICS_INTERVAL": "1s"})
    compose, _ = write_app(tmp_path / "app")
    d.deploy(compose)
    stop = time.monotonic() + 2.5
    n = 0
    while time.monotonic() < stop:
        assert get(d.port) == 200
        n += 1
    get(d.port, "/fail")

    def top_busy():
        j = json.loads(d.cli("top", "--json").stdout)
        rows = {r["service"]: r for r in j["services"]}
        return rows.get("obsapp/web", {}).get("requests_per_second", 0) > 0 and j
    j = wait_until(top_busy, 10, what="davit top to show requests/s")
    row = [r for r in j["services"] if r["service"] == "obsapp/web"][0]
    assert row["healthy"] == 1 and row["memory_bytes"] > 1_000_000
    assert "host" in j and 0 <= j["host"]["memory_used_percent"] <= 100
    text = d.cli("top", "--once").stdout
    assert "obsapp/web" in text and "REQ/S" in text

    def history():
        h = json.loads(d.cli("metrics", "web", "--since", "5m", "--json").stdout)
        return h["requests"] >= n + 1 and h
    try:
        h = wait_until(history, 10, what="davit metrics to count every request")
    except AssertionError:
        raise AssertionError(f"sent {n + 1}: {d.cli('metrics', 'web', '--since', '5m').stdout}\n{d.where()}")
    assert h["series"] == "obsapp/web" and h["resolution_s"] == 1
    assert h["errors"] == 1
    assert sum(p["requests"] for p in h["points"]) == h["requests"]
    assert all(p["memory_bytes"] > 0 for p in h["points"][-2:])
    # 6 ticks make a 1-minute (here: 6 s) point: the coarse tier holds the same requests.
    def rolled():
        c = json.loads(d.cli("metrics", "web", "--since", "5m", "--resolution", "1m", "--json").stdout)
        return c["points"] and c
    c = wait_until(rolled, 15, what="a rolled-up point")
    assert c["resolution_s"] == 6
    assert c["requests"] <= h["requests"] + 1
    text = d.cli("metrics", "web", "--since", "5m").stdout
    assert "obsapp/web" in text and "P95" in text
    host = json.loads(d.cli("metrics", "host", "--since", "5m", "--json").stdout)
    assert host["points"] and 0 < host["points"][-1]["disk_free_percent"] <= 100
    r = d.cli("metrics", "nosuch", check=False)
    assert r.returncode != 0 and "no metrics recorded for service 'nosuch'" in r.out


# ----------------------------------------------------------------- receivers


class Receiver:
    """An HTTP server that records every POSTed JSON body per path."""

    def __init__(self):
        self.bodies = []
        self.lock = threading.Lock()
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(n)
                with outer.lock:
                    outer.bodies.append((self.path, json.loads(body)))
                self.send_response(204 if self.path == "/discord" else 200)
                self.end_headers()

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def got(self, path):
        with self.lock:
            return [b for p, b in self.bodies if p == path]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def start_smtp(tmp_path):
    py = "/usr/bin/python3"
    r = subprocess.run([py, "-c", "import aiosmtpd"], capture_output=True)
    if r.returncode != 0:
        pytest.fail("python3-aiosmtpd is missing: run `bash scripts/install-deps.sh` (apt-get install python3-aiosmtpd)")
    port = free_port()
    maildir = tmp_path / "mail"
    maildir.mkdir()
    # A tiny handler that writes each message to a file (aiosmtpd's own server).
    script = tmp_path / "smtp_sink.py"
    script.write_text(f"""
import asyncio, os, itertools
from aiosmtpd.controller import Controller
counter = itertools.count()
class Sink:
    async def handle_DATA(self, server, session, envelope):
        path = os.path.join({str(maildir)!r}, "%03d.eml" % next(counter))
        with open(path + ".tmp", "wb") as f:
            f.write(envelope.original_content)
        os.rename(path + ".tmp", path)
        with open(path + ".rcpt", "w") as f:
            f.write(",".join(envelope.rcpt_tos))
        return "250 OK"
c = Controller(Sink(), hostname="127.0.0.1", port={port})
c.start()
print("ready", flush=True)
import signal
signal.sigwait({{signal.SIGTERM, signal.SIGINT}})
c.stop()
""")
    proc = subprocess.Popen([py, str(script)], stdout=subprocess.PIPE, stderr=open(tmp_path / "smtp.log", "wb"))
    line = proc.stdout.readline()
    if b"ready" not in line:
        proc.kill()
        pytest.fail(f"the SMTP sink did not start: {(tmp_path / 'smtp.log').read_text()}")
    return proc, port, maildir


def mails(maildir):
    out = []
    for name in sorted(os.listdir(maildir)):
        if name.endswith(".eml"):
            with open(os.path.join(maildir, name), "rb") as f:
                out.append(email.message_from_bytes(f.read()))
    return out


# ----------------------------------------------------------------- fake host


def write_proc(root, busy, idle, mem_avail_kb, total_kb=8_000_000):
    p = os.path.join(root, "proc")
    os.makedirs(os.path.join(p, "net"), exist_ok=True)
    with open(os.path.join(p, "stat.tmp"), "w") as f:
        f.write(f"cpu  {busy} 0 0 {idle} 0 0 0 0 0 0\ncpu0 {busy} 0 0 {idle} 0 0 0 0 0 0\n")
    os.rename(os.path.join(p, "stat.tmp"), os.path.join(p, "stat"))
    with open(os.path.join(p, "meminfo.tmp"), "w") as f:
        f.write(f"MemTotal:       {total_kb} kB\nMemFree:        {mem_avail_kb} kB\nMemAvailable:   {mem_avail_kb} kB\n")
    os.rename(os.path.join(p, "meminfo.tmp"), os.path.join(p, "meminfo"))
    with open(os.path.join(p, "loadavg"), "w") as f:
        f.write("0.50 0.40 0.30 1/100 1234\n")
    with open(os.path.join(p, "net", "dev"), "w") as f:
        f.write("Inter-|   Receive |  Transmit\n face |bytes packets|bytes\n"
                "    lo: 100 1 0 0 0 0 0 0 100 1 0 0 0 0 0 0\n"
                "  eth0: 5000 10 0 0 0 0 0 0 7000 12 0 0 0 0 0 0\n")


class CpuDriver(threading.Thread):
    """Advances the fake /proc/stat: busy (95%) or idle (5%), until stopped."""

    def __init__(self, root):
        super().__init__(daemon=True)
        self.root, self.busy_mode, self.stop_ev = root, True, threading.Event()
        self.busy = self.idle = 1000
        self.mem = 100_000  # kB available of 8 GB: memory 98.75% used

    def run(self):
        while not self.stop_ev.wait(0.2):
            if self.busy_mode:
                self.busy, self.idle = self.busy + 95, self.idle + 5
            else:
                self.busy, self.idle = self.busy + 5, self.idle + 95
            write_proc(self.root, self.busy, self.idle, self.mem)


RULES = ["cpu_high", "memory_high", "disk_low", "service_down", "error_rate_high", "latency_high@obsapp/web",
         "certificate_expiring", "backup_failed"]


def test_every_default_rule_fires_and_resolves_with_notifications(tmp_path, obs_daemon):
    if os.geteuid() != 0:
        pytest.fail("this test mounts a small tmpfs to drive the disk rule: run it as root")
    hook = Receiver()
    smtp, smtp_port, maildir = start_smtp(tmp_path)
    dead = free_port()  # nothing listens here: a notifier that always fails
    disk = tempfile.mkdtemp(prefix="davit-obs-disk-")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", disk], check=True)
    fake = tmp_path / "hostroot"
    cpu = CpuDriver(str(fake))
    write_proc(str(fake), 1000, 1000, cpu.mem)
    cpu.start()
    try:
        extra_service = """      alerts:
        latency_high: {threshold: 0.2}
"""
        extra_top = f"""x-davit:
  alerts:
    error_rate_high: {{for: 2s}}
  notifications:
    - {{type: webhook, url: "http://127.0.0.1:{hook.port}/generic"}}
    - {{type: slack, url: "${{SLACK_HOOK}}", events: [alerts]}}
    - {{type: discord, url: "http://127.0.0.1:{hook.port}/discord"}}
    - {{type: email, url: "smtp://127.0.0.1:{smtp_port}", from: davit@example.com, to: [ops@example.com, oncall@example.com]}}
    - {{type: webhook, url: "http://127.0.0.1:{dead}/nobody"}}
"""
        compose, sick = write_app(tmp_path / "app", extra_top=extra_top, extra_service=extra_service)
        d = obs_daemon(args=["--metrics-listen", "off"],
                       env={"DAVIT_METRICS_INTERVAL": "1s", "DAVIT_ALERT_FOR": "1s", "DAVIT_HOST_ROOT": str(fake),
                            "DAVIT_DISK_PATH": disk, "DAVIT_NOTIFY_TIMEOUT": "1s", "DAVIT_NOTIFY_RETRIES": "1",
                            "DAVIT_NOTIFY_BACKOFF": "200ms"})
        t0 = time.monotonic()
        d.deploy(compose, env={"SLACK_HOOK": f"http://127.0.0.1:{hook.port}/slack"})
        assert time.monotonic() - t0 < 10, "a dead notifier must not slow a deploy down"
        # The deploy's own notification.
        wait_until(lambda: any(b["event"] == "deploy.succeeded" for b in hook.got("/generic")), 10,
                   what="deploy notification on the generic webhook")

        # Fire everything: busy CPU and full memory (fake /proc), a full disk,
        # 5xx and slow requests, an expiring certificate, a failed backup.
        with open(os.path.join(disk, "fill"), "wb") as f:
            f.write(b"\0" * (3900 * 1024))
        now = int(time.time())
        d.cli("event", "certificate.expiry", "--data", json.dumps({"domain": "shop.example", "not_after": now + 3 * 86400}))
        d.cli("event", "backup.failed", "pg_dump: disk full", "--app", "obsapp")

        def traffic(paths, seconds):
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                for p in paths:
                    get(d.port, p)

        def alerts():
            return {(a["rule"], a["state"]) for a in json.loads(d.cli("alerts", "--json").stdout)["alerts"]}

        def all_in(state):
            def check():
                got = alerts()
                return all((r, state) in got for r in wanted) and got
            return check

        wanted = [r for r in RULES if r != "service_down"]
        end = time.monotonic() + 20
        while time.monotonic() < end and not all_in("firing")():
            traffic(["/fail", "/slow", "/"], 1)
        assert all_in("firing")(), f"not all rules fired: {alerts()}\n{d.where()}"

        # Service down: the health check fails, the replica leaves the routes.
        open(sick, "w").close()
        wanted = ["service_down"]
        wait_until(all_in("firing"), 20, what=f"service_down to fire\n{d.where()}")

        # Resolve everything.
        os.unlink(sick)
        os.unlink(os.path.join(disk, "fill"))
        cpu.busy_mode = False
        cpu.mem = 6_000_000
        d.cli("event", "certificate.expiry", "--data", json.dumps({"domain": "shop.example", "not_after": now + 60 * 86400}))
        d.cli("event", "backup.succeeded", "--app", "obsapp")
        def healthy():
            rows = json.loads(d.cli("top", "--json").stdout)["services"]
            return rows and rows[0]["healthy"] == 1
        wait_until(healthy, 15, what="web healthy again")  # before traffic: no 503 while it comes back
        wanted = RULES
        end = time.monotonic() + 25
        while time.monotonic() < end and not all_in("resolved")():
            traffic(["/"], 1)
        assert all_in("resolved")(), f"not all rules resolved: {alerts()}\n{d.where()}"

        # Each transition was notified once (de-duplicated) on the generic webhook.
        def generic_states():
            return [(b["fields"]["rule"], b["fields"]["state"]) for b in hook.got("/generic")
                    if b["event"].startswith("alert.")]
        wait_until(lambda: all((r, s) in generic_states() for r in RULES for s in ("firing", "resolved")), 15,
                   what="every firing and resolved alert on the generic webhook")
        states = generic_states()
        for r in RULES:
            assert states.count((r, "firing")) == 1, (r, states)
            assert states.count((r, "resolved")) == 1, (r, states)
        g = [b for b in hook.got("/generic") if b["event"] == "alert.firing"][0]
        assert {"source", "event", "severity", "title", "text", "time", "fields"} <= set(g)
        assert g["severity"] in ("critical", "warning", "info")

        # Slack ({"text"}) and Discord ({"content"}) shapes.
        slack = hook.got("/slack")
        assert slack and all(set(b) == {"text"} for b in slack)
        assert any("FIRING cpu_high: host" in b["text"] for b in slack)
        assert not any("deploy" in b["text"] for b in slack), "events: [alerts] keeps deploys off slack"
        wait_until(lambda: any("RESOLVED backup_failed" in b["content"] for b in hook.got("/discord")), 10,
                   what="discord message")
        assert all(set(b) == {"content"} for b in hook.got("/discord"))
        assert any("deploy succeeded" in b["content"] for b in hook.got("/discord"))

        # E-mail through the SMTP server.
        def mail_for(rule):
            return [m for m in mails(maildir) if f"FIRING {rule}" in m["Subject"]]
        wait_until(lambda: mail_for("disk_low"), 15, what="the disk_low e-mail")
        m = mail_for("disk_low")[0]
        assert m["From"] == "davit@example.com" and "ops@example.com" in m["To"]
        assert "[davit critical]" in m["Subject"]
        assert "host.disk_free_percent" in m.get_payload()
        rcpts = open(os.path.join(maildir, sorted(f for f in os.listdir(maildir) if f.endswith(".rcpt"))[0])).read()
        assert rcpts == "ops@example.com,oncall@example.com"

        # The dead notifier failed without holding up the others.
        def failed_count():
            text = json.loads(d.cli("top", "--json").stdout)  # the daemon still answers
            assert text["services"]
            return "not delivered" in d.log()
        wait_until(failed_count, 15, what="the dead notifier's failure in the log")
        text = d.cli("alerts").stdout
        assert "resolved" in text and "cpu_high" in text
    finally:
        cpu.stop_ev.set()
        cpu.join(2)
        subprocess.run(["umount", disk], check=False)
        os.rmdir(disk)
        smtp.send_signal(signal.SIGTERM)
        try:
            smtp.wait(10)
        except subprocess.TimeoutExpired:
            smtp.kill()
        hook.close()


def test_no_flapping_around_a_threshold(tmp_path, obs_daemon):
    """A CPU hovering just around 80% (inside the hysteresis band) fires once and
    does not resolve while it hovers."""
    fake = tmp_path / "hostroot"
    write_proc(str(fake), 1000, 1000, 6_000_000)
    d = obs_daemon(args=["--metrics-listen", "off"],
                   env={"DAVIT_METRICS_INTERVAL": "1s", "DAVIT_ALERT_FOR": "1s", "DAVIT_HOST_ROOT": str(fake)})
    busy, idle = 1000, 1000
    seen = []
    end = time.monotonic() + 10
    k = 0
    while time.monotonic() < end:
        # 90% for the first 4 s, then alternating 78% / 82% (inside 80 +- 5).
        pct = 90 if time.monotonic() < end - 6 else (78 if k % 2 else 82)
        busy += pct
        idle += 100 - pct
        write_proc(str(fake), busy, idle, 6_000_000)
        time.sleep(1.0)
        k += 1
        seen.append({(a["rule"], a["state"]) for a in json.loads(d.cli("alerts", "--json").stdout)["alerts"]})
    assert ("cpu_high", "firing") in seen[-1], seen
    firings = [s for s in seen if ("cpu_high", "firing") in s]
    first = seen.index(firings[0])
    assert all(("cpu_high", "firing") in s for s in seen[first:]), f"flapped: {seen}"


def test_alert_config_errors_name_file_and_line(tmp_path, obs_daemon):
    d = obs_daemon(args=["--metrics-listen", "off"])
    bad = """x-davit:
  alerts:
    cpu_high: {threshold: high}
"""
    compose, _ = write_app(tmp_path / "app", extra_top=bad)
    r = d.deploy(compose, check=False)
    assert r.returncode != 0
    assert f"{compose}:13: threshold must be a number" in r.out, r.out
    ps = json.loads(d.cli("ps", "--json").stdout)
    assert not ps["apps"], "nothing is deployed when the alert config is wrong"
    for text, msg in [
        ("x-davit:\n  alerts:\n    mine: {metric: service.p95_seconds}\n", "needs metric: and above: or below:"),
        ("x-davit:\n  alerts:\n    mine: {metric: nope, above: 1}\n", "unknown metric 'nope'"),
        ("x-davit:\n  alerts:\n    cpu_high: {severity: loud}\n", "severity must be critical, warning or info"),
        ("x-davit:\n  notifications:\n    - {type: pager, url: http://x}\n", "notification type must be"),
        ("x-davit:\n  notifications:\n    - {type: email, url: smtp://127.0.0.1:25}\n", "needs from: and to:"),
    ]:
        compose, _ = write_app(tmp_path / "app", extra_top=text)
        r = d.deploy(compose, check=False)
        assert r.returncode != 0 and msg in r.out and f"{compose}:" in r.out, (text, r.out)


def test_logs_filters_export_and_retention(tmp_path, obs_daemon):
    d = obs_daemon(args=["--metrics-listen", "off", "--logs-max-age", "1h", "--logs-max-size", "3000000"],
                   env={"DAVIT_METRICS_INTERVAL": "1s"})
    compose, _ = write_app(tmp_path / "app")
    t_before = int(time.time()) - 1
    d.deploy(compose)
    for p in ["/fail/1", "/hello/1", "/fail/2", "/"]:
        get(d.port, p)

    def lines(*args):
        r = d.cli("logs", "web", *args)
        return [l for l in r.stdout.splitlines() if l.strip()]

    # --level: a level word in plain lines, the "level" field of JSON lines.
    wait_until(lambda: len(lines("--level", "error")) == 2, 10, what="two error lines")
    errs = [json.loads(l) for l in lines("--level", "error", "--json")]
    assert [e["line"] for e in errs] == ["ERROR failing on purpose: /fail/1", "ERROR failing on purpose: /fail/2"]
    assert {"time", "app", "service", "replica", "stream", "line"} <= set(errs[0])
    warn = lines("--level", "warn")
    assert len(warn) == 3 and any("hello /hello/1" in l for l in warn), warn
    assert all("web#0" in l for l in warn)
    # --grep, --since / --until
    assert lines("--grep", "PURPOSE: /fail/2")[0].endswith("ERROR failing on purpose: /fail/2")
    assert len(lines("--grep", "purpose", "--since", "1h")) == 2
    assert lines("--grep", "purpose", "--until", str(t_before)) == []
    # export to a file
    out = tmp_path / "export.jsonl"
    d.cli("logs", "web", "--grep", "purpose", "--json", "--output", str(out))
    exported = [json.loads(l) for l in out.read_text().splitlines()]
    assert len(exported) == 2
    r = d.cli("logs", "nosuch", "--grep", "x", check=False)
    assert r.returncode == 1 and "nosuch" in r.stderr

    # davit's own log: JSON lines with time, level, component, message, fields.
    def own():
        return [json.loads(l) for l in d.cli("logs", "--daemon", "--json", "--component", "engine").stdout.splitlines()]
    rows = wait_until(lambda: [r for r in own() if "deploy.succeeded" in r["message"]], 10, what="engine log line")
    assert set(rows[0]) == {"time", "level", "component", "message", "fields"}
    assert rows[0]["level"] == "info" and rows[0]["component"] == "engine"
    text = d.cli("logs", "--daemon", "--grep", "deploy.succeeded").stdout
    assert " info engine: obsapp deploy.succeeded" in text
    assert d.cli("logs", "--daemon", "--level", "error", "--grep", "deploy.succeeded").stdout == ""
    # follow the daemon log: the alert a new event raises shows up (obs logs it with its fields)
    p = subprocess.Popen([davitctl.DAVIT_BIN, "logs", "--daemon", "-f", "--json", "--grep", "FIRING backup_failed",
                          "--state-dir", d.state_dir], stdout=subprocess.PIPE, text=True)
    got = []
    reader = threading.Thread(target=lambda: got.extend(iter(p.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        time.sleep(0.3)
        d.cli("event", "backup.failed", "pg_dump failed", "--app", "obsapp")
        wait_until(lambda: got, 10, what="the followed daemon log to show the alert")
        row = json.loads(got[0])
        assert row["level"] == "warn" and row["component"] == "obs"
        assert row["fields"]["rule"] == "backup_failed" and row["fields"]["state"] == "firing"
    finally:
        p.terminate()
        p.wait(5)

    # Retention: old files and files over the size budget go, the open log stays.
    logdir = os.path.join(d.state_dir, "logs", "obsapp", "web")
    current = [f for f in os.listdir(logdir) if f.endswith(".log")]
    assert current, os.listdir(logdir)
    old = os.path.join(logdir, "web-old.log.1")
    with open(old, "w") as f:
        f.write("x" * 1000)
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    big1 = os.path.join(logdir, "web-big1.log")
    big2 = os.path.join(logdir, "web-big2.log")
    with open(big1, "wb") as f:
        f.write(b"y" * 2_000_000)
    os.utime(big1, (time.time() - 60, time.time() - 60))
    with open(big2, "wb") as f:
        f.write(b"z" * 2_000_000)
    wait_until(lambda: not os.path.exists(old) and not os.path.exists(big1), 15, what="log retention")
    assert os.path.exists(big2), "the newest file fits in the size budget"
    assert all(os.path.exists(os.path.join(logdir, c)) for c in current), "the open log stays"
    get(d.port, "/fail/3")
    wait_until(lambda: len(lines("--level", "error")) == 3, 10, what="the replica still logs")

    # A time range reads the log files: history survives the replica (a restart
    # replaces it; the daemon only keeps the new replica's lines in memory).
    d.cli("restart", "web")
    get(d.port, "/fail/4")
    wait_until(lambda: len(lines("--level", "error", "--since", "1h")) == 4, 10, what="four error lines in the files")
    assert len(lines("--level", "error")) == 1, "in memory: only the new replica's line"
    rows = [json.loads(l) for l in lines("--level", "error", "--since", "1h", "--json")]
    assert [r["line"].rsplit(" ", 1)[1] for r in rows] == ["/fail/1", "/fail/2", "/fail/3", "/fail/4"]
    assert all(r["release"] == 1 and r["service"] == "web" and r["app"] == "obsapp" for r in rows)


def test_firing_alerts_survive_a_restart_without_a_second_notification(tmp_path, obs_daemon):
    hook = Receiver()
    try:
        fake = tmp_path / "hostroot"
        write_proc(str(fake), 1000, 1000, 100_000)  # memory 98.75% used
        d = obs_daemon(args=["--metrics-listen", "off", "--notify", f"webhook=http://127.0.0.1:{hook.port}/flag"],
                       env={"DAVIT_METRICS_INTERVAL": "1s", "DAVIT_ALERT_FOR": "1s", "DAVIT_HOST_ROOT": str(fake)})
        now = int(time.time())
        d.cli("event", "certificate.expiry", "--data", json.dumps({"domain": "a.example", "not_after": now + 86400}))
        d.cli("event", "backup.failed", "--app", "shop")

        def firing():
            return [(b["fields"]["rule"], b["fields"]["subject"]) for b in hook.got("/flag")
                    if b["event"] == "alert.firing"]
        want = {("memory_high", "host"), ("certificate_expiring", "a.example"), ("backup_failed", "shop")}
        wait_until(lambda: want <= set(firing()), 15, what="three alerts notified through --notify")
        d.restart()
        # A few ticks after the restart: still firing (the certificate and the
        # backup state come back from the events), nothing notified again.
        def still():
            got = {(a["rule"], a["subject"]) for a in json.loads(d.cli("alerts", "--json").stdout)["alerts"]
                   if a["state"] == "firing"}
            return want <= got
        wait_until(still, 10, what="the alerts to be firing after the restart")
        def ticks():
            return len(json.loads(d.cli("metrics", "host", "--since", "5m", "--json").stdout)["points"])
        n0 = ticks()
        wait_until(lambda: ticks() >= n0 + 3, 10, what="three more ticks, in which a duplicate would show up")
        assert still()
        assert sorted(firing()) == sorted(want), f"notified again after the restart: {firing()}"
        d.cli("event", "backup.succeeded", "--app", "shop")
        wait_until(lambda: any(b["event"] == "alert.resolved" and b["fields"]["rule"] == "backup_failed"
                               for b in hook.got("/flag")), 10, what="backup_failed resolved")
    finally:
        hook.close()


def test_served_certificate_feeds_expiry_metric_and_alert(tmp_path, obs_daemon):
    """A certificate the daemon serves (--cert, through the certificate
    manager) shows up as davit_certificate_expiry_timestamp_seconds; one that
    expires in 2 days fires certificate_expiring."""
    import tlsutil
    ca = tlsutil.TestCA(tmp_path / "ca")
    cert, key = ca.leaf("shop.test", days=2)
    mport = free_port()
    d = obs_daemon(args=["--metrics-listen", f"127.0.0.1:{mport}", "--https", f"127.0.0.1:{free_port()}",
                         "--no-acme", "--cert", f"shop.test={cert},{key}"],
                   env={"DAVIT_METRICS_INTERVAL": "1s", "DAVIT_ALERT_FOR": "1s"})
    status, text = scrape(mport)
    assert status == 200
    exp = sample(text, "davit_certificate_expiry_timestamp_seconds", domain="shop.test")
    assert exp is not None, text
    assert 1 * 86400 < exp - time.time() < 3 * 86400

    def firing():
        return [a for a in json.loads(d.cli("alerts", "--json").stdout)["alerts"]
                if a["rule"] == "certificate_expiring" and a["state"] == "firing"]
    a = wait_until(firing, 10, what="certificate_expiring for the served certificate")[0]
    assert a["subject"] == "shop.test" and 1 < a["value"] < 3


def test_deploy_failure_and_rollback_are_notified(tmp_path, obs_daemon):
    hook = Receiver()
    try:
        mport = free_port()
        d = obs_daemon(args=["--metrics-listen", f"127.0.0.1:{mport}", "--health-timeout", "2s",
                             "--notify", f"slack=http://127.0.0.1:{hook.port}/slack",
                             "--notify", f"webhook=http://127.0.0.1:{hook.port}/hook"],
                       env={"DAVIT_METRICS_INTERVAL": "1s"})
        compose, _ = write_app(tmp_path / "app")
        d.deploy(compose)  # release 1
        # Release 2 never gets healthy (its health check sees an existing "sick" file).
        text = open(compose).read()
        with open(compose, "w") as f:
            f.write(text.replace(f"SICK_FILE: {tmp_path / 'app' / 'sick'}", "SICK_FILE: /etc/hostname"))
        r = d.deploy(compose, check=False)
        assert r.returncode != 0, r.out
        # Release 3 is fine again; then roll back to release 1.
        with open(compose, "w") as f:
            f.write(text.replace("run: /usr/bin/python3 app.py", "run: /usr/bin/python3 -u app.py"))
        d.deploy(compose)
        d.cli("rollback", "--app", "obsapp")

        def events():
            return [b["event"] for b in hook.got("/hook")]
        wait_until(lambda: events().count("deploy.succeeded") >= 3 and "rollback.started" in events()
                   and "deploy.failed" in events(), 15, what=f"deploy notifications (got {events()})")
        failed = [b for b in hook.got("/hook") if b["event"] == "deploy.failed"][0]
        assert failed["severity"] == "critical" and failed["fields"]["app"] == "obsapp"
        assert "release 2" in failed["text"]
        rb = [b for b in hook.got("/hook") if b["event"] == "rollback.started"][0]
        assert rb["severity"] == "warning" and "release 1" in rb["text"]
        slack = [b["text"] for b in hook.got("/slack")]
        assert any("deploy FAILED" in t for t in slack) and any("rollback" in t for t in slack), slack
        text = scrape(mport)[1]
        assert sample(text, "davit_deploys_total", app="obsapp", result="succeeded") == 3
        assert sample(text, "davit_deploys_total", app="obsapp", result="failed") == 1
        assert sample(text, "davit_rollbacks_total", app="obsapp", kind="manual") == 1
        assert sample(text, "davit_rollbacks_total", app="obsapp", kind="automatic") == 1
    finally:
        hook.close()

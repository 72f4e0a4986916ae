"""End-to-end: the day-to-day commands against a real daemon serving the
Penpal stack — logs (history with timestamps, -f streaming), --json outputs,
stop/start/restart of a service, rollback, down, and every --help."""

import datetime
import json
import os
import queue
import re
import signal
import subprocess
import threading
import time

import pytest

pytest.register_assert_rewrite("davitctl")  # before the import: its asserts report values too
from davitctl import (DAVIT_BIN, DOMAINS, REPLICAS, SERVICES, Load, alive, clean_env,
                      get_json, get_json_direct, http_get, processes_in_groups, wait_gone, wait_until, describe_pids)

pytest_plugins = ["davitctl"]

LINE_RE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) (\S+)#(\d+) (out|err) \| (.*)$")

# service.js, made to print one line per request (except health checks)
REQUEST_LOG = ("const server = http.createServer((req, res) => {\n"
               "  if (req.url !== '/api/v1/health') console.log('request ' + req.method + ' ' + req.url);\n")


def make_chatty(env):
    path = os.path.join(env.app, "service.js")
    with open(path) as f:
        text = f.read()
    new = text.replace("const server = http.createServer((req, res) => {\n", REQUEST_LOG)
    assert new != text
    with open(path, "w") as f:
        f.write(new)


def stack(env, args=()):
    d = env(args=args)
    d.deploy(env.compose)
    d.wait_all_healthy(timeout=10)
    return d


def parse_json(r, what):
    try:
        return json.loads(r.stdout)
    except ValueError:
        raise AssertionError(f"`{what}` did not print JSON (exit {r.returncode}): {r.out[:1000]!r}")


def stamp_ok(stamp):
    t = datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc)
    now = datetime.datetime.now(datetime.timezone.utc)
    return abs((now - t).total_seconds()) < 300


def test_logs_tail_shows_service_lines_with_timestamps(davit_env):
    make_chatty(davit_env)
    d = stack(davit_env)
    for i in range(12):
        assert http_get(d.port, "auth.penpal.localhost", f"/tail-marker-{i}")[0] == 200
    # the daemon collects replica output asynchronously: poll for the last line
    wait_until(lambda: "/tail-marker-11" in d.cli("logs", "auth", "--tail", "5").stdout, 10,
               what="the last request's line in `davit logs auth`")
    r = d.cli("logs", "auth", "--tail", "5")
    lines = [l for l in r.stdout.splitlines() if l.strip()]
    assert lines, f"`davit logs auth --tail 5` printed nothing\n{d.where()}"
    for l in lines:
        m = LINE_RE.match(l)
        assert m, f"line without time, replica and stream: {l!r}\n{r.stdout}"
        assert m.group(2) == "auth", f"a line of another service in `logs auth`: {l!r}"
        assert stamp_ok(m.group(1)), f"implausible timestamp in {l!r}"
    # --tail 5: the last 5 lines (of each replica at most); the newest line is there, old ones are not
    per_replica = {}
    for l in lines:
        per_replica.setdefault(LINE_RE.match(l).group(3), []).append(l)
    assert all(len(v) <= 5 for v in per_replica.values()) and len(lines) <= 10, f"--tail 5 printed:\n{r.stdout}"
    assert "/tail-marker-11" in r.stdout and "/tail-marker-0\n" not in r.stdout + "\n", r.stdout
    # without SERVICE: every service
    allr = d.cli("logs", "--tail", "100").stdout
    seen = {LINE_RE.match(l).group(2) for l in allr.splitlines() if LINE_RE.match(l)}
    assert seen == set(SERVICES), f"`davit logs` showed services {seen}:\n{allr}"


def test_logs_of_unknown_service_fails(davit_env):
    d = stack(davit_env)
    bad = d.cli("logs", "nosuchservice", check=False)
    assert "nosuchservice" in bad.out, bad.out
    assert bad.returncode != 0, (f"`davit logs nosuchservice` printed an error but exited 0 "
                                 f"(stdout {bad.stdout!r}, stderr {bad.stderr!r})")


def test_logs_follow_streams_new_lines(davit_env):
    make_chatty(davit_env)
    d = stack(davit_env)
    proc = subprocess.Popen([DAVIT_BIN, "logs", "-f", "auth", "--tail", "2", "--state-dir", d.state_dir],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=clean_env(), text=True)
    davit_env.extra_pids.append(proc.pid)
    lines = queue.Queue()
    got = []

    def reader():
        for l in proc.stdout:
            lines.put(l)

    threading.Thread(target=reader, daemon=True).start()

    def read_until(pred, timeout, what):
        deadline = time.monotonic() + timeout
        while True:
            for l in got:
                if pred(l):
                    return l
            left = deadline - time.monotonic()
            if left <= 0 or (proc.poll() is not None and lines.empty()):
                raise AssertionError(f"`davit logs -f auth` did not print {what} within {timeout}s "
                                     f"(exit {proc.poll()}); it printed:\n{''.join(got)}\n{d.where()}")
            try:
                got.append(lines.get(timeout=min(left, 0.2)))
            except queue.Empty:
                pass

    try:
        read_until(lambda l: "listening on" in l, 10, "the history")
        marker = f"/follow-marker-{os.getpid()}-{time.monotonic_ns()}"
        t0 = time.monotonic()
        assert http_get(d.port, "auth.penpal.localhost", marker)[0] == 200
        line = read_until(lambda l: marker in l, 10, "the new request's line")
        assert time.monotonic() - t0 < 5
        m = LINE_RE.match(line.rstrip("\n"))
        assert m and m.group(2) == "auth" and stamp_ok(m.group(1)), f"streamed line: {line!r}"
        assert proc.poll() is None, "`davit logs -f` exited while following"
        # replicas started after `logs -f` began (a redeploy) are followed too
        d.deploy(davit_env.compose, env={"AUTH_VERSION": "2"})
        read_until(lambda l: '"version":"2"' in l and "listening on" in l, 10, "the new replicas' first line")
        marker2 = f"/follow-marker-new-{os.getpid()}-{time.monotonic_ns()}"
        assert http_get(d.port, "auth.penpal.localhost", marker2)[0] == 200
        read_until(lambda l: marker2 in l, 10, "a request line from a replica started after `logs -f`")
        assert proc.poll() is None, "`davit logs -f` exited across a redeploy"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def test_json_outputs_parse(davit_env):
    d = stack(davit_env)
    ps = parse_json(d.cli("ps", "--json"), "davit ps --json")
    svcs = {s["name"]: s for a in ps["apps"] for s in a["services"]}
    assert set(svcs) == set(SERVICES)
    for s in svcs.values():
        for rep in s["replicas"]:
            for k in ("index", "release", "state", "port", "pid", "uptime_ms", "restarts", "health"):
                assert k in rep, f"`ps --json` replica without {k}: {rep}"
    rel = parse_json(d.cli("releases", "--json"), "davit releases --json")
    assert rel["current"] == 1 and [r["release"] for r in rel["releases"]] == [1], rel
    dep = parse_json(d.cli("deploy", "-f", davit_env.compose, "--json", env={"AI_VERSION": "2"}), "davit deploy --json")
    assert dep["ok"] is True and dep["release"] == 2 and dep["services_replaced"] == 1, dep
    same = parse_json(d.cli("deploy", "-f", davit_env.compose, "--json", env={"AI_VERSION": "2"}),
                      "davit deploy --json (nothing changed)")
    assert same["ok"] is True and same["services_replaced"] == 0, same
    bad = davit_env.write("bad.yml", "name: penpal\nservices:\n  db:\n    restart: sometimes\n")
    err = d.cli("deploy", "-f", bad, "--json", check=False)
    assert err.returncode != 0
    assert "sometimes" in json.dumps(parse_json(err, "davit deploy --json (malformed file)")), err.out
    for cmd in (["restart", "ai"], ["stop", "ai"], ["start", "ai"], ["rollback"], ["down"]):
        r = d.cli(*cmd, "--json")
        parse_json(r, "davit " + " ".join(cmd) + " --json")
    # errors are JSON too with --json
    err = d.cli("restart", "nosuch", "--json", check=False)
    assert err.returncode != 0 and "nosuch" in parse_json(err, "davit restart nosuch --json").get("error", ""), err.out


def test_logs_json_parses(davit_env):
    d = stack(davit_env)
    r = d.cli("logs", "auth", "--tail", "5", "--json")
    text = r.stdout.strip()
    try:
        doc = json.loads(text)
        objs = doc if isinstance(doc, list) else doc.get("lines", [doc])
    except ValueError:  # or JSON lines
        objs, bad = [], []
        for l in text.splitlines():
            try:
                objs.append(json.loads(l))
            except ValueError:
                bad.append(l)
        assert text and not bad, (f"`davit logs auth --tail 5 --json` (documented in its --help as 'JSON "
                                  f"output') printed lines that are not JSON:\n{text[:1500]}")
    assert len(objs) >= 2, f"`davit logs auth --json`: {text[:1500]}"
    for o in objs:
        flat = json.dumps(o)
        assert "auth" in flat and re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", flat), (
            f"a JSON log entry without the service or a timestamp: {o}")
    assert any("listening on" in json.dumps(o) for o in objs), f"no replica output in:\n{text[:1500]}"


def test_stop_and_start_service(davit_env):
    d = stack(davit_env)
    before = d.pids()
    notify = before["notify"]
    group = processes_in_groups(notify)
    r = d.cli("stop", "notify")
    assert "notify" in r.out
    wait_gone(group, 15, what="notify's replica processes after `davit stop notify`")
    svc = d.services()["notify"]
    assert svc["stopped"] is True, f"notify after stop: {svc}"
    assert not [rep for rep in svc["replicas"] if rep.get("pid") and alive(rep["pid"])], svc
    status, body = http_get(d.port, "notify.penpal.localhost")
    assert status in (404, 502, 503), f"a stopped service answered {status}: {body[:200]!r}"
    after = d.pids()
    for s in SERVICES:
        if s != "notify":
            assert after[s] == before[s], f"{s} changed when notify was stopped"

    d.cli("start", "notify")
    svcs = d.wait_all_healthy(timeout=15)
    assert svcs["notify"]["stopped"] is False, svcs["notify"]
    new = [rep["pid"] for rep in svcs["notify"]["replicas"]]
    assert not set(new) & set(notify), f"notify was not started anew: {notify} -> {new}"
    j = get_json(d.port, "notify.penpal.localhost")
    assert j["service"] == "notify" and j["version"] == "1", j
    assert d.pids()["auth"] == before["auth"]
    bad = d.cli("stop", "nosuch", check=False)
    assert bad.returncode != 0 and "nosuch" in bad.out, bad.out


def test_stopped_service_stays_stopped_across_daemon_restart(davit_env):
    """`davit stop --help`: 'they stay stopped until davit start' - also when
    the daemon restarts (as `davit down` does)."""
    d = stack(davit_env)
    notify = d.pids()["notify"]
    d.cli("stop", "notify")
    wait_gone(processes_in_groups(notify), 15, what="notify's processes after `davit stop notify`")
    d.restart()
    d.wait_all_healthy(timeout=20, expect={s: n for s, n in REPLICAS.items() if s != "notify"})
    svc = d.services()["notify"]
    running = [r for r in svc["replicas"] if r.get("pid") and alive(r["pid"])]
    status, _ = http_get(d.port, "notify.penpal.localhost")
    assert svc["stopped"] is True and not running and status != 200, (
        f"notify, stopped with `davit stop`, runs again after a daemon restart: {svc}, "
        f"GET notify.penpal.localhost -> {status}\n{d.where()}")


def test_down_survives_daemon_restart(davit_env):
    d = stack(davit_env)
    d.cli("down")
    d.restart()
    svcs = d.services()
    running = {n: [r["pid"] for r in s["replicas"] if r.get("pid") and alive(r["pid"])] for n, s in svcs.items()}
    assert not any(running.values()), f"replicas running after `down` and a daemon restart: {running}\n{d.where()}"
    assert http_get(d.port, "auth.penpal.localhost")[0] == 404


def test_restart_under_load_drops_nothing(davit_env):
    d = stack(davit_env)
    before = d.pids()
    load = Load(d.port, "auth.penpal.localhost", threads=6).start()
    load.wait_requests(50)
    t0 = load.now()
    d.cli("restart", "auth")
    t1 = load.now()
    load.keep(1.0)
    load.stop()
    assert not load.failures(), f"requests failed during `davit restart auth`: {load.summary()}\n{d.where()}"
    svcs = d.wait_all_healthy(timeout=15)
    after = d.pids()
    assert not set(after["auth"]) & set(before["auth"]), f"auth not restarted: {before['auth']} -> {after['auth']}"
    for s in SERVICES:
        if s != "auth":
            assert after[s] == before[s], f"{s} changed by `restart auth`"
    wait_gone(before["auth"], 15, what="the old auth replicas to stop")
    d.wait_no_strays(davit_env.app)
    # requests that started after `restart` returned were answered by the new replicas only
    new_servers = {get_json_direct(rep["port"])["pid"] for rep in svcs["auth"]["replicas"]}
    served_after = {q[5] for q in load.all() if q[0] > t1}
    assert served_after and served_after <= new_servers, (
        f"after the restart (t={t1:.3f}s, began {t0:.3f}s) answers came from {served_after}, "
        f"the new replicas are {new_servers}")


def test_rollback_returns_to_previous_release(davit_env):
    d = stack(davit_env)
    first = d.cli("rollback", check=False)  # only one release: nothing to go back to
    assert first.returncode != 0 and "release" in first.out, first.out
    assert d.releases()["current"] == 1
    d.deploy(davit_env.compose, env={"AUTH_VERSION": "2"})
    d.wait_all_healthy(timeout=15)
    assert d.releases()["current"] == 2
    assert get_json(d.port, "auth.penpal.localhost")["version"] == "2"
    db_pid = d.pids()["db"]

    load = Load(d.port, "auth.penpal.localhost", threads=4).start()
    load.wait_requests(30)
    d.cli("rollback")
    t1 = load.now()
    load.keep(0.5)
    load.stop()
    assert not load.failures(), f"requests failed during `davit rollback`: {load.summary()}\n{d.where()}"
    assert {q[4] for q in load.all() if q[0] > t1} == {"1"}, f"after the rollback: {load.summary()}"
    rels = d.releases()
    assert rels["current"] == 1, f"after `davit rollback`: {rels}"
    assert sorted(r["release"] for r in rels["releases"]) == [1, 2], rels
    d.wait_all_healthy(timeout=15)
    assert get_json(d.port, "auth.penpal.localhost")["version"] == "1"
    assert d.pids()["db"] == db_pid, "db replaced by a rollback that only changes auth"
    d.wait_no_strays(davit_env.app)

    # an explicit release number goes forward again
    d.cli("rollback", "2")
    assert d.releases()["current"] == 2
    assert get_json(d.port, "auth.penpal.localhost")["version"] == "2"
    bad = d.cli("rollback", "99", check=False)
    assert bad.returncode != 0 and "99" in bad.out, bad.out
    assert d.releases()["current"] == 2


def test_down_stops_everything(davit_env):
    d = stack(davit_env)
    leaders = [p for ps in d.pids().values() for p in ps]
    group = processes_in_groups(leaders)
    rels = d.releases()
    d.cli("down")
    try:
        wait_until(lambda: not [p for p in group if alive(p)], 15, interval=0.05)
    except AssertionError:
        raise AssertionError(f"replica processes still alive 15s after `davit down`: "
                             f"{describe_pids([p for p in group if alive(p)])}\n{d.where()}")
    assert not processes_in_groups(leaders)
    for s in SERVICES:
        for host in DOMAINS[s]:
            status, body = http_get(d.port, host)
            assert status == 404, f"Host {host} after `davit down`: HTTP {status} {body[:200]!r}"
    for name, svc in d.services().items():
        assert not [r for r in svc["replicas"] if r.get("pid") and alive(r["pid"])], f"{name}: {svc}"
    assert d.releases() == rels, "`davit down` changed the releases"
    # deploy brings it back
    d.deploy(davit_env.compose)
    d.wait_all_healthy(timeout=15)
    assert get_json(d.port, "penpal.localhost")["service"] == "frontend"


@pytest.mark.parametrize("cmd", ["up", "deploy", "ps", "logs", "releases", "rollback", "restart", "stop", "start",
                                 "down", "daemon", "proxy", "version"])
def test_help_exits_zero(cmd):
    r = subprocess.run([DAVIT_BIN, cmd, "--help"], capture_output=True, text=True, timeout=10, env=clean_env())
    assert r.returncode == 0, f"`davit {cmd} --help` exited {r.returncode}: {r.stdout}{r.stderr}"
    out = r.stdout + r.stderr
    if cmd != "version":
        assert f"usage: davit {cmd}" in out, out


def test_top_level_help():
    r = subprocess.run([DAVIT_BIN, "--help"], capture_output=True, text=True, timeout=10, env=clean_env())
    assert r.returncode == 0 and "usage: davit COMMAND" in r.stdout, r.stdout + r.stderr
    for cmd in ["up", "deploy", "ps", "logs", "releases", "rollback", "restart", "stop", "start", "down", "daemon"]:
        assert re.search(rf"^\s+{cmd}\s", r.stdout, re.M), f"`davit --help` does not list {cmd}"

"""End-to-end: deploying the Penpal example stack with a real `davit daemon`:
first deploy in dependency order, a one-service zero-downtime redeploy, and
automatic rollback of versions that never become healthy or exit at once."""

import re
import time

import pytest

pytest.register_assert_rewrite("davitctl")  # before the import: its asserts report values too
from davitctl import (DEPENDS, DOMAINS, REPLICAS, SERVICES, Load, alive,
                      get_json, listening_times, wait_gone)

pytest_plugins = ["davitctl"]


def test_stack_comes_up_in_dependency_order(davit_env):
    d = davit_env()
    r = d.deploy(davit_env.compose, json_out=True)
    res = r.json
    assert res["ok"] is True and res["error"] is None, f"deploy result {res}\n{d.where()}"
    assert res["services_replaced"] == 7, f"deploy result {res}\n{d.where()}"
    rel = res["release"]

    # The report lists the services in the order they were switched.
    order = re.findall(r"^\s+(\S+)\s+switched to release", res["report"], re.M)
    assert sorted(order) == sorted(SERVICES), f"report: {res['report']}"
    assert order[0] == "db" and order[-1] == "frontend", f"switch order {order}\n{d.where()}"
    for s, deps in DEPENDS.items():
        for dep in deps:
            assert order.index(dep) < order.index(s), f"{s} switched before its dependency {dep}: {order}"

    # Every replica active, healthy, of this release, with its own port and a live process.
    svcs = d.wait_all_healthy(timeout=10)
    ports = set()
    for s in SERVICES:
        reps = svcs[s]["replicas"]
        assert len(reps) == REPLICAS[s], f"{s}: {reps}"
        for rep in reps:
            assert rep["state"] == "healthy" and rep["release"] == rel and rep["role"] == "active", f"{s}: {rep}"
            assert rep["restarts"] == 0, f"{s}: {rep}"
            assert alive(rep["pid"]), f"{s}: pid {rep['pid']} of `ps` is not running"
            ports.add(rep["port"])
    assert len(ports) == 8, f"replicas share ports: {svcs}"

    # Start order, seen by the replicas themselves: each service printed
    # 'listening' only after every dependency did.
    logs = d.cli("logs", "--tail", "20").stdout
    started = listening_times(d, logs)
    assert set(started) == set(SERVICES), f"'listening' lines per service: {started}\nlogs:\n{logs}"
    for s, deps in DEPENDS.items():
        for dep in deps:
            assert max(started[dep]) <= min(started[s]), (
                f"{s} was listening ({min(started[s])}) before its dependency {dep} ({max(started[dep])})\n{logs}")

    # Every domain (and SERVICE.APP.localhost) answers through the proxy with its service.
    for s in SERVICES:
        for host in DOMAINS[s] + [f"{s}.penpal.localhost"]:
            j = get_json(d.port, host, "/")
            assert j["service"] == s and j["version"] == "1", f"Host {host}: {j}"
            h = get_json(d.port, host, "/api/v1/health")
            assert h["status"] == "ok", f"Host {host} health: {h}"

    cur = d.releases()
    assert cur["current"] == rel, f"releases: {cur}"


def test_redeploy_one_service_under_load(davit_env):
    d = davit_env()
    d.deploy(davit_env.compose)
    d.wait_all_healthy(timeout=10)
    before = d.pids()
    rel_before = d.releases()["current"]

    load = Load(d.port, "auth.penpal.localhost", threads=6).start()
    load.wait_requests(50)
    t_deploy = load.now()
    r = d.deploy(davit_env.compose, env={"AUTH_VERSION": "2"}, json_out=True)
    t_done = load.now()
    load.keep(1.5)  # the load goes on a little after the switch (the old replicas drain)
    load.stop()

    res = r.json
    assert res["ok"] and res["services_replaced"] == 1, f"deploy result: {res}\n{d.where()}"
    switched = re.findall(r"^\s+(\S+)\s+switched to release", res["report"], re.M)
    assert switched == ["auth"], f"report: {res['report']}"

    fails = load.failures()
    assert not fails, f"{load.summary()}\n{d.where()}"
    reqs = load.all()
    before_deploy = [q for q in reqs if q[1] < t_deploy]
    after_deploy = [q for q in reqs if q[0] > t_done]
    assert before_deploy and after_deploy, load.summary()
    assert {q[4] for q in before_deploy} == {"1"}, f"before the deploy: {load.summary()}"
    assert {q[4] for q in after_deploy} == {"2"}, f"requests started after the deploy returned: {load.summary()}"
    # the switch happened once: no version 1 answer to a request that started after a version 2 answer ended
    first_v2_end = min(q[1] for q in reqs if q[4] == "2")
    late_v1 = [q for q in reqs if q[4] == "1" and q[0] > first_v2_end + 0.05]
    assert not late_v1, f"version 1 still answered after version 2 did: {late_v1[:5]}\n{load.summary()}"

    d.wait_all_healthy(timeout=15)
    after = d.pids()
    for s in SERVICES:
        if s == "auth":
            assert not set(after[s]) & set(before[s]), f"auth replicas not replaced: {before[s]} -> {after[s]}"
        else:
            assert after[s] == before[s], f"{s} was replaced by a redeploy of auth: {before[s]} -> {after[s]}"
    for p in before["auth"]:
        # the old auth replicas are stopped once drained
        wait_gone([p], 15, what="the replaced auth replicas to stop")
    assert get_json(d.port, "auth.penpal.localhost")["version"] == "2"
    d.wait_no_strays(davit_env.app)
    rels = d.releases()
    assert rels["current"] == res["release"] and rels["current"] != rel_before, f"releases: {rels}"


def test_unhealthy_version_is_rolled_back(davit_env):
    d = davit_env(args=["--health-timeout", "6s"])
    d.deploy(davit_env.compose)
    d.wait_all_healthy(timeout=10)
    before = d.pids()
    rels_before = d.releases()
    notify_pid = get_json(d.port, "notify.penpal.localhost")["pid"]

    load = Load(d.port, "notify.penpal.localhost", threads=4).start()
    load.wait_requests(20)
    t0 = time.monotonic()
    r = d.cli("deploy", "-f", davit_env.compose, env={"NOTIFY_HEALTH_FAIL": "1", "NOTIFY_VERSION": "2"},
              check=False)
    took = time.monotonic() - t0
    load.stop()

    assert r.returncode != 0, f"deploy of a never-healthy version exited 0:\n{r.out}\n{d.where()}"
    msg = r.out
    assert "notify" in msg, f"the failure names no service:\n{msg}"
    assert re.search(r"\b503\b", msg), f"the failure does not give the health result (HTTP 503):\n{msg}"
    assert "rolled back" in msg.lower(), f"the failure does not say it was rolled back:\n{msg}"
    assert took < 20, f"deploy took {took:.1f}s with --health-timeout 6s"
    assert not load.failures(), f"notify failed requests during the failed deploy: {load.summary()}\n{d.where()}"
    assert {q[4] for q in load.all()} == {"1"}, f"version 2 served traffic: {load.summary()}"

    # The old notify still serves: same version, same process; nothing else changed.
    j = get_json(d.port, "notify.penpal.localhost")
    assert j["version"] == "1" and j["pid"] == notify_pid, f"notify after the failed deploy: {j}"
    d.wait_all_healthy(timeout=10)
    assert d.pids() == before, f"replicas changed: {before} -> {d.pids()}"
    rels = d.releases()
    assert rels["current"] == rels_before["current"], f"current release moved: {rels_before} -> {rels}"
    d.wait_no_strays(davit_env.app)  # the failed replica is gone


def test_version_that_exits_at_once_fails_fast(davit_env):
    d = davit_env()  # default --health-timeout (60s): failing fast is the daemon noticing the exit
    d.deploy(davit_env.compose)
    d.wait_all_healthy(timeout=10)
    before = d.pids()
    current = d.releases()["current"]

    # 1. a program that prints a few lines and exits 3
    davit_env.write("crash.js", "console.log('crash-line-1');\nconsole.error('crash-line-2 missing config');\n"
                                "console.log('crash-line-3 giving up');\nprocess.exit(3);\n")
    crash = davit_env.edit_compose("crash.yml", lambda t: t.replace(
        "x-davit: {<<: *davit, port: 3006", "x-davit: {<<: *davit, run: node crash.js, port: 3006"))
    t0 = time.monotonic()
    r = d.cli("deploy", "-f", crash, check=False)
    took = time.monotonic() - t0
    assert r.returncode != 0, f"deploy of a crashing version exited 0:\n{r.out}\n{d.where()}"
    assert took < 10, f"a version that exits at once took {took:.1f}s to fail (not fast)\n{r.out}"
    assert "notify" in r.out and re.search(r"\b3\b", r.out), f"no service or exit status in:\n{r.out}"
    assert "crash-line-3 giving up" in r.out and "crash-line-2 missing config" in r.out, (
        f"the message lacks the replica's last log lines:\n{r.out}")

    # 2. a shell command line that exits 3
    exit3 = davit_env.edit_compose("exit3.yml", lambda t: t.replace(
        "x-davit: {<<: *davit, port: 3006",
        "x-davit: {<<: *davit, run: \"echo exit3-marker-line >&2; exit 3\", port: 3006"))
    t0 = time.monotonic()
    r = d.cli("deploy", "-f", exit3, check=False)
    took = time.monotonic() - t0
    assert r.returncode != 0, f"deploy of `exit 3` exited 0:\n{r.out}\n{d.where()}"
    assert took < 10, f"`exit 3` took {took:.1f}s to fail\n{r.out}"
    assert "notify" in r.out and "exit3-marker-line" in r.out and re.search(r"\b3\b", r.out), r.out

    d.wait_all_healthy(timeout=10)
    assert d.pids() == before, f"replicas changed: {before} -> {d.pids()}"
    assert d.releases()["current"] == current
    assert get_json(d.port, "notify.penpal.localhost")["version"] == "1"
    d.wait_no_strays(davit_env.app)

"""End-to-end: davit recovers from crashes — a replica killed with SIGKILL is
restarted while the other replica serves; a daemon killed with SIGKILL in the
middle of a deploy leaves no replica behind once started again, rolls the
interrupted deploy back and serves the old release."""

import os
import signal
import subprocess

import pytest

pytest.register_assert_rewrite("davitctl")  # before the import: its asserts report values too
from davitctl import (DAVIT_BIN, SERVICES, Load, alive, clean_env, cmdline,
                      describe_pids, get_json, get_json_direct, pgid_of, proc_stat, processes_in_dir, processes_in_groups,
                      wait_until)

pytest_plugins = ["davitctl"]


@pytest.mark.parametrize("target", ["ps-pid", "serving-process"])
def test_killed_replica_is_restarted_without_failed_requests(davit_env, target):
    """target: the pid `davit ps --json` shows for the replica, or the process
    that actually answers HTTP (the one the service reports as its pid)."""
    d = davit_env()
    d.deploy(davit_env.compose)
    d.wait_all_healthy(timeout=10)
    before = d.pids()
    auth = sorted(d.replicas("auth"), key=lambda r: r["index"])
    victim = auth[0]
    other = auth[1]
    victim_group = processes_in_groups([victim["pid"]])  # the replica's command and its children

    load = Load(d.port, "auth.penpal.localhost", threads=6).start()
    load.wait_requests(50)
    t_kill = load.now()
    if target == "ps-pid":
        os.kill(victim["pid"], signal.SIGKILL)
    else:
        server = get_json_direct(victim["port"])["pid"]
        assert pgid_of(server) == victim["pid"], f"serving process {server} is not in the replica's process group"
        os.kill(server, signal.SIGKILL)

    def restarted():
        for rep in d.replicas("auth"):
            if rep["index"] == victim["index"] and rep["pid"] != victim["pid"] and rep["state"] == "healthy":
                return rep
        return None

    try:
        rep = wait_until(restarted, 15, interval=0.05, what="the killed auth replica to be restarted and healthy")
    finally:
        load.keep(1.0)  # a bit more load with the restarted replica back
        load.stop()

    assert not load.failures(), (
        f"requests failed while a replica was killed (SIGKILL at t={t_kill:.3f}s of the load): "
        f"{load.summary()}\n{d.where()}")
    assert rep["restarts"] == 1, f"restarted replica: {rep}"
    assert alive(rep["pid"]), f"restarted replica's pid {rep['pid']} is not running"
    now = {r["index"]: r for r in d.replicas("auth")}
    assert now[other["index"]]["pid"] == other["pid"] and now[other["index"]]["restarts"] == 0, (
        f"the other auth replica was touched: {other} -> {now[other['index']]}")
    # nothing of the killed replica lives on (its children were stopped too)
    left = [p for p in victim_group if alive(p) and pgid_of(p) == victim["pid"]]
    assert not left, f"processes of the killed replica still alive: {describe_pids(left)}\n{d.where()}"
    d.wait_no_strays(davit_env.app)
    after = d.pids()
    for s in SERVICES:
        if s != "auth":
            assert after[s] == before[s], f"{s} changed: {before[s]} -> {after[s]}"
    # both replicas serve again
    pids_seen = {q[5] for q in load.all()[-200:]}
    assert len(pids_seen) >= 2 or len(load.all()) < 50, f"pids answering at the end: {pids_seen}"
    assert get_json(d.port, "auth.penpal.localhost")["service"] == "auth"


def test_daemon_killed_mid_deploy_recovers(davit_env):
    # auth gets a START_DELAY_MS knob (service.js delays its listen) so that a
    # deploy can be caught while it waits for the new replicas' health.
    slow = davit_env.edit_compose("slow.yml", lambda t: t.replace(
        'APP_VERSION: "${AUTH_VERSION:-1}"}',
        'APP_VERSION: "${AUTH_VERSION:-1}", START_DELAY_MS: "${AUTH_START_DELAY_MS:-0}"}'))
    d = davit_env()
    d.deploy(slow)
    d.wait_all_healthy(timeout=10)
    old_release = d.releases()["current"]
    old_pids = d.pids()

    dep_out = open(os.path.join(str(davit_env.tmp_path), "interrupted-deploy.out"), "w+")
    deploy = subprocess.Popen([DAVIT_BIN, "deploy", "-f", slow, "--state-dir", d.state_dir],
                              stdout=dep_out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                              env=clean_env(AUTH_VERSION="2", AUTH_START_DELAY_MS="60000"))
    davit_env.extra_pids.append(deploy.pid)

    def new_auth_started():
        a = d.app()
        new = [r for r in d.replicas("auth") if r.get("role") != "active" and r.get("pid")]
        return a.get("deploying") and len(new) == 2 and new

    new = wait_until(new_auth_started, 15, interval=0.05, what="the deploy to start the new auth replicas")
    assert deploy.poll() is None, "the deploy finished before the daemon could be killed"

    # Every replica process before the kill: the group leaders `ps` shows and their children.
    leaders = {p for ps in old_pids.values() for p in ps} | {r["pid"] for r in new}
    before_kill = processes_in_groups(leaders)
    assert len(before_kill) >= len(leaders), f"replica processes: {describe_pids(before_kill)}"
    dead_daemon = d.pid
    d.kill9()

    rc = deploy.wait(15)
    dep_out.seek(0)
    out = dep_out.read()
    assert rc != 0, f"the interrupted deploy's CLI exited 0: {out}"

    # Start the daemon again on the same state directory and proxy port.
    d.start()
    try:
        wait_until(lambda: not [p for p in before_kill if alive(p)], 10, interval=0.05)
    except AssertionError:
        raise AssertionError(f"processes of the killed daemon's replicas still alive after the restart: "
                             f"{describe_pids([p for p in before_kill if alive(p)])}\n{d.where()}")
    assert not processes_in_groups(leaders), describe_pids(processes_in_groups(leaders))

    d.wait_all_healthy(timeout=20)
    rels = d.releases()
    assert rels["current"] == old_release, f"after the restart the current release is {rels['current']}, " \
                                           f"not the old {old_release}: {rels}\n{d.where()}"
    log = d.log()
    assert "interrupted" in log and "rolled back" in log, f"the daemon does not report the interrupted deploy " \
                                                         f"as rolled back\n{d.where(tail=40)}"

    # Every service of the old release serves again, with new processes.
    for s in SERVICES:
        for rep in d.replicas(s):
            assert rep["release"] == old_release and rep["state"] == "healthy", f"{s}: {rep}"
            assert rep["pid"] not in leaders, f"{s}: pid {rep['pid']} is from before the kill"
        host = "penpal.localhost" if s == "frontend" else f"{s}.penpal.localhost"
        j = get_json(d.port, host)
        assert j["service"] == s and j["version"] == "1", f"{host}: {j}"

    # Every `node service.js` running in the app directory belongs to the new daemon.
    new_leaders = {p for ps in d.pids().values() for p in ps}
    for p in processes_in_dir(davit_env.app):
        st = proc_stat(p)
        assert st and st[1] != dead_daemon, f"process {p} ({cmdline(p)}) is a child of the killed daemon"
        assert st[2] in new_leaders, (f"process {p} ({cmdline(p)}, ppid {st[1]}, pgid {st[2]}) is not a replica "
                                      f"of the new daemon (replicas {sorted(new_leaders)})\n{d.where()}")

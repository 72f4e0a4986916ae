"""End-to-end: `davit up` on a fresh state directory starts a daemon in the
background, deploys and prints each URL; a second `davit up` reuses the
daemon. The daemon is stopped by the PID in DIR/run/davit.pid."""

import os
import re
import subprocess
import urllib.parse

import pytest

pytest.register_assert_rewrite("davitctl")  # before the import: its asserts report values too
from davitctl import (DAVIT_BIN, DOMAINS, SERVICES, Daemon, alive, clean_env, cmdline,
                      free_port, get_json, wait_until)

pytest_plugins = ["davitctl"]


def read_pid(path):
    with open(path) as f:
        return int(f.read().strip())


def test_up_starts_daemon_deploys_and_reuses_it(davit_env):
    port = free_port()
    d = Daemon(davit_env.tmp_path, port=port, name="up")  # not started by us: `davit up` starts it
    davit_env.daemons.append(d)
    d.log_path = os.path.join(d.state_dir, "run", "daemon.log")
    pid_file = os.path.join(d.state_dir, "run", "davit.pid")
    print(d.where(tail=0))

    def up():
        return subprocess.run([DAVIT_BIN, "up", "-f", "compose.yml", "--state-dir", d.state_dir,
                               "--http", f"127.0.0.1:{port}"], capture_output=True, text=True, timeout=120,
                              cwd=davit_env.app, env=clean_env())

    r = up()
    if os.path.exists(pid_file):
        d.external_pids.append(read_pid(pid_file))
    out = r.stdout + r.stderr
    assert r.returncode == 0, f"`davit up` exited {r.returncode}:\n{out}\n{d.where()}"
    assert os.path.exists(pid_file), f"no pid file {pid_file} after `davit up`\n{out}"
    pid = read_pid(pid_file)
    assert alive(pid) and "daemon" in cmdline(pid), f"pid {pid} of {pid_file}: {cmdline(pid)!r}"
    assert os.path.exists(d.log_path), f"`davit up` left no daemon log at {d.log_path}"
    assert os.path.exists(d.sock)

    # It printed a URL for every domain, on the proxy's port, and each one answers.
    urls = re.findall(r"https?://[^\s,]+", r.stdout)
    hosts = {}
    for u in urls:
        p = urllib.parse.urlsplit(u)
        assert p.port == port, f"URL {u} is not on the proxy's port {port}:\n{r.stdout}"
        hosts[p.hostname] = u
    for s in SERVICES:
        for h in DOMAINS[s]:
            assert h in hosts, f"`davit up` printed no URL for {h}:\n{r.stdout}"
            j = get_json(port, h)
            assert j["service"] == s, f"{hosts[h]}: {j}"
    d.ps()  # record the replicas for the teardown
    d.wait_all_healthy(timeout=10)
    rel = d.releases()
    pids = d.pids()

    # A second `up`: the same daemon, nothing redeployed.
    r2 = up()
    out2 = r2.stdout + r2.stderr
    assert r2.returncode == 0, f"second `davit up` exited {r2.returncode}:\n{out2}\n{d.where()}"
    assert read_pid(pid_file) == pid and alive(pid), f"the second `davit up` replaced the daemon {pid}:\n{out2}"
    daemons = [p for p in map(int, filter(str.isdigit, os.listdir("/proc")))
               if alive(p) and d.state_dir in cmdline(p) and " daemon" in cmdline(p)]
    assert daemons == [pid], f"daemons for {d.state_dir}: {[(p, cmdline(p)) for p in daemons]}"
    assert d.releases() == rel, "the second `davit up` of the same file made a release"
    assert d.pids() == pids, "the second `davit up` of the same file replaced replicas"
    assert "frontend" in r2.stdout and f":{port}/" in r2.stdout, f"no URLs the second time:\n{r2.stdout}"
    wait_until(lambda: alive(pid), 1)

"""Helpers for the end-to-end tests of davit's control plane (test_control_*.py).

- `Daemon`      a real `davit daemon` started by the test (its own PID), with a
                fresh state directory and a free proxy port; runs the CLI
                against it (`cli`, `ps`, `releases`, `deploy`), and at teardown
                stops it (SIGTERM, wait, SIGKILL) and kills, by PID, every
                replica process it recorded that is still alive.
- `davit_env`   fixture: `davit_env(args=[...])` starts a Daemon for the
                test; `davit_env.app` is a private copy of examples/penpal
                (tests may edit it). This module is a pytest plugin: a test
                module says `pytest_plugins = ["davitctl"]` to get the fixture
                and the report section below.
- A failed test's report gets a "davit daemon logs" section: where each
  daemon's log and state directory are, and the log's tail.
- `Load`        a bounded HTTP load loop (threads) through the proxy that
                records every request's outcome, version and pid.
- `http_get`    one request through the proxy with a Host header.
- /proc helpers: `alive`, `pgid_of`, `processes_in_groups`, `processes_in_dir`.

Every wait polls with a deadline (`wait_until`). Failure messages carry
`daemon.where()`: the paths of the daemon's log and state directory.
"""

import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

import pytest

from upstreams import free_port, wait_until  # noqa: F401  (re-exported)

DAVIT_BIN = os.environ.get("DAVIT_BIN", "/work/main/davit")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PENPAL = os.path.join(ROOT, "examples", "penpal")

# What the Penpal compose file declares (examples/penpal/compose.yml).
SERVICES = ["db", "auth", "ai", "payment", "monitoring", "notify", "frontend"]
DEPENDS = {
    "db": [],
    "auth": ["db"], "ai": ["db"], "payment": ["db"], "monitoring": ["db"], "notify": ["db"],
    "frontend": ["auth", "ai", "payment", "monitoring", "notify"],
}
REPLICAS = {s: (2 if s == "auth" else 1) for s in SERVICES}
DOMAINS = {s: [f"{s}.penpal.localhost"] for s in SERVICES}
DOMAINS["frontend"] = ["penpal.localhost", "www.penpal.localhost"]


def clean_env(**extra):
    """The environment for a CLI call: ours without anything that would change
    the Penpal interpolation or point at another daemon, plus `extra`."""
    env = {k: v for k, v in os.environ.items()
           if not (k.endswith("_VERSION") or k.startswith("DAVIT_") or k.endswith("_HEALTH_FAIL")
                   or k.endswith("_START_DELAY_MS"))}
    env.update({k: str(v) for k, v in extra.items()})
    return env


# ----------------------------------------------------------------- /proc


def proc_stat(pid):
    """(state, ppid, pgid) of a process, or None if it does not exist."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    rest = s[s.rindex(")") + 2:].split()
    return rest[0], int(rest[1]), int(rest[2])


def alive(pid):
    """True if the process exists and is not a zombie."""
    st = proc_stat(pid)
    return st is not None and st[0] not in ("Z", "X")


def pgid_of(pid):
    st = proc_stat(pid)
    return st[2] if st else None


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def all_pids():
    return [int(n) for n in os.listdir("/proc") if n.isdigit()]


def processes_in_groups(pgids):
    """Live (non-zombie) processes whose process group is one of `pgids`."""
    pgids = set(pgids)
    out = []
    for pid in all_pids():
        st = proc_stat(pid)
        if st and st[0] not in ("Z", "X") and st[2] in pgids:
            out.append(pid)
    return out


def processes_in_dir(directory):
    """Live processes whose working directory is `directory` or below it."""
    directory = os.path.realpath(directory)
    out = []
    for pid in all_pids():
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if (cwd == directory or cwd.startswith(directory + "/")) and alive(pid):
            out.append(pid)
    return out


def children_of(pid):
    return [p for p in all_pids() if (proc_stat(p) or (None, None))[1] == pid]


def describe_pids(pids):
    return ", ".join(f"{p} ({cmdline(p) or '?'}, ppid {(proc_stat(p) or (0, '?'))[1]})" for p in pids) or "none"


# ------------------------------------------------------------------ HTTP


def http_get(port, host, path="/", timeout=5.0, keepalive_conn=None):
    """GET through the proxy; returns (status, body bytes)."""
    conn = keepalive_conn or http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Host": host}
        if keepalive_conn is None:
            headers["Connection"] = "close"
        conn.request("GET", path, headers=headers)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        if keepalive_conn is None:
            conn.close()


def get_json(port, host, path="/"):
    status, body = http_get(port, host, path)
    assert status == 200, f"GET {path} Host {host} on :{port}: HTTP {status}: {body[:300]!r}"
    return json.loads(body)


class Load:
    """Threads sending GET / with a Host header through the proxy until
    stop(): half of them open a new connection per request, half keep one
    alive. Every request is recorded as (start, end, ok, why, version, pid)
    with times relative to the load's start (time.monotonic based)."""

    def __init__(self, port, host, threads=6, timeout=5.0, path="/"):
        self.port, self.host, self.timeout, self.path = port, host, timeout, path
        self.stop_ev = threading.Event()
        self.records = [[] for _ in range(threads)]
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]
        self.t0 = None

    def now(self):
        return time.monotonic() - self.t0

    def _run(self, i):
        rec = self.records[i]
        keepalive = i % 2 == 1
        conn = None
        while not self.stop_ev.is_set():
            start = self.now()
            version = pid = None
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
                headers = {"Host": self.host}
                if not keepalive:
                    headers["Connection"] = "close"
                conn.request("GET", self.path, headers=headers)
                r = conn.getresponse()
                body = r.read()
                ok = r.status == 200
                why = "ok" if ok else f"HTTP {r.status}: {body[:120]!r}"
                if ok:
                    try:
                        j = json.loads(body)
                        version, pid = j.get("version"), j.get("pid")
                    except ValueError:
                        ok, why = False, f"not JSON: {body[:120]!r}"
                if not keepalive or r.will_close:
                    conn.close()
                    conn = None
            except Exception as e:  # noqa: BLE001 - every failure counts
                ok, why = False, f"{type(e).__name__}: {e}"
                if conn is not None:
                    conn.close()
                    conn = None
            rec.append((start, self.now(), ok, why, version, pid))
        if conn is not None:
            conn.close()

    def start(self):
        self.t0 = time.monotonic()
        for t in self.threads:
            t.start()
        return self

    def wait_requests(self, n, timeout=10.0):
        wait_until(lambda: len(self.all()) >= n, timeout, what=f"{n} requests of the load loop")

    def keep(self, seconds):
        """Lets the load run `seconds` longer (a bounded duration, not a wait for an event)."""
        self.stop_ev.wait(seconds)

    def stop(self):
        self.stop_ev.set()
        for t in self.threads:
            t.join(self.timeout + 2)
        return self

    def all(self):
        return sorted((r for rec in self.records for r in list(rec)), key=lambda r: r[0])

    def failures(self):
        return [r for r in self.all() if not r[2]]

    def summary(self):
        reqs = self.all()
        fails = [r for r in reqs if not r[2]]
        kinds = {}
        for r in fails:
            kinds[r[3]] = kinds.get(r[3], 0) + 1
        versions = {}
        for r in reqs:
            if r[2]:
                versions[r[4]] = versions.get(r[4], 0) + 1
        return (f"{len(fails)} of {len(reqs)} requests to {self.host} failed; failure kinds {kinds}; "
                f"versions seen {versions}; first failures {[(round(r[0], 3), r[3]) for r in fails[:5]]}")


# ---------------------------------------------------------------- daemon


class Daemon:
    """A `davit daemon` started by the test, with its own state directory."""

    def __init__(self, workdir, state_dir=None, port=None, args=(), name="daemon"):
        self.workdir = str(workdir)
        # The control socket path must stay short (sun_path is 108 bytes), so
        # the state directory lives in /tmp, not in pytest's long tmp_path.
        self.state_dir = state_dir or tempfile.mkdtemp(prefix="davit-e2e-", dir="/tmp")
        self.port = port or free_port()
        self.args = [str(a) for a in args]
        self.name = name
        self.log_path = os.path.join(self.workdir, f"{name}.log")
        self.proc = None
        self.generations = []  # every Popen of this daemon (restarts after kill -9)
        self.replica_pids = set()  # every replica pid `ps` ever showed (process group leaders)
        self.external_pids = []  # daemons started by `davit up` (not our children): stopped by PID

    # -- life cycle

    def cmd(self):
        return [DAVIT_BIN, "daemon", "--state-dir", self.state_dir, "--http", f"127.0.0.1:{self.port}",
                "--workers", "2"] + self.args

    def start(self, wait=True):
        if not os.path.exists(DAVIT_BIN):
            pytest.fail(f"davit binary not found at {DAVIT_BIN}: build it with `make` in /work/main (or set DAVIT_BIN)")
        with open(self.log_path, "ab") as log:
            log.write(f"==== {' '.join(self.cmd())}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(self.cmd(), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         cwd=self.workdir, env=clean_env())
        self.generations.append(self.proc)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout=20.0):
        deadline = time.monotonic() + timeout
        while True:
            rc = self.proc.poll()
            if rc is not None:
                pytest.fail(f"davit daemon exited with status {rc} before it was ready\n{self.where()}")
            if os.path.exists(self.sock):
                r = self.cli("ps", "--json", check=False, timeout=5)
                if r.returncode == 0:
                    return self
            if time.monotonic() >= deadline:
                pytest.fail(f"davit daemon not ready within {timeout}s\n{self.where()}")
            time.sleep(0.05)

    @property
    def sock(self):
        return os.path.join(self.state_dir, "run", "davit.sock")

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill9(self):
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def restart(self, timeout=20.0):
        """Stops this daemon gracefully (SIGTERM; it must exit 0) and starts it again."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"davit daemon did not exit within {timeout}s of SIGTERM\n{self.where()}")
        assert rc == 0, f"davit daemon exited {rc} after SIGTERM\n{self.where()}"
        return self.start()

    def stop(self, timeout=20.0):
        """SIGTERM, wait, SIGKILL; returns a problem description or None."""
        problem = None
        for p in self.generations:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    rc = p.wait(timeout)
                    if rc != 0 and p is self.proc:
                        problem = f"davit daemon (pid {p.pid}) exited with status {rc} after SIGTERM (expected 0)"
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(5)
                    problem = f"davit daemon (pid {p.pid}) did not exit within {timeout}s of SIGTERM (killed)"
        for pid in self.external_pids:
            if alive(pid):
                os.kill(pid, signal.SIGTERM)
                try:
                    wait_until(lambda: not alive(pid), timeout, interval=0.05)
                except AssertionError:
                    os.kill(pid, signal.SIGKILL)
                    problem = f"davit daemon (pid {pid}) did not exit within {timeout}s of SIGTERM (killed)"
        return problem

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def where(self, tail=25):
        lines = self.log().splitlines()[-tail:]
        return (f"daemon log: {self.log_path}\nstate dir: {self.state_dir} (replica logs in its logs/)\n"
                f"daemon log tail:\n" + "".join(f"    {l}\n" for l in lines))

    # -- the CLI

    def cli(self, *args, env=None, check=True, timeout=120, cwd=None, state=True):
        cmd = [DAVIT_BIN] + [str(a) for a in args]
        if state:
            cmd += ["--state-dir", self.state_dir]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=clean_env(**(env or {})),
                           cwd=cwd or self.workdir)
        r.out = r.stdout + r.stderr
        if check:
            assert r.returncode == 0, (f"`{' '.join(cmd)}` exited {r.returncode}\nstdout: {r.stdout}\n"
                                       f"stderr: {r.stderr}\n{port_clash_note(r.out)}{self.where()}")
        return r

    def deploy(self, compose, env=None, check=True, json_out=False):
        args = ["deploy", "-f", compose] + (["--json"] if json_out else [])
        r = self.cli(*args, env=env, check=check)
        if json_out:
            try:
                r.json = json.loads(r.stdout)
            except ValueError:
                raise AssertionError(f"`davit deploy --json` printed no JSON: {r.out!r}\n{self.where()}")
        self.ps()  # records the replica pids for the teardown
        return r

    def ps(self):
        r = self.cli("ps", "--json")
        try:
            j = json.loads(r.stdout)
        except ValueError:
            raise AssertionError(f"`davit ps --json` printed no JSON: {r.stdout!r}\n{self.where()}")
        for a in j.get("apps", []):
            for s in a.get("services", []):
                for rep in s.get("replicas", []):
                    if rep.get("pid"):
                        self.replica_pids.add(rep["pid"])
        return j

    def app(self, name="penpal"):
        for a in self.ps()["apps"]:
            if a["name"] == name:
                return a
        raise AssertionError(f"app {name} not in `davit ps --json`\n{self.where()}")

    def services(self, name="penpal"):
        """{service: service dict} of `davit ps --json`."""
        return {s["name"]: s for s in self.app(name)["services"]}

    def replicas(self, service, app="penpal"):
        return self.services(app)[service]["replicas"]

    def pids(self, app="penpal", role="active"):
        """{service: sorted pids of its replicas with `role`}."""
        return {n: sorted(r["pid"] for r in s["replicas"] if r.get("role") == role and r.get("pid"))
                for n, s in self.services(app).items()}

    def releases(self):
        r = self.cli("releases", "--json")
        try:
            return json.loads(r.stdout)
        except ValueError:
            raise AssertionError(f"`davit releases --json` printed no JSON: {r.stdout!r}\n{self.where()}")

    def wait_all_healthy(self, timeout=30.0, app="penpal", expect=None):
        """Waits until every service has its replicas (expect: {service: n}) all
        active and healthy; returns the services dict."""
        expect = expect or REPLICAS
        last = {}

        def ok():
            svcs = self.services(app)
            last["svcs"] = svcs
            for s, n in expect.items():
                reps = [r for r in svcs.get(s, {}).get("replicas", []) if r.get("role") == "active"]
                if len(reps) != n or any(r["state"] != "healthy" for r in reps):
                    return False
                if len(svcs[s]["replicas"]) != n:  # nothing new or retired left over
                    return False
            return svcs

        try:
            return wait_until(ok, timeout, interval=0.05, what="every replica healthy")
        except AssertionError as e:
            raise AssertionError(f"{e}\nlast ps: {json.dumps(last.get('svcs'), indent=1)[:3000]}\n{self.where()}")

    def strays(self, app_dir):
        """Live processes running in app_dir that are not part of a replica
        `davit ps` shows (leftovers of failed, replaced or stopped replicas)."""
        leaders = {r["pid"] for a in self.ps()["apps"] for s in a["services"] for r in s["replicas"]
                   if r.get("pid")}
        return [p for p in processes_in_dir(app_dir) if pgid_of(p) not in leaders]

    def wait_no_strays(self, app_dir, timeout=15.0):
        try:
            wait_until(lambda: not self.strays(app_dir), timeout, interval=0.05)
        except AssertionError:
            raise AssertionError(f"processes of no current replica still run in {app_dir} after {timeout}s: "
                                 f"{describe_pids(self.strays(app_dir))}\n{self.where()}")

    # -- teardown

    def leftovers(self, app_dir=None):
        """Live processes of this daemon's replicas: in a process group of a
        recorded replica, or running in the app directory."""
        pids = set(processes_in_groups(self.replica_pids))
        if app_dir:
            pids |= set(processes_in_dir(app_dir))
        pids -= {p.pid for p in self.generations} | set(self.external_pids)
        return sorted(pids)

    def cleanup(self, app_dir=None, failed=False):
        problems = []
        prob = self.stop()
        if prob:
            problems.append(prob)
        # replicas get SIGTERM from the daemon; give them a moment to exit
        left = []
        try:
            wait_until(lambda: not self.leftovers(app_dir), 8, interval=0.05)
        except AssertionError:
            left = self.leftovers(app_dir)
        if left:
            problems.append(f"replica processes still alive after the daemon stopped: {describe_pids(left)} (killed)")
            for p in left:
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if not failed and not problems:
            shutil.rmtree(self.state_dir, ignore_errors=True)
        return problems


def port_clash_note(text):
    """When a replica failed with EADDRINUSE: who holds the port now. (Every
    davit daemon on the host allocates replica ports from 20000 up; another
    daemon running at the same time can take a port between the allocation
    and the replica's listen.)"""
    if "EADDRINUSE" not in text:
        return ""
    ports = sorted(set(re.findall(r"EADDRINUSE[^\n]*?:(\d+)", text) + re.findall(r"port: (\d+)", text)))
    notes = []
    for port in ports:
        try:
            out = subprocess.run(["ss", "-Htlnp", f"sport = :{port}"], capture_output=True, text=True,
                                 timeout=5).stdout.strip()
        except (OSError, subprocess.SubprocessError) as e:
            out = f"(ss failed: {e})"
        owners = []
        for pid in map(int, re.findall(r"pid=(\d+)", out)):
            try:
                cwd = os.readlink(f"/proc/{pid}/cwd")
            except OSError:
                cwd = "?"
            owners.append(f"pid {pid} ({cmdline(pid)}, cwd {cwd}, parent {(proc_stat(pid) or (0, '?'))[1]})")
        notes.append(f"port {port} is held now by: {'; '.join(owners) or out or 'nobody'}")
    return ("NOTE: a replica could not listen (EADDRINUSE). " + " | ".join(notes) +
            "\n(another davit daemon on this host allocates ports from 20000 up too)\n")


def copy_penpal(dest):
    dest = str(dest)
    shutil.copytree(PENPAL, dest)
    return dest


class DavitEnv:
    def __init__(self, tmp_path):
        self.tmp_path = tmp_path
        self.app = copy_penpal(tmp_path / "penpal")
        self.compose = os.path.join(self.app, "compose.yml")
        self.daemons = []
        self.extra_pids = []  # other processes a test started (by PID)

    def __call__(self, args=(), start=True, **kw):
        d = Daemon(self.tmp_path, args=args, name=f"daemon{len(self.daemons) + 1}", **kw)
        self.daemons.append(d)
        if start:
            d.start()
        print(f"davit daemon #{len(self.daemons)}: {d.where(tail=0)}")
        return d

    def write(self, name, text):
        path = os.path.join(self.app, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def edit_compose(self, new_name, fn):
        with open(self.compose) as f:
            text = f.read()
        new = fn(text)
        assert new != text, "the compose edit changed nothing"
        return self.write(new_name, new)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    daemons = getattr(item, "_davit_daemons", None)
    if rep.failed and daemons:
        rep.sections.append(("davit daemon logs", "\n".join(d.where(tail=40) for d in daemons)))


@pytest.fixture
def davit_env(tmp_path, request):
    env = DavitEnv(tmp_path)
    request.node._davit_daemons = env.daemons
    failed_before = request.session.testsfailed
    yield env
    failed = request.session.testsfailed > failed_before
    problems = []
    for p in env.extra_pids:
        if alive(p):
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
    for d in env.daemons:
        for prob in d.cleanup(env.app, failed):
            problems.append(f"{prob}\n{d.where()}")
    if problems and not failed:
        pytest.fail("\n".join(problems), pytrace=False)


def listening_times(daemon, service_lines):
    """{service: [ms timestamps of its 'listening on' log lines]} from `davit logs` text."""
    out = {}
    for line in service_lines.splitlines():
        m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.(\d{3})Z (\S+)#(\d+) (out|err) \| (.*)$", line)
        if m and "listening on" in m.group(6):
            t = time.mktime(time.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S")) * 1000 + int(m.group(2))
            out.setdefault(m.group(3), []).append(t)
    return out


def wait_gone(pids, timeout, what="processes to exit"):
    try:
        wait_until(lambda: not [p for p in pids if alive(p)], timeout, interval=0.05)
    except AssertionError:
        raise AssertionError(f"timed out after {timeout}s waiting for {what}: still alive {describe_pids([p for p in pids if alive(p)])}")


def port_free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def get_json_direct(port, path="/"):
    """GET straight from a replica's own port (bypassing the proxy)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        body = r.read()
        assert r.status == 200, f"GET {path} on replica port {port}: HTTP {r.status}: {body[:200]!r}"
        return json.loads(body)
    finally:
        conn.close()

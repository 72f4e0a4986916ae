"""Fixtures for the end-to-end tests of `davit proxy`.

- `upstream(name)`        a real threaded upstream server (see upstreams.py),
                          stopped at teardown
- `start_proxy(...)`      starts `$DAVIT_BIN proxy` on a free port with
                          `--workers 2 --access-log <tmp file>` (unless told
                          otherwise), waits until it accepts, and stops it by
                          PID at teardown (SIGTERM, wait, SIGKILL)
- `routes_file`           writes a routes file in the test's tmp dir

A failing test's report names every proxy it started, with the paths of its
stderr and access log and the tail of its stderr. A proxy that died during a
test on its own, crashed on a signal, or did not exit 0 within 10 s of
SIGTERM at teardown makes the test error.
"""

import os
import signal
import socket
import subprocess
import time

import pytest

import rawhttp
import upstreams
from upstreams import free_port

DAVIT_BIN = os.environ.get("DAVIT_BIN", "/work/main/davit")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow: big (1 GiB) transfers; run by default, deselect with -m 'not slow'"
    )


# ------------------------------------------------------------------ proxy


class Proxy:
    def __init__(self, tmp_path, idx, routes, args, workers, access_log, listen_port):
        self.tmp_path = tmp_path
        self.idx = idx
        self.port = listen_port or free_port()
        self.addr = f"127.0.0.1:{self.port}"
        self.stderr_path = tmp_path / f"proxy{idx}.stderr"
        self.stdout_path = tmp_path / f"proxy{idx}.stdout"
        self.access_log = None
        cmd = [DAVIT_BIN, "proxy", "--listen", self.addr]
        if workers is not None:
            cmd += ["--workers", str(workers)]
        if access_log is True:
            self.access_log = tmp_path / f"proxy{idx}.access.log"
            cmd += ["--access-log", str(self.access_log)]
        elif access_log is not None:
            cmd += ["--access-log", str(access_log)]
        for r in routes:
            cmd += ["--route", r]
        cmd += [str(a) for a in args]
        self.cmd = cmd
        self.proc = None
        self.signalled = False
        self.killed = False
        self.allow_nonzero_exit = False  # a test that checks the exit itself

    @property
    def pid(self):
        return self.proc.pid

    def start(self):
        if not os.path.exists(DAVIT_BIN):
            pytest.fail(f"davit binary not found at {DAVIT_BIN}: build it with `make` in /work/main (or set DAVIT_BIN)")
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                         cwd=self.tmp_path)
        return self

    def wait_ready(self, timeout=10.0):
        deadline = time.monotonic() + timeout
        while True:
            rc = self.proc.poll()
            if rc is not None:
                pytest.fail(
                    f"proxy exited with status {rc} before accepting connections\n"
                    f"command: {' '.join(self.cmd)}\n{self.describe()}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                pass
            if time.monotonic() >= deadline:
                pytest.fail(f"proxy did not accept connections on {self.addr} within {timeout}s\n{self.describe()}")
            time.sleep(0.02)

    def stderr(self):
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def access_lines(self):
        try:
            text = self.access_log.read_text(errors="replace")
        except FileNotFoundError:
            return []
        return [l for l in text.split("\n") if l.strip()]

    def describe(self, tail=30):
        lines = self.stderr().splitlines()[-tail:]
        s = f"proxy #{self.idx} pid {self.proc.pid if self.proc else '-'} on {self.addr}\n"
        s += f"  command:    {' '.join(self.cmd)}\n"
        s += f"  stderr:     {self.stderr_path}\n"
        s += f"  stdout:     {self.stdout_path}\n"
        if self.access_log:
            s += f"  access log: {self.access_log}\n"
        s += "  stderr tail:\n" + "".join(f"    {l}\n" for l in lines)
        return s

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def send_signal(self, sig):
        assert self.alive(), f"proxy is not running\n{self.describe()}"
        if sig in (signal.SIGTERM, signal.SIGINT):
            self.signalled = True
        os.kill(self.proc.pid, sig)

    def sighup(self):
        self.send_signal(signal.SIGHUP)

    def rss_kb(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def wait_exit(self, timeout):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout=10.0):
        """SIGTERM, wait up to `timeout`, then SIGKILL. Returns a problem
        description, or None if the proxy exited cleanly."""
        if self.proc is None:
            return None
        problem = None
        rc = self.proc.poll()
        if rc is not None and not self.signalled:
            problem = f"proxy died during the test (exit status {rc})"
        elif rc is None:
            self.signalled = True
            os.kill(self.proc.pid, signal.SIGTERM)
            rc = self.wait_exit(timeout)
            if rc is None:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
                self.killed = True
                return f"proxy did not exit within {timeout}s of SIGTERM (killed)"
        if rc is not None and rc != 0 and problem is None and not (self.allow_nonzero_exit and rc > 0):
            problem = f"proxy exited with status {rc} after SIGTERM (expected 0)"
        return problem


@pytest.fixture
def start_proxy(tmp_path, request):
    """start_proxy(routes=[...], args=[...], workers=2, access_log=True,
    wait=True, port=None) -> Proxy. routes are --route SPECs; args are extra
    command-line arguments (e.g. ["--routes", path, "--read-timeout", "1s"])."""
    proxies = []
    request.node._davit_proxies = proxies

    def start(routes=(), args=(), workers=2, access_log=True, wait=True, port=None):
        p = Proxy(tmp_path, len(proxies) + 1, list(routes), list(args), workers, access_log, port)
        proxies.append(p)
        p.start()
        if wait:
            p.wait_ready()
        return p

    yield start
    rawhttp.close_all()
    problems = []
    for p in proxies:
        prob = p.stop()
        if prob:
            problems.append(f"{prob}\n{p.describe()}")
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    proxies = getattr(item, "_davit_proxies", None)
    if rep.failed and proxies:
        rep.sections.append(("davit proxy logs", "\n".join(p.describe() for p in proxies)))


# --------------------------------------------------------------- upstreams


@pytest.fixture
def upstream():
    """upstream(name, host='127.0.0.1', port=0) -> upstreams.Upstream."""
    servers = []

    def make(name="up", host="127.0.0.1", port=0):
        s = upstreams.Upstream(name, host=host, port=port)
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.stop()


@pytest.fixture
def davit_bin():
    """Path of the davit binary under test (env DAVIT_BIN)."""
    if not os.path.exists(DAVIT_BIN):
        pytest.fail(f"davit binary not found at {DAVIT_BIN}: build it with `make` in /work/main (or set DAVIT_BIN)")
    return DAVIT_BIN


@pytest.fixture
def routes_file(tmp_path):
    path = tmp_path / "routes.txt"

    def write(text):
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)  # atomic: a reload never sees half a file
        return path

    return write

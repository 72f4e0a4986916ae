"""Docker for the end-to-end tests of davit's container runtime (test_docker_*.py).

A pytest plugin (`pytest_plugins = ["davitctl", "dockerenv"]`):

- `docker_engine` (session): a Docker engine to talk to. If the one at
  $DOCKER_HOST or /var/run/docker.sock answers, it is used; otherwise the
  fixture starts `dockerd` itself (its own socket, pidfile, data and exec
  roots and log in a temp dir), waits for its socket, sets DOCKER_HOST for
  the tests and the daemons they start, and at the end stops it by PID.
  dockerd missing: the test fails saying how to install it (never skips).
- `busybox_image` (session): "davit-test/busybox:1", a rootfs made from
  Debian's busybox-static binary and `docker import`ed: no Docker Hub.
- `docker_app` (function): a unique app name; at teardown everything Docker
  holds for it (containers, networks, volumes, images davit/<app>-*) goes.
- `docker(...)`: runs the docker CLI against the engine in use.

Docker puts containers in network namespaces of its own (172.x bridges);
the load loops of these tests go through davit's proxy on 127.0.0.1 with
`--docker-upstream loopback`, so they only touch loopback.
"""

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid

import pytest

BUSYBOX_IMAGE = "davit-test/busybox:1"
HERE = os.path.dirname(os.path.abspath(__file__))


def _socket_of(host):
    if host.startswith("unix://"):
        return host[len("unix://"):]
    return None


def engine_answers(host, timeout=2.0):
    """True if GET /_ping on the engine at `host` (unix:// only) says OK."""
    path = _socket_of(host)
    if not path or not os.path.exists(path):
        return False
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        s.close()
        return data.startswith(b"HTTP/1.") and b" 200 " in data.split(b"\r\n", 1)[0] + b" "
    except OSError:
        return False


def docker(*args, check=True, timeout=120, input=None):
    """Runs the docker CLI (DOCKER_HOST as set by docker_engine)."""
    r = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, input=input)
    if check and r.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed ({r.returncode}): {r.stderr.strip()}")
    return r


def engine_get(path):
    """GET on the Engine API (unix socket); returns the decoded JSON."""
    sock = _socket_of(os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock"))

    class Conn(http.client.HTTPConnection):
        def connect(self):
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(30)
            self.sock.connect(sock)

    c = Conn("docker")
    c.request("GET", path)
    r = c.getresponse()
    body = r.read()
    c.close()
    if r.status != 200:
        raise AssertionError(f"Engine API GET {path}: HTTP {r.status}: {body[:200]!r}")
    return json.loads(body)


@pytest.fixture(scope="session")
def docker_engine():
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if engine_answers(host):
        yield host
        return
    dockerd = shutil.which("dockerd") or ("/usr/sbin/dockerd" if os.path.exists("/usr/sbin/dockerd") else None)
    if not dockerd or not shutil.which("docker"):
        pytest.fail("no Docker engine answers at " + host + " and dockerd/docker are not installed: "
                    "run scripts/install-deps.sh (Debian packages docker.io and iptables)")
    tmp = tempfile.mkdtemp(prefix="davit-dockerd-", dir="/tmp")
    sock = os.path.join(tmp, "docker.sock")
    log_path = os.path.join(tmp, "dockerd.log")
    log = open(log_path, "wb")
    proc = subprocess.Popen([dockerd, "--host", f"unix://{sock}", "--pidfile", os.path.join(tmp, "docker.pid"),
                             "--data-root", os.path.join(tmp, "data"), "--exec-root", os.path.join(tmp, "exec")],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    host = f"unix://{sock}"
    deadline = time.monotonic() + 60
    while not engine_answers(host):
        if proc.poll() is not None or time.monotonic() > deadline:
            log.close()
            with open(log_path, "rb") as f:
                tail = f.read()[-3000:].decode(errors="replace")
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
            pytest.fail(f"dockerd did not come up (exit status {proc.poll()}); its log {log_path}:\n{tail}")
        time.sleep(0.1)
    old = os.environ.get("DOCKER_HOST")
    os.environ["DOCKER_HOST"] = host
    try:
        yield host
    finally:
        if old is None:
            os.environ.pop("DOCKER_HOST", None)
        else:
            os.environ["DOCKER_HOST"] = old
        # Our containers first (a dockerd stopping with running containers takes long).
        ids = subprocess.run(["docker", "-H", host, "ps", "-aq"], capture_output=True, text=True).stdout.split()
        if ids:
            subprocess.run(["docker", "-H", host, "rm", "-f", *ids], capture_output=True)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)


def make_busybox_rootfs(root):
    """A minimal rootfs: Debian's static busybox and its applet links."""
    busybox = "/bin/busybox"
    if not os.path.exists(busybox):
        pytest.fail("/bin/busybox is missing: run scripts/install-deps.sh (Debian package busybox-static)")
    for d in ("bin", "etc", "tmp", "www", "data"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    shutil.copy(busybox, os.path.join(root, "bin", "busybox"))
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True).stdout.split()
    for a in applets:
        if a != "busybox":
            link = os.path.join(root, "bin", a)
            if not os.path.lexists(link):
                os.symlink("busybox", link)
    with open(os.path.join(root, "etc", "passwd"), "w") as f:
        f.write("root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n")
    with open(os.path.join(root, "etc", "group"), "w") as f:
        f.write("root:x:0:\nnogroup:x:65534:\n")
    os.chmod(os.path.join(root, "tmp"), 0o1777)


@pytest.fixture(scope="session")
def busybox_image(docker_engine):
    if docker("image", "inspect", BUSYBOX_IMAGE, check=False).returncode == 0:
        return BUSYBOX_IMAGE
    tmp = tempfile.mkdtemp(prefix="davit-rootfs-")
    try:
        make_busybox_rootfs(tmp)
        tar = subprocess.Popen(["tar", "-C", tmp, "-c", "."], stdout=subprocess.PIPE)
        r = subprocess.run(["docker", "import", "-", BUSYBOX_IMAGE], stdin=tar.stdout, capture_output=True, text=True)
        tar.wait()
        if r.returncode != 0:
            pytest.fail(f"docker import of the busybox rootfs failed: {r.stderr}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return BUSYBOX_IMAGE


def cleanup_app(app):
    """Removes what Docker holds for davit app `app`."""
    label = f"label=davit.app={app}"
    ids = docker("ps", "-aq", "--filter", label, check=False).stdout.split()
    if ids:
        docker("rm", "-f", *ids, check=False)
    for kind in ("network", "volume"):
        names = docker(kind, "ls", "-q", "--filter", label, check=False).stdout.split()
        if names:
            docker(kind, "rm", *names, check=False)
    imgs = docker("images", "--format", "{{.Repository}}:{{.Tag}}", f"davit/{app}-*", check=False).stdout.split()
    if imgs:
        docker("rmi", "-f", *imgs, check=False)


@pytest.fixture
def docker_app(docker_engine, busybox_image):
    app = "t" + uuid.uuid4().hex[:10]
    yield app
    cleanup_app(app)


def containers(app, service=None):
    """Running containers of an app: [{id, service, release, replica, ...}] from the Engine API."""
    filters = json.dumps({"label": [f"davit.app={app}"]})
    out = []
    for c in engine_get("/containers/json?filters=" + urlquote(filters)):
        labels = c.get("Labels", {})
        if service and labels.get("davit.service") != service:
            continue
        out.append({"id": c["Id"], "service": labels.get("davit.service"), "release": labels.get("davit.release"),
                    "replica": labels.get("davit.replica"), "image": c.get("Image"), "ports": c.get("Ports", []),
                    "names": c.get("Names", []), "networks": list(c.get("NetworkSettings", {}).get("Networks", {}))})
    return out


def urlquote(s):
    from urllib.parse import quote
    return quote(s, safe="")

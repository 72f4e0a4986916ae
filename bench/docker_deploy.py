#!/usr/bin/env python3
"""Docker deploy benchmark (not a test): the time to deploy a one-service
change of a small container stack, davit versus `docker-compose up -d`
(Debian's docker-compose), same stack, same engine, same run.

Stack: web, api, db (busybox httpd stand-ins, image built locally with
`docker import` from busybox-static). Each round changes api's environment.
  - davit: `davit deploy` wall time (it returns once the new api replica is
    healthy and traffic is switched, the old one drained), daemon started with
    --docker-upstream loopback.
  - docker-compose: `docker-compose up -d` wall time, plus the time until the
    recreated api answers on its published port (compose returns when the
    container is started, not when it serves): both numbers are reported.
Everything listens on 127.0.0.1; every process started is stopped by PID,
every container, network and image removed at the end.
usage: /usr/bin/python3 bench/docker_deploy.py [--rounds N] [--append bench/RESULTS.md]"""
import argparse, os, shutil, signal, socket, statistics, subprocess, sys, tempfile, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
DAVIT = os.environ.get("DAVIT_BIN", os.path.join(ROOT, "davit"))
IMAGE = "davit-test/busybox:1"

ap = argparse.ArgumentParser()
ap.add_argument("--rounds", type=int, default=5)
ap.add_argument("--append", default=None, help="append the results to this markdown file")
a = ap.parse_args()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def sh(*cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def ensure_image():
    if sh("docker", "image", "inspect", IMAGE).returncode == 0:
        return
    from dockerenv import make_busybox_rootfs  # the tests' rootfs builder
    tmp = tempfile.mkdtemp()
    make_busybox_rootfs(tmp)
    tar = subprocess.Popen(["tar", "-C", tmp, "-c", "."], stdout=subprocess.PIPE)
    subprocess.run(["docker", "import", "-", IMAGE], stdin=tar.stdout, check=True, capture_output=True)
    tar.wait()
    shutil.rmtree(tmp)


SERVE = '["sh", "-c", "echo $$V > /www/index.html; exec httpd -f -p {port} -h /www"]'


def stack(name, api_version, api_host_port=None):
    ports = f'\n    ports: ["127.0.0.1:{api_host_port}:8000"]' if api_host_port else ""
    return f"""
name: {name}
services:
  web:
    image: {IMAGE}
    command: {SERVE.format(port=8080)}
    environment: {{V: web}}
    x-davit: {{port: 8080, domains: [web.{name}.test]}}
  api:
    image: {IMAGE}
    command: {SERVE.format(port=8000)}
    environment: {{V: "{api_version}"}}{ports}
    x-davit: {{port: 8000, domains: [api.{name}.test]}}
  db:
    image: {IMAGE}
    command: {SERVE.format(port=5432)}
    environment: {{V: db}}
    expose: ["5432"]
"""


def compose_text(text):
    """The same stack for docker-compose 1.29: no top-level name (the project is
    given with -p), no x-davit blocks (davit's routing), file format 3.7, and
    init: true like davit's containers (else compose's stop waits its 10 s
    timeout, since httpd as PID 1 ignores SIGTERM)."""
    out = ["version: \"3.7\""]
    for line in text.splitlines():
        if line.startswith("name:") or "x-davit" in line:
            continue
        out.append(line)
        if line.startswith("    image:"):
            out.append("    init: true")  # as davit's containers: a stop does not wait 10 s for PID 1
    return "\n".join(out) + "\n"


def get(url, host=None, timeout=2):
    req = urllib.request.Request(url, headers={"Host": host} if host else {})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.read().decode().strip()


def wait_for(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if pred():
                return
        except Exception:  # noqa: BLE001 - not yet
            pass
        time.sleep(0.01)
    raise SystemExit(f"timed out waiting for {what}")


def bench_davit(rounds):
    work = tempfile.mkdtemp(prefix="davit-bench-dk-", dir="/tmp")
    name = "bdavit" + str(os.getpid())
    port = free_port()
    log = open(os.path.join(work, "daemon.log"), "wb")
    d = subprocess.Popen([DAVIT, "daemon", "--state-dir", os.path.join(work, "state"), "--http", f"127.0.0.1:{port}",
                          "--workers", "1", "--docker-upstream", "loopback"], stdout=log, stderr=log)
    state = ["--state-dir", os.path.join(work, "state")]
    times = []
    try:
        wait_for(lambda: sh(DAVIT, "ps", *state).returncode == 0, 20, "the davit daemon")
        path = os.path.join(work, "compose.yml")
        with open(path, "w") as f:
            f.write(stack(name, "v0"))
        r = sh(DAVIT, "deploy", "-f", path, *state)
        assert r.returncode == 0, r.stdout + r.stderr
        for i in range(1, rounds + 1):
            with open(path, "w") as f:
                f.write(stack(name, f"v{i}"))
            t0 = time.monotonic()
            r = sh(DAVIT, "deploy", "-f", path, *state)
            t = time.monotonic() - t0
            assert r.returncode == 0, r.stdout + r.stderr
            assert get(f"http://127.0.0.1:{port}/", f"api.{name}.test") == f"v{i}"
            times.append(t)
    finally:
        d.send_signal(signal.SIGTERM)
        try:
            d.wait(60)
        except subprocess.TimeoutExpired:
            d.kill()
        log.close()
        cleanup(name)
        shutil.rmtree(work, ignore_errors=True)
    return times


def bench_compose(rounds):
    work = tempfile.mkdtemp(prefix="davit-bench-dc-", dir="/tmp")
    name = "bcompose" + str(os.getpid())
    port = free_port()
    path = os.path.join(work, "docker-compose.yml")
    up, ready = [], []
    try:
        with open(path, "w") as f:
            f.write(compose_text(stack(name, "v0", port)))
        r = sh("docker-compose", "-f", path, "-p", name, "up", "-d", cwd=work)
        assert r.returncode == 0, r.stderr
        wait_for(lambda: get(f"http://127.0.0.1:{port}/") == "v0", 30, "compose's api")
        for i in range(1, rounds + 1):
            with open(path, "w") as f:
                f.write(compose_text(stack(name, f"v{i}", port)))
            t0 = time.monotonic()
            r = sh("docker-compose", "-f", path, "-p", name, "up", "-d", cwd=work)
            t1 = time.monotonic()
            assert r.returncode == 0, r.stderr
            wait_for(lambda: get(f"http://127.0.0.1:{port}/") == f"v{i}", 30, "compose's new api")
            t2 = time.monotonic()
            up.append(t1 - t0)
            ready.append(t2 - t0)
    finally:
        sh("docker-compose", "-f", path, "-p", name, "down", "-v", cwd=work)
        shutil.rmtree(work, ignore_errors=True)
    return up, ready


def cleanup(app):
    ids = sh("docker", "ps", "-aq", "--filter", f"label=davit.app={app}").stdout.split()
    if ids:
        sh("docker", "rm", "-f", *ids)
    for kind in ("network", "volume"):
        names = sh("docker", kind, "ls", "-q", "--filter", f"label=davit.app={app}").stdout.split()
        if names:
            sh("docker", kind, "rm", *names)
    imgs = sh("docker", "images", "--format", "{{.Repository}}:{{.Tag}}", f"davit/{app}-*").stdout.split()
    if imgs:
        sh("docker", "rmi", *imgs)


def med(xs):
    return statistics.median(xs)


def main():
    if not shutil.which("docker-compose"):
        raise SystemExit("docker-compose is missing: run scripts/install-deps.sh (Debian package docker-compose)")
    ensure_image()
    dv = bench_davit(a.rounds)
    up, ready = bench_compose(a.rounds)
    ver = sh("docker", "version", "--format", "{{.Server.Version}}").stdout.strip()
    dcv = sh("docker-compose", "version", "--short").stdout.strip()
    lines = [
        "",
        f"## Docker deploy of a one-service change (`/usr/bin/python3 bench/docker_deploy.py --rounds {a.rounds}`)",
        "",
        f"- stack: web, api, db (busybox httpd containers, `init: true` for both); each round changes api's environment; "
        f"Docker engine {ver}, docker-compose {dcv}; same engine, same run",
        f"- davit deploy (returns after the new api replica is healthy and traffic switched; old one drained): "
        f"median {med(dv):.2f} s (min {min(dv):.2f}, max {max(dv):.2f})",
        f"- docker-compose up -d (returns after the container is recreated and started): median {med(up):.2f} s "
        f"(min {min(up):.2f}, max {max(up):.2f}); until the new api answers: median {med(ready):.2f} s",
        f"- ratio davit / docker-compose: **{med(dv) / med(ready):.2f}** against compose-until-serving, "
        f"{med(dv) / med(up):.2f} against compose's own return; davit keeps serving during the change "
        f"(start-first), compose stops the old container first (requests fail in between)",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if a.append:
        with open(a.append, "a") as f:
            f.write(text)


main()

"""End-to-end tests of the Docker runtime: real `davit daemon`, real CLI, a
real Docker engine (started by the dockerenv fixture if none answers), base
images built locally from busybox-static (no Docker Hub).

Stacks shaped like the seed manuals':
- "lumira" (Oracle Lumira): a static SPA built from a Dockerfile with a
  HEALTHCHECK, an API (2 replicas, JSON answers), a database and a Redis
  stand-in (busybox httpd), Traefik Host() labels for the domains;
- "booking" (booking agent): backend and worker, database and Redis on an
  internal network, the database's data in a named volume.
Load loops use `--docker-upstream loopback` (127.0.0.1 only) and are bounded.
"""

import json
import os
import signal
import stat
import subprocess
import time
import urllib.request

import pytest

from davitctl import Load, http_get, wait_until
from dockerenv import cleanup_app, containers, docker, engine_get, urlquote

pytest_plugins = ["davitctl", "dockerenv"]

LOOPBACK = ["--docker-upstream", "loopback"]

API_CMD = """
      - sh
      - -c
      - |
        mkdir -p /www
        printf '{"version":"%s","pid":%s}' "$$API_VERSION" "$$$$" > /www/index.html
        echo ok > /www/health
        echo "api $$API_VERSION listening on 8000"
        exec httpd -f -v -p 8000 -h /www
"""

STORE_CMD = """
      - sh
      - -c
      - |
        mkdir -p /data
        [ -f /data/created ] || date > /data/created
        echo "{name} listening on {port}"
        exec httpd -f -p {port} -h /data
"""


def lumira_compose(app, image):
    return f"""
name: {app}
services:
  web:
    build: ./web
    user: "65534"
    stop_grace_period: 3s
    pids_limit: 64
    labels:
      traefik.http.routers.web.rule: Host(`{app}.lumira.test`)
      traefik.http.services.web.loadbalancer.server.port: "8080"
  api:
    image: {image}
    command:{API_CMD}
    environment:
      API_VERSION: ${{API_VERSION:-1}}
    depends_on: [db, redis]
    deploy:
      replicas: 2
      resources:
        limits: {{memory: 64M, cpus: "0.5"}}
    labels:
      traefik.http.routers.api.rule: Host(`api.{app}.lumira.test`)
      traefik.http.services.api.loadbalancer.server.port: "8000"
    x-davit:
      health: {{path: /health}}
  db:
    image: {image}
    command:{STORE_CMD.format(name="db", port=5432)}
    volumes: [dbdata:/data]
    expose: ["5432"]
    healthcheck:
      test: ["CMD-SHELL", "wget -q -O /dev/null http://127.0.0.1:5432/created"]
      interval: 1s
  redis:
    image: {image}
    entrypoint: ["/bin/sh", "-c"]
    command: ["mkdir -p /data; echo redis listening on 6379; exec httpd -f -p 6379 -h /data"]
    expose: ["6379"]
volumes:
  dbdata: {{}}
"""


def write_web(dir_, image, text):
    os.makedirs(os.path.join(dir_, "web"), exist_ok=True)
    with open(os.path.join(dir_, "web", "Dockerfile"), "w") as f:
        f.write(f"FROM {image}\nCOPY index.html /www/index.html\n"
                "HEALTHCHECK --interval=1s --timeout=2s CMD wget -q -O /dev/null http://127.0.0.1:8080/ || exit 1\n"
                'CMD ["httpd", "-f", "-v", "-p", "8080", "-h", "/www"]\n')
    with open(os.path.join(dir_, "web", "index.html"), "w") as f:
        f.write(text)


def get(d, host, path="/"):
    status, body = http_get(d.port, host, path)
    return status, body


def api_json(d, app):
    status, body = get(d, f"api.{app}.lumira.test")
    assert status == 200, (status, body, d.where())
    return json.loads(body)


def only_image(app, service, image):
    """Waits until the service's running containers all run `image` (the
    replaced ones stop right after the deploy returns)."""
    wait_until(lambda: {c["image"] for c in containers(app, service)} == {image}, 20, interval=0.1,
               what=f"{service} running only {image} (now {[c['image'] for c in containers(app, service)]})")


def healthy(d, app, services):
    def ok():
        svcs = {s["name"]: s for s in d.app(app)["services"]}
        for name, n in services.items():
            reps = [r for r in svcs.get(name, {}).get("replicas", []) if r.get("role") == "active"]
            if len([r for r in reps if r.get("state") == "healthy"]) != n:
                return False
        return True
    wait_until(ok, 60, interval=0.2, what=f"services {services} of {app} healthy")


def test_lumira_stack_redeploy_under_load_rollback_and_rebuild(davit_env, docker_app, busybox_image, tmp_path):
    app = docker_app
    d = davit_env(args=LOOPBACK)
    write_web(str(tmp_path), busybox_image, "<h1>Lumira v1</h1>\n")
    compose = tmp_path / "compose.yml"
    compose.write_text(lumira_compose(app, busybox_image))

    r = d.deploy(str(compose))
    assert f"{app}.lumira.test" in r.out, r.out
    assert f"build: built davit/{app}-web:1 in" in r.out, r.out  # the deploy report says what it built
    healthy(d, app, {"web": 1, "api": 2, "db": 1, "redis": 1})

    # The SPA was built from its Dockerfile and tagged for this release.
    status, body = get(d, f"{app}.lumira.test")
    assert status == 200 and b"Lumira v1" in body, (status, body)
    assert docker("image", "inspect", f"davit/{app}-web:1", check=False).returncode == 0
    logs = d.cli("logs", "web", "--tail", "200").out
    assert "build: " in logs and "built davit/" in logs, logs
    # The API answers as release 1, from containers with davit's labels and limits.
    assert api_json(d, app)["version"] == "1"
    api = containers(app, "api")
    assert sorted(c["replica"] for c in api) == ["0", "1"] and {c["release"] for c in api} == {"1"}, api
    info = engine_get(f"/containers/{api[0]['id']}/json")
    assert info["HostConfig"]["Init"] is True
    assert info["HostConfig"]["Memory"] == 64 * 1024 * 1024
    assert info["HostConfig"]["NanoCpus"] == 500_000_000
    assert info["Config"]["Labels"]["davit.app"] == app
    # Loopback mode: the app port is published on 127.0.0.1 only.
    assert all(p.get("IP") == "127.0.0.1" for c in api for p in c["ports"]), api
    # The database (it only exposes its port) is published on loopback only,
    # where the proxy reaches it in this mode; nothing listens on other addresses.
    assert all(p.get("IP") == "127.0.0.1" for p in containers(app, "db")[0]["ports"])
    web = engine_get(f"/containers/{containers(app, 'web')[0]['id']}/json")
    assert web["Config"]["User"] == "65534" and web["Config"]["StopTimeout"] == 3, web["Config"]
    assert web["HostConfig"]["PidsLimit"] == 64
    assert web["Config"]["Healthcheck"]["Test"][0] == "CMD-SHELL"  # the Dockerfile's HEALTHCHECK
    redis = engine_get(f"/containers/{containers(app, 'redis')[0]['id']}/json")
    assert redis["Config"]["Entrypoint"] == ["/bin/sh", "-c"], redis["Config"]
    # `davit ps` reads the containers' memory from their cgroups.
    reps = d.replicas("api", app)
    assert all(r.get("rss_bytes", 0) > 0 for r in reps if r.get("role") == "active"), reps
    # `davit logs` has the containers' own output.
    assert "api 1 listening on 8000" in d.cli("logs", "api").out

    # Redeploy the API under load: zero failed requests.
    load = Load(d.port, f"api.{app}.lumira.test", threads=4).start()
    load.wait_requests(20)
    r = d.deploy(str(compose), env={"API_VERSION": "2"})
    assert "api" in r.out and "switched to release 2" in r.out, r.out
    load.keep(1.0)
    load.stop()
    assert not load.failures(), load.summary()
    assert {rec[4] for rec in load.all() if rec[2]} >= {"1", "2"}, load.summary()
    assert api_json(d, app)["version"] == "2"
    only_image(app, "api", f"davit/{app}-api:2")

    # Rollback under load: exactly the previous image again.
    load = Load(d.port, f"api.{app}.lumira.test", threads=4).start()
    load.wait_requests(20)
    r = d.cli("rollback")
    load.keep(1.0)
    load.stop()
    assert not load.failures(), load.summary()
    assert api_json(d, app)["version"] == "1"
    only_image(app, "api", f"davit/{app}-api:1")

    # A changed build context is a changed service: rebuilt and switched.
    write_web(str(tmp_path), busybox_image, "<h1>Lumira v2</h1>\n")
    r = d.deploy(str(compose))
    assert "web" in r.out and "switched to release 3" in r.out, r.out
    status, body = get(d, f"{app}.lumira.test")
    assert b"Lumira v2" in body, body
    # Unchanged services kept their containers.
    only_image(app, "api", f"davit/{app}-api:1")

    # `davit restart` of a stateless container service: start-first, no failed request.
    # (Twice: the second one replaces replicas of the same release and index.)
    d.cli("restart", "api")
    before = {c["id"] for c in containers(app, "api")}
    load = Load(d.port, f"api.{app}.lumira.test", threads=4).start()
    load.wait_requests(20)
    d.cli("restart", "api")
    load.keep(0.5)
    load.stop()
    assert not load.failures(), load.summary()
    wait_until(lambda: len(containers(app, "api")) == 2 and not before & {c["id"] for c in containers(app, "api")},
               20, interval=0.1, what="two new api containers after the restart")
    # The old containers drained and stopped; none was removed by force as a name clash.
    assert "leftover" not in d.log(), d.where()


def booking_compose(app, image, db_env="1", front_port=None):
    ports = f'\n    ports: ["127.0.0.1:{front_port}:3000"]' if front_port else ""
    return f"""
name: {app}
services:
  frontend:
    image: {image}
    command: ["sh", "-c", "echo front > /www/index.html; exec httpd -f -p 3000 -h /www"]{ports}
    x-davit:
      port: 3000
      domains: [{app}.booking.test]
  backend:
    image: {image}
    command: ["sh", "-c", "echo back > /www/index.html; exec httpd -f -p 8000 -h /www"]
    networks: [default, data]
    depends_on:
      db: {{condition: service_healthy}}
      redis: {{condition: service_started}}
    x-davit:
      port: 8000
      domains: [api.{app}.booking.test]
  worker:
    image: {image}
    command: ["sh", "-c", "while true; do wget -q -O /dev/null http://db:5432/created && echo worker reached db; sleep 1; done"]
    networks: [data]
    depends_on: [db]
  db:
    image: {image}
    command:{STORE_CMD.format(name="db", port=5432)}
    environment: {{DB_CONFIG: "{db_env}"}}
    networks:
      data: {{aliases: [pg]}}
    expose: ["5432"]
    volumes: [pgdata:/data]
    healthcheck:
      test: ["CMD-SHELL", "wget -q -O /dev/null http://127.0.0.1:5432/created"]
      interval: 1s
  redis:
    image: {image}
    command:{STORE_CMD.format(name="redis", port=6379)}
    networks: [data]
    expose: ["6379"]
networks:
  data:
    internal: true
volumes:
  pgdata: {{}}
"""


def one(app, service):
    cs = containers(app, service)
    assert len(cs) == 1, (service, cs)
    return cs[0]


def test_booking_internal_network_volumes_survive_everything(davit_env, docker_app, busybox_image, tmp_path):
    app = docker_app
    d = davit_env(args=LOOPBACK)
    compose = tmp_path / "compose.yml"
    compose.write_text(booking_compose(app, busybox_image))
    d.deploy(str(compose))
    healthy(d, app, {"frontend": 1, "backend": 1, "worker": 1, "db": 1, "redis": 1})
    assert get(d, f"api.{app}.booking.test")[1] == b"back\n"
    # `davit ps --json` names each replica's container.
    assert {r["container"] for r in d.replicas("db", app)} == {c["id"] for c in containers(app, "db")}

    # A host port is published when the compose file asks (ports:), and such
    # a service is replaced stop-first (two containers cannot bind it).
    from upstreams import free_port
    front_port = free_port()
    compose.write_text(booking_compose(app, busybox_image, front_port=front_port))
    r = d.deploy(str(compose))
    assert "frontend" in r.out and "stop-first: it publishes fixed host ports" in r.out, r.out
    healthy(d, app, {"frontend": 1})
    with urllib.request.urlopen(f"http://127.0.0.1:{front_port}/", timeout=5) as resp:
        assert resp.read() == b"front\n"
    compose.write_text(booking_compose(app, busybox_image))
    d.deploy(str(compose))
    wait_until(lambda: len(containers(app, "frontend")) == 1, 20, interval=0.1, what="the old frontend gone")

    # DNS by service name on the app's networks: the backend (on both) and
    # the worker (internal only) reach the database...
    backend, db = one(app, "backend"), one(app, "db")
    assert docker("exec", backend["id"], "wget", "-q", "-O-", "http://db:5432/created").returncode == 0
    assert docker("exec", backend["id"], "wget", "-q", "-O-", "http://pg:5432/created").returncode == 0  # an alias
    wait_until(lambda: "worker reached db" in d.cli("logs", "worker").out, 20, interval=0.3,
               what="the worker reaching db by name")
    # ... which is not reachable from outside its internal network: no host
    # port, no route through the proxy, no name (or route) from the frontend.
    assert db["ports"] == [] and set(db["networks"]) == {f"{app}_data"}, db
    assert get(d, f"db.{app}.localhost")[0] == 404
    frontend = one(app, "frontend")
    r = docker("exec", frontend["id"], "wget", "-q", "-T", "2", "-O-", "http://db:5432/created", check=False)
    assert r.returncode != 0, "the frontend (default network only) reached the internal database"
    net = engine_get(f"/networks/{app}_data")
    assert net["Internal"] is True and net["Labels"]["davit.app"] == app

    def marker():
        return docker("exec", one(app, "db")["id"], "cat", "/data/marker", check=False).stdout

    docker("exec", db["id"], "sh", "-c", "echo keep-me > /data/marker")

    # A redeploy of the stateful service is stop-first, and says so; the data stays.
    compose.write_text(booking_compose(app, busybox_image, db_env="2"))
    r = d.deploy(str(compose))
    assert "stop-first" in r.out and "volumes" in r.out, r.out
    healthy(d, app, {"db": 1})
    assert one(app, "db")["id"] != db["id"] and marker() == "keep-me\n"

    # A new database release that never comes up: the deploy fails and, the
    # old one being stopped already (stop-first), starts it again; data kept.
    compose.write_text(booking_compose(app, busybox_image, db_env="3").replace(
        'environment: {DB_CONFIG: "3"}', 'environment: {DB_CONFIG: "3"}\n    entrypoint: ["sh", "-c", "exit 3"]'))
    serving = one(app, "db")["release"]
    r = d.deploy(str(compose), check=False)
    assert r.returncode == 1 and f"started release {serving} again (stop-first)" in r.out, r.out
    healthy(d, app, {"db": 1})
    assert one(app, "db")["release"] == serving and marker() == "keep-me\n"
    compose.write_text(booking_compose(app, busybox_image, db_env="2"))
    # `davit restart` of the stateful service: stop-first too, data kept.
    d.cli("restart", "db")
    healthy(d, app, {"db": 1})
    assert marker() == "keep-me\n"

    # kill -9 of the daemon: containers keep running and are adopted, not restarted.
    before = {c["service"]: c["id"] for c in containers(app)}
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait(10)
    assert {c["service"]: c["id"] for c in containers(app)} == before
    d.start()
    healthy(d, app, {"frontend": 1, "backend": 1, "worker": 1, "db": 1, "redis": 1})
    assert {c["service"]: c["id"] for c in containers(app)} == before
    assert "adopting its running container" in d.log()
    assert get(d, f"api.{app}.booking.test")[1] == b"back\n"
    assert marker() == "keep-me\n"

    # davit down: everything stops, the volume stays; the next deploy finds the data.
    d.cli("down")
    wait_until(lambda: not containers(app), 30, interval=0.2, what="the app's containers gone after down")
    assert docker("volume", "inspect", f"{app}_pgdata", check=False).returncode == 0
    d.deploy(str(compose))
    healthy(d, app, {"db": 1})
    assert marker() == "keep-me\n"

    # down --volumes asks first: without a terminal and without --yes nothing happens.
    r = d.cli("down", "--volumes", check=False)
    assert r.returncode == 1 and "--yes" in r.out and f"{app}_pgdata" in r.out, r.out
    assert containers(app) and docker("volume", "inspect", f"{app}_pgdata", check=False).returncode == 0
    r = d.cli("down", "--volumes", "--yes")
    assert f"deleted volume {app}_pgdata" in r.out, r.out
    assert docker("volume", "inspect", f"{app}_pgdata", check=False).returncode != 0
    assert not containers(app)


def test_engine_unreachable_is_one_clear_sentence(davit_env, docker_app, busybox_image, tmp_path):
    d = davit_env(args=LOOPBACK, start=False)
    missing = f"/tmp/davit-no-docker-{os.getpid()}.sock"
    old = os.environ.get("DOCKER_HOST")
    os.environ["DOCKER_HOST"] = f"unix://{missing}"
    try:
        d.start()
    finally:
        if old is None:
            os.environ.pop("DOCKER_HOST")
        else:
            os.environ["DOCKER_HOST"] = old
    compose = tmp_path / "compose.yml"
    compose.write_text(booking_compose(docker_app, busybox_image))
    r = d.deploy(str(compose), check=False)
    assert r.returncode == 1
    assert f"cannot reach the Docker engine at unix://{missing}" in r.out and "start dockerd" in r.out, r.out
    assert not containers(docker_app)
    # Native services still deploy on that daemon.
    native = tmp_path / "native.yml"
    native.write_text(f"name: {docker_app}n\nservices:\n  w:\n    x-davit: {{run: sleep 60}}\n")
    d.deploy(str(native))
    # ... and `down --volumes` of a native-only app needs no engine either.
    r = d.cli("down", "--volumes", "--app", f"{docker_app}n")
    assert "no volumes to delete" in r.out, r.out


def test_address_mode_routes_to_the_container_address(davit_env, docker_app, busybox_image, tmp_path):
    """The production default: the proxy reaches the container on its app
    network (a light check: one request, no load)."""
    d = davit_env()
    compose = tmp_path / "compose.yml"
    compose.write_text(f"""
name: {docker_app}
services:
  web:
    image: {busybox_image}
    command: ["sh", "-c", "echo addr > /www/index.html; exec httpd -f -p 8080 -h /www"]
    x-davit: {{port: 8080, domains: [{docker_app}.addr.test]}}
""")
    d.deploy(str(compose))
    healthy(d, docker_app, {"web": 1})
    assert get(d, f"{docker_app}.addr.test") == (200, b"addr\n")
    web = one(docker_app, "web")
    assert not [p for p in web["ports"] if p.get("PublicPort")], "address mode publishes nothing on the host"
    rep = d.replicas("web", docker_app)[0]
    assert "172." in rep.get("health", "") or "connected to 1" in rep.get("health", ""), rep


def test_image_prune_keeps_the_newest_releases(davit_env, docker_app, busybox_image, tmp_path):
    d = davit_env(args=LOOPBACK + ["--keep-images", "2"])
    compose = tmp_path / "compose.yml"
    for v in range(1, 5):
        compose.write_text(f"""
name: {docker_app}
services:
  w:
    image: {busybox_image}
    command: ["sh", "-c", "echo v{v}; exec sleep 600"]
""")
        d.deploy(str(compose))
    def tags():
        out = docker("images", "--format", "{{.Tag}}", f"davit/{docker_app}-w").stdout.split()
        return sorted(out)
    # Release 4 serves, 3 is the previous one: 1 and 2 are pruned.
    wait_until(lambda: tags() == ["3", "4"], 20, interval=0.2, what=f"images pruned to releases 3 and 4 (have {tags()})")
    d.cli("rollback")
    wait_until(lambda: [c["image"] for c in containers(docker_app, "w")] == [f"davit/{docker_app}-w:3"], 20,
               interval=0.2, what="the rollback to run release 3's image alone")


@pytest.fixture
def registry(docker_engine, tmp_path):
    """A private docker-registry on 127.0.0.1 with htpasswd auth (user/secret), stopped by PID."""
    from upstreams import free_port
    binary = "/usr/bin/docker-registry"
    if not os.path.exists(binary) or not os.path.exists("/usr/bin/htpasswd"):
        pytest.fail("docker-registry or htpasswd missing: run scripts/install-deps.sh "
                    "(Debian packages docker-registry and apache2-utils)")
    port = free_port()
    root = tmp_path / "registry"
    root.mkdir()
    hp = subprocess.run(["htpasswd", "-Bbn", "user", "s3cret-pw"], capture_output=True, text=True, check=True).stdout
    (root / "htpasswd").write_text(hp)
    (root / "config.yml").write_text(f"""version: 0.1
log: {{level: warn}}
storage: {{filesystem: {{rootdirectory: {root}/data}}}}
http: {{addr: 127.0.0.1:{port}}}
auth: {{htpasswd: {{realm: davit-test, path: {root}/htpasswd}}}}
""")
    log = open(root / "registry.log", "wb")
    proc = subprocess.Popen([binary, "serve", str(root / "config.yml")], stdout=log, stderr=log,
                            stdin=subprocess.DEVNULL)
    def up():
        import socket
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0
    try:
        wait_until(up, 20, interval=0.05, what="docker-registry listening")
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def test_private_registry_pull_with_encrypted_credentials(davit_env, docker_app, busybox_image, registry, tmp_path):
    ref = f"{registry}/team/{docker_app}:1"
    cfg = tmp_path / "docker-config"
    cfg.mkdir()
    env = dict(os.environ, DOCKER_CONFIG=str(cfg))
    def dk(*args, **kw):
        r = subprocess.run(["docker", *args], capture_output=True, text=True, env=env, timeout=120, **kw)
        assert r.returncode == 0, (args, r.stderr)
        return r
    dk("login", registry, "-u", "user", "--password-stdin", input="s3cret-pw")
    dk("tag", busybox_image, ref)
    dk("push", ref)
    dk("logout", registry)
    dk("rmi", ref)
    try:
        d = davit_env(args=LOOPBACK)
        compose = tmp_path / "compose.yml"
        compose.write_text(f"""
name: {docker_app}
services:
  api:
    image: {ref}
    command: ["sh", "-c", "echo private > /www/index.html; exec httpd -f -p 8000 -h /www"]
    x-davit: {{port: 8000, domains: [{docker_app}.reg.test]}}
""")
        r = d.deploy(str(compose), check=False)
        assert r.returncode == 1 and f"davit registry login {registry}" in r.out, r.out
        def login(password):
            return subprocess.run([os.environ.get("DAVIT_BIN", "davit"), "registry", "login", registry, "--username",
                                   "user", "--state-dir", d.state_dir], input=password + "\n", capture_output=True,
                                  text=True, timeout=60)
        # A wrong password is refused by the registry and not stored.
        r = login("wrong-pw")
        assert r.returncode == 1 and "refused" in r.stdout + r.stderr, (r.stdout, r.stderr)
        assert not os.path.exists(os.path.join(d.state_dir, "registries", registry))
        r = login("s3cret-pw")
        assert r.returncode == 0 and "login to" in r.stdout and "stored" in r.stdout, (r.stdout, r.stderr)
        # Encrypted at rest: the password is not in the file; the key is private.
        blob = open(os.path.join(d.state_dir, "registries", registry), "rb").read()
        assert b"s3cret-pw" not in blob and b"user" not in blob
        assert stat.S_IMODE(os.stat(os.path.join(d.state_dir, "registry.key")).st_mode) == 0o600
        d.deploy(str(compose))
        healthy(d, docker_app, {"api": 1})
        assert get(d, f"{docker_app}.reg.test") == (200, b"private\n")
        assert "pull: " in d.cli("logs", "api").out
    finally:
        subprocess.run(["docker", "rmi", "-f", ref], capture_output=True, env=env)


def test_docker_healthcheck_failing_later_takes_the_replica_out(davit_env, docker_app, busybox_image, tmp_path):
    """Docker's HEALTHCHECK counts alongside davit's probe for a running
    container: failing, it leaves the route table; passing, it comes back."""
    d = davit_env(args=LOOPBACK)
    compose = tmp_path / "compose.yml"
    compose.write_text(f"""
name: {docker_app}
services:
  web:
    image: {busybox_image}
    command: ["sh", "-c", "touch /tmp/ok; echo up > /www/index.html; exec httpd -f -p 8080 -h /www"]
    healthcheck: {{test: ["CMD", "test", "-f", "/tmp/ok"], interval: 1s, retries: 1}}
    x-davit: {{port: 8080, domains: [{docker_app}.hc.test]}}
""")
    d.deploy(str(compose))
    healthy(d, docker_app, {"web": 1})
    assert get(d, f"{docker_app}.hc.test") == (200, b"up\n")
    web = one(docker_app, "web")
    docker("exec", web["id"], "rm", "/tmp/ok")
    wait_until(lambda: get(d, f"{docker_app}.hc.test")[0] == 503, 20, interval=0.2,
               what="the replica out of the routes after its Docker health check failed")
    rep = d.replicas("web", docker_app)[0]
    assert rep["state"] == "unhealthy" and "Docker health check" in rep["health"], rep
    docker("exec", web["id"], "touch", "/tmp/ok")
    wait_until(lambda: get(d, f"{docker_app}.hc.test")[0] == 200, 20, interval=0.2,
               what="the replica back once its Docker health check passes")
    assert one(docker_app, "web")["id"] == web["id"], "the container was not restarted"


def test_failed_build_fails_the_deploy_with_the_builders_output(davit_env, docker_app, busybox_image, tmp_path):
    d = davit_env(args=LOOPBACK)
    (tmp_path / "web").mkdir()
    (tmp_path / "web" / "Dockerfile").write_text(
        f"FROM {busybox_image}\nRUN echo compiling && echo 'error: missing semicolon' >&2 && exit 7\n")
    compose = tmp_path / "compose.yml"
    compose.write_text(f"""
name: {docker_app}
services:
  web:
    build: ./web
    x-davit: {{port: 8080, domains: [{docker_app}.build.test]}}
""")
    r = d.deploy(str(compose), check=False)
    assert r.returncode == 1, r.out
    assert "build: " in r.out and "compiling" in r.out and "returned a non-zero code: 7" in r.out, r.out
    assert not containers(docker_app)
    assert docker("image", "inspect", f"davit/{docker_app}-web:1", check=False).returncode != 0


def test_build_options_dockerfile_target_and_args(davit_env, docker_app, busybox_image, tmp_path):
    d = davit_env(args=LOOPBACK)
    ctx = tmp_path / "app"
    ctx.mkdir()
    (ctx / "Dockerfile.prod").write_text(
        f"FROM {busybox_image} AS base\nARG GREETING=none\nRUN mkdir -p /www && echo \"$GREETING from base\" > /www/index.html\n"
        f"FROM base AS final\nRUN echo \"$(cat /www/index.html), final stage\" > /www/index.html\nCOPY . /ctx\n"
        f"FROM base AS unused\nRUN exit 1\n")
    (ctx / ".dockerignore").write_text("secret.txt\n")
    (ctx / "secret.txt").write_text("do not send me\n")
    compose = tmp_path / "compose.yml"
    compose.write_text(f"""
name: {docker_app}
services:
  web:
    build:
      context: ./app
      dockerfile: Dockerfile.prod
      target: final
      args: {{GREETING: hello}}
    command: ["httpd", "-f", "-p", "8080", "-h", "/www"]
    x-davit: {{port: 8080, domains: [{docker_app}.opts.test]}}
""")
    d.deploy(str(compose))
    healthy(d, docker_app, {"web": 1})
    assert get(d, f"{docker_app}.opts.test") == (200, b"hello from base, final stage\n")
    # .dockerignore'd files are not in the context sent to the engine
    web = one(docker_app, "web")
    r = docker("exec", web["id"], "ls", "/ctx")
    assert "Dockerfile.prod" in r.stdout and "secret.txt" not in r.stdout, r.stdout


def test_rollback_to_a_pruned_build_is_refused_unless_the_context_is_the_same(davit_env, docker_app, busybox_image,
                                                                               tmp_path):
    d = davit_env(args=LOOPBACK + ["--keep-images", "1"])
    compose = tmp_path / "compose.yml"
    compose.write_text(f"""
name: {docker_app}
services:
  web:
    build: ./web
    command: ["httpd", "-f", "-p", "8080", "-h", "/www"]
    x-davit: {{port: 8080, domains: [{docker_app}.pr.test]}}
""")
    for v in ("A", "B", "C"):
        write_web(str(tmp_path), busybox_image, f"version {v}\n")
        d.deploy(str(compose))
    tags = lambda: sorted(docker("images", "--format", "{{.Tag}}", f"davit/{docker_app}-web").stdout.split())
    wait_until(lambda: tags() == ["2", "3"], 20, interval=0.2, what=f"release 1's image pruned (have {tags()})")
    # Release 1's image is gone and ./web is not what it was built from: refused, clearly.
    r = d.cli("rollback", "1", check=False)
    assert r.returncode == 1 and "cannot be rebuilt as it was" in r.out, r.out
    assert get(d, f"{docker_app}.pr.test") == (200, b"version C\n")
    # With the context as it was, the same release is rebuilt.
    write_web(str(tmp_path), busybox_image, "version A\n")
    d.cli("rollback", "1")
    assert get(d, f"{docker_app}.pr.test") == (200, b"version A\n")

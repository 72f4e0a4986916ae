#!/usr/bin/env python3
"""Control-plane benchmark (not a test): with the Penpal example stack deployed
by a fresh davit daemon, measures
  - the daemon's memory (VmRSS/VmHWM of the daemon process alone; replicas are
    separate processes and not counted),
  - the time from a new replica's last passing health check to the proxy's
    route table switch (the daemon logs it for every switched service),
  - the latency of `davit ps` (wall time of the whole CLI call),
  - the duration of a one-service redeploy.
usage: /usr/bin/python3 bench/controlplane.py [--redeploys N] [--ps-runs N]
Everything runs on loopback; every process started is stopped by PID."""
import argparse, json, os, re, shutil, signal, socket, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DAVIT = os.environ.get("DAVIT_BIN", os.path.join(ROOT, "davit"))

ap = argparse.ArgumentParser()
ap.add_argument("--redeploys", type=int, default=10)
ap.add_argument("--ps-runs", type=int, default=200)
a = ap.parse_args()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def status_kb(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


work = tempfile.mkdtemp(prefix="davit-cpbench-")
app = os.path.join(work, "penpal")
shutil.copytree(os.path.join(ROOT, "examples", "penpal"), app)
state = os.path.join(work, "state")
port = free_port()
log = open(os.path.join(work, "daemon.log"), "w+")
daemon = subprocess.Popen([DAVIT, "daemon", "--state-dir", state, "--http", f"127.0.0.1:{port}", "--workers", "1"],
                          stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
try:
    sock = os.path.join(state, "run", "davit.sock")
    deadline = time.monotonic() + 10
    while not os.path.exists(sock):
        if time.monotonic() > deadline or daemon.poll() is not None:
            sys.exit("daemon did not start; log: " + log.name)
        time.sleep(0.02)
    base = ["--state-dir", state]
    t0 = time.monotonic()
    subprocess.run([DAVIT, "deploy", "-f", os.path.join(app, "compose.yml")] + base, check=True,
                   stdout=subprocess.DEVNULL)
    first_deploy = time.monotonic() - t0
    time.sleep(1.0)  # let the stack settle (health checks at their interval)
    rss_stack = status_kb(daemon.pid, "VmRSS")

    redeploy_s = []
    for i in range(a.redeploys):
        env = dict(os.environ, AUTH_VERSION=str(100 + i))
        t0 = time.monotonic()
        subprocess.run([DAVIT, "deploy", "-f", os.path.join(app, "compose.yml")] + base, check=True, env=env,
                       stdout=subprocess.DEVNULL)
        redeploy_s.append(time.monotonic() - t0)

    ps_ms = []
    for _ in range(a.ps_runs):
        t0 = time.monotonic()
        subprocess.run([DAVIT, "ps"] + base, check=True, stdout=subprocess.DEVNULL)
        ps_ms.append((time.monotonic() - t0) * 1000)
    rss_end = status_kb(daemon.pid, "VmRSS")
    hwm = status_kb(daemon.pid, "VmHWM")
    ps_json = json.loads(subprocess.run([DAVIT, "ps", "--json"] + base, check=True, capture_output=True).stdout)
    replicas = sum(len(s["replicas"]) for ap_ in ps_json["apps"] for s in ap_["services"])
    log.flush()
    log.seek(0)
    switches = [float(m) for m in re.findall(r"traffic switched ([0-9.]+) ms after the health check", log.read())]
    print("## control-plane bench\n")
    print(f"- stack: examples/penpal ({replicas} replicas of 7 services), daemon with 1 proxy worker")
    print(f"- first deploy of the whole stack: {first_deploy:.2f} s")
    print(f"- daemon memory with the stack deployed: VmRSS {rss_stack / 1024:.1f} MB; after {a.redeploys} redeploys and "
          f"{a.ps_runs} ps calls: VmRSS {rss_end / 1024:.1f} MB, VmHWM {hwm / 1024:.1f} MB (target < 20 MB)")
    if switches:
        print(f"- health check passed -> route table switched: median {statistics.median(switches):.3f} ms, "
              f"max {max(switches):.3f} ms over {len(switches)} switches (target < 100 ms)")
    print(f"- one-service redeploy (auth, 2 replicas), CLI wall time: median {statistics.median(redeploy_s) * 1000:.0f} ms, "
          f"max {max(redeploy_s) * 1000:.0f} ms over {a.redeploys}")
    print(f"- `davit ps` wall time over {a.ps_runs} runs: p50 {pct(ps_ms, 0.5):.2f} ms, p99 {pct(ps_ms, 0.99):.2f} ms")
finally:
    daemon.send_signal(signal.SIGTERM)
    try:
        daemon.wait(20)
    except subprocess.TimeoutExpired:
        daemon.kill()
        daemon.wait()
    log.close()
    shutil.rmtree(work, ignore_errors=True)

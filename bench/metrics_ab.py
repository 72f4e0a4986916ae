#!/usr/bin/python3
"""What the proxy's metrics cost, measured so that other processes' load
cancels out: two `davit proxy` processes, one with metrics (the default) and
one with --no-metrics, pinned to the same core, each driven by its own wrk at
the same time (both wrk on the other core), forwarding to one nginx origin.
Whatever else runs on the machine hits both alike in the same second. Each
round measures requests and the proxies' own CPU time (utime + stime from
/proc) and gives the ratio on/off of CPU per request and of requests/s;
the rounds alternate which wrk starts first. Median and spread over the rounds.

  /usr/bin/python3 bench/metrics_ab.py [--rounds 15] [--duration 4] [--conns 50]

Loopback only; every process is started here and stopped by PID; bounded in
time (rounds x duration). Needs nginx-light, wrk, taskset (install-deps.sh)."""

import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DAVIT = os.environ.get("DAVIT_BIN", os.path.join(HERE, "..", "davit"))
TICK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"bench: {proc.args} exited ({proc.returncode})")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"bench: nothing listens on {port}")


def cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / TICK


def wrk(port, seconds, conns):
    return subprocess.Popen(["taskset", "-c", "1", "wrk", "-t1", f"-c{conns}", f"-d{seconds}s",
                             f"http://127.0.0.1:{port}/"], stdout=subprocess.PIPE, text=True)


def requests_of(out):
    m = re.search(r"(\d+) requests in", out)
    if not m:
        sys.exit(f"bench: wrk printed no request count:\n{out}")
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        sys.exit(f"bench: errors through the proxy:\n{out}")
    return int(m.group(1))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--duration", type=int, default=4)
    ap.add_argument("--conns", type=int, default=50)
    a = ap.parse_args()
    if not 1 <= a.rounds <= 100 or not 1 <= a.duration <= 30:
        sys.exit("bench: rounds 1..100, duration 1..30 s (loads stay bounded)")
    for tool in ("nginx", "wrk", "taskset"):
        if not shutil.which(tool):
            sys.exit(f"bench: {tool} is missing: run bash scripts/install-deps.sh")
    work = tempfile.mkdtemp(prefix="davit-metrics-ab-")
    procs = []
    try:
        oport = free_port()
        os.makedirs(f"{work}/tmp")
        with open(f"{work}/nginx.conf", "w") as f:
            f.write(f"""worker_processes 1; daemon off; master_process off; pid {work}/nginx.pid;
error_log {work}/error.log error;
events {{ worker_connections 4096; }}
http {{ access_log off; keepalive_timeout 300s; keepalive_requests 1000000;
  client_body_temp_path {work}/tmp/b; proxy_temp_path {work}/tmp/p; fastcgi_temp_path {work}/tmp/f;
  uwsgi_temp_path {work}/tmp/u; scgi_temp_path {work}/tmp/s;
  server {{ listen 127.0.0.1:{oport} backlog=4096; location / {{ default_type text/plain; return 200 "{'x' * 99}\\n"; }} }} }}
""")
        origin = subprocess.Popen(["taskset", "-c", "0", "nginx", "-p", f"{work}/", "-c", f"{work}/nginx.conf",
                                   "-e", f"{work}/error.log"], stderr=subprocess.DEVNULL)
        procs.append(origin)
        wait_port(oport, origin)
        ports, proxies = {}, {}
        for name, extra in (("on", []), ("off", ["--no-metrics"])):
            port = free_port()
            p = subprocess.Popen(["taskset", "-c", "0", DAVIT, "proxy", "--listen", f"127.0.0.1:{port}", "--route",
                                  f"*=127.0.0.1:{oport}", "--workers", "1", "--access-log", "off"] + extra,
                                 stderr=subprocess.DEVNULL)
            procs.append(p)
            wait_port(port, p)
            ports[name], proxies[name] = port, p
        # warm-up
        for w in [wrk(ports[n], 1, a.conns) for n in ("on", "off")]:
            w.communicate()
        cpu_ratio, rps_ratio, rows = [], [], []
        for r in range(a.rounds):
            order = ("on", "off") if r % 2 == 0 else ("off", "on")
            c0 = {n: cpu_s(proxies[n].pid) for n in order}
            t0 = time.monotonic()
            ws = {n: wrk(ports[n], a.duration, a.conns) for n in order}
            reqs = {n: requests_of(ws[n].communicate()[0]) for n in order}
            wall = time.monotonic() - t0
            us = {n: (cpu_s(proxies[n].pid) - c0[n]) * 1e6 / reqs[n] for n in order}
            cpu_ratio.append(us["on"] / us["off"])
            rps_ratio.append(reqs["on"] / reqs["off"])
            rows.append((r + 1, reqs["on"] / a.duration, reqs["off"] / a.duration, us["on"], us["off"]))
            print(f"round {r + 1:2}: on {reqs['on'] / a.duration:8.0f} req/s {us['on']:6.2f} us/req | off "
                  f"{reqs['off'] / a.duration:8.0f} req/s {us['off']:6.2f} us/req | cpu on/off {cpu_ratio[-1]:.3f} "
                  f"req/s on/off {rps_ratio[-1]:.3f} ({wall:.1f}s)", flush=True)

        def spread(v):
            q = statistics.quantiles(v, n=4) if len(v) >= 4 else (min(v), max(v), max(v))
            return f"median {statistics.median(v):.3f} (quartiles {q[0]:.3f}-{q[-1]:.3f}, min {min(v):.3f} max {max(v):.3f})"
        print(f"\n{a.rounds} rounds of {a.duration}s, wrk -t1 -c{a.conns} each, both proxies on cpu0 at the same time")
        print(f"proxy CPU per request, metrics on / off: {spread(cpu_ratio)}")
        print(f"requests/s, metrics on / off:            {spread(rps_ratio)}")
        print(f"median us/req: on {statistics.median(r[3] for r in rows):.2f}, off {statistics.median(r[4] for r in rows):.2f}; "
              f"median req/s: on {statistics.median(r[1] for r in rows):.0f}, off {statistics.median(r[2] for r in rows):.0f}")
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(5)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""User-space instructions per proxied request (valgrind --tool=callgrind),
a deterministic measure of hot-path cost that a busy machine cannot blur.

  /usr/bin/python3 bench/instructions.py BINARY[::EDGE_OPTIONS] ...
  e.g. bench/instructions.py /tmp/old/davit ./davit ./davit::'headers=on compress=off' ./davit::edge=on

Starts a local nginx origin (100-byte response) on a free loopback port; for
each target runs `davit proxy --workers 1 --access-log off` under callgrind,
sends N keep-alive GETs on 4 connections, stops it with SIGINT and reads the
instruction total; per request = (total(2500) - total(500)) / 2000, which
cancels start-up and shutdown. Needs valgrind and nginx (scripts/install-deps.sh).
"""

import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(port, deadline, host="x"):
    while True:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            c.request("GET", "/", headers={"Host": host})
            c.getresponse().read()
            c.close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"instructions: nothing answers on port {port}")
            time.sleep(0.1)


def total(binary, opts, origin, n, tmp):
    port = free_port()
    out = os.path.join(tmp, f"cg.{port}")
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", binary, "proxy", "--listen",
           f"127.0.0.1:{port}", "--route", f"*=127.0.0.1:{origin}", "--workers", "1", "--access-log", "off"]
    if opts:
        cmd += ["--edge", opts]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_http(port, time.monotonic() + 60)
        conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=30) for _ in range(4)]
        for i in range(n):
            c = conns[i % 4]
            c.request("GET", "/", headers={"Host": "app.test", "Accept-Encoding": "gzip, br"})
            r = c.getresponse()
            r.read()
            assert r.status == 200, r.status
        for c in conns:
            c.close()
    finally:
        p.send_signal(signal.SIGINT)
        err = p.communicate(timeout=120)[1].decode()
    m = re.search(r"Collected : (\d+)", err)
    if not m:
        raise SystemExit(f"instructions: no callgrind total for {binary}:\n{err[-2000:]}")
    return int(m.group(1))


def main():
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        return
    for tool in ("valgrind", "nginx"):
        if not shutil.which(tool):
            raise SystemExit(f"instructions: {tool} is missing (apt-get install {tool})")
    tmp = tempfile.mkdtemp(prefix="davit-instr-")
    origin = free_port()
    conf = os.path.join(tmp, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""worker_processes 1; daemon off; master_process off; pid {tmp}/nginx.pid;
error_log {tmp}/error.log error; events {{ worker_connections 1024; }}
http {{ access_log off; keepalive_requests 1000000; client_body_temp_path {tmp}/b; proxy_temp_path {tmp}/p;
fastcgi_temp_path {tmp}/f; uwsgi_temp_path {tmp}/u; scgi_temp_path {tmp}/s;
server {{ listen 127.0.0.1:{origin}; location / {{ default_type text/plain; return 200 "{'x' * 99}\\n"; }} }} }}
""")
    ng = subprocess.Popen(["nginx", "-p", tmp + "/", "-c", conf, "-e", f"{tmp}/error.log"])
    try:
        wait_http(origin, time.monotonic() + 10)
        print("| target | instructions per request |")
        print("|---|---|")
        for spec in sys.argv[1:]:
            binary, _, opts = spec.partition("::")
            a = total(binary, opts, origin, 500, tmp)
            b = total(binary, opts, origin, 2500, tmp)
            label = binary + (f" --edge '{opts}'" if opts else "")
            print(f"| {label} | {(b - a) // 2000} |", flush=True)
    finally:
        ng.terminate()
        ng.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

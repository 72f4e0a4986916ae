#!/usr/bin/python3
"""Memory of idle TLS keep-alive connections: davit proxy vs nginx, side by side.

  /usr/bin/python3 bench/tlsidle.py [N (1000)]

Starts an origin (nginx), nginx as a TLS proxy and `davit proxy --tls-listen`
(one worker/process each, same P-256 certificate), opens N TLS connections to
each that have made one request and stay idle, and prints the proxy's RSS
(summed over its processes) before and after, and the cost per connection."""
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import time

N = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
HERE = os.path.dirname(os.path.abspath(__file__))
DAVIT = os.environ.get("DAVIT_BIN", os.path.join(HERE, "..", "davit"))
base = tempfile.mkdtemp(prefix="davit-tlsidle-")
cert, key = os.path.join(base, "cert.pem"), os.path.join(base, "key.pem")
subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=bench.test"], check=True, capture_output=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


origin, ngx, dv, dvh = free_port(), free_port(), free_port(), free_port()


def nginx(name, body):
    d = os.path.join(base, name)
    os.makedirs(d)
    conf = os.path.join(d, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"worker_processes 1; daemon off; pid {d}/pid; error_log {d}/error.log warn;\n"
                f"events {{ worker_connections {N * 2 + 100}; }}\nhttp {{ access_log off; {body} }}\n")
    return subprocess.Popen(["nginx", "-c", conf])


procs = [nginx("origin", f"server {{ listen 127.0.0.1:{origin}; location / {{ return 200 'ok'; }} }}")]
procs.append(nginx("proxy", f"upstream o {{ server 127.0.0.1:{origin}; keepalive 16; }} server {{ listen 127.0.0.1:{ngx} ssl; "
                   f"ssl_certificate {cert}; ssl_certificate_key {key}; ssl_protocols TLSv1.2 TLSv1.3; keepalive_timeout 300s; "
                   f"location / {{ proxy_pass http://o; proxy_http_version 1.1; proxy_set_header Connection \"\"; }} }}"))
procs.append(subprocess.Popen([DAVIT, "proxy", "--workers", "1", "--access-log", "off", "--listen", f"127.0.0.1:{dvh}",
                               "--tls-listen", f"127.0.0.1:{dv}", "--cert", f"{cert},{key}", "--keepalive-timeout", "300s",
                               "--route", f"*=127.0.0.1:{origin}"], stderr=subprocess.DEVNULL))


def rss_kb(pid):
    total = 0
    pids = [pid] + [int(p) for p in subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()]
    for p in pids:
        with open(f"/proc/{p}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def wait(port):
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


try:
    for port in (origin, ngx, dv):
        wait(port)
    ctx = ssl._create_unverified_context()
    for name, port, proc in (("nginx", ngx, procs[1]), ("davit", dv, procs[2])):
        before = rss_kb(proc.pid)
        conns = []
        for _ in range(N):
            s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="bench.test")
            s.sendall(b"GET / HTTP/1.1\r\nHost: bench.test\r\n\r\n")
            s.recv(4096)
            conns.append(s)
        time.sleep(0.5)
        after = rss_kb(proc.pid)
        print(f"{name}: RSS {before / 1024:.1f} MB -> {after / 1024:.1f} MB with {N} idle TLS connections: "
              f"{(after - before) / N:.1f} KB per connection")
        for s in conns:
            s.close()
finally:
    for p in procs:
        p.terminate()
        p.wait(10)

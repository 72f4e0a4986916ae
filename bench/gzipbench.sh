#!/usr/bin/env bash
# gzip throughput: davit (compress=gzip) next to nginx (gzip on) in front of
# the same origin, in one interleaved run on loopback.
#   bash bench/gzipbench.sh [--runs N] [--duration S] [--size BYTES] [--level N]
# The origin (nginx, one process) serves one text file of --size bytes
# uncompressed; each proxy compresses it per request at the same gzip level
# (davit's DV_COMPRESS_GZIP_LEVEL, 5, unless --level matches what davit was
# built with). wrk sends Accept-Encoding: gzip over keep-alive connections.
# Pinning: origin + proxy on cpu0, wrk on cpu1 (PB_SERVER_CPU/PB_CLIENT_CPU).
# Output: a Markdown table (median of the runs, min-max) and the ratio
# davit/nginx, on stdout. Loopback only; every load is bounded by --duration.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${DAVIT_BIN:-$here/../davit}
runs=3 duration=8 size=65536 level=5 conns=32
while (($#)); do
  case $1 in
    --runs) runs=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --size) size=$2; shift 2 ;;
    --level) level=$2; shift 2 ;;
    --conns) conns=$2; shift 2 ;;
    -h|--help) sed -n 2,12p "$0"; exit 0 ;;
    *) echo "gzipbench: unknown option $1" >&2; exit 2 ;;
  esac
done
for b in nginx wrk taskset python3; do command -v $b >/dev/null || { echo "gzipbench: $b missing (scripts/install-deps.sh)" >&2; exit 1; }; done
[[ -x $bin ]] || { echo "gzipbench: $bin not built: run make" >&2; exit 1; }
SERVER_CPU=${PB_SERVER_CPU:-0} CLIENT_CPU=${PB_CLIENT_CPU:-1}
base=$(mktemp -d /tmp/gzipbench.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ORIGIN=$(free_port) NGINX=$(free_port) DAVIT=$(free_port)
mkdir -p "$base/www" "$base/origin/tmp" "$base/nginx/tmp"
# Realistic text: a JSON-ish document with varied words (not one repeated byte).
python3 - "$size" >"$base/www/doc.json" <<'EOF'
import random, sys
random.seed(7)
words = ["davit", "deploy", "replica", "health", "route", "proxy", "status", "ok", "error", "user", "id",
         "name", "email", "created_at", "2026-12-02T01:39:17Z", "true", "false", "null", "items", "count"]
out, n = [], int(sys.argv[1])
while sum(map(len, out)) < n:
    out.append('{"%s": "%s", "%s": %d},\n' % (random.choice(words), random.choice(words), random.choice(words),
                                               random.randint(0, 100000)))
sys.stdout.write("".join(out)[:n])
EOF
head_conf() {
  cat <<EOF
worker_processes 1;
daemon off;
master_process off;
pid $1/nginx.pid;
error_log $1/error.log error;
events { worker_connections 4096; }
http {
    access_log off;
    server_tokens off;
    keepalive_timeout 300s;
    keepalive_requests 1000000;
    client_body_temp_path $1/tmp/body;
    proxy_temp_path $1/tmp/proxy;
    fastcgi_temp_path $1/tmp/fastcgi;
    uwsgi_temp_path $1/tmp/uwsgi;
    scgi_temp_path $1/tmp/scgi;
EOF
}
{ head_conf "$base/origin"; cat <<EOF
    server {
        listen 127.0.0.1:$ORIGIN;
        root $base/www;
        default_type application/json;
        gzip off;
    }
}
EOF
} >"$base/origin/nginx.conf"
{ head_conf "$base/nginx"; cat <<EOF
    upstream origin { server 127.0.0.1:$ORIGIN; keepalive 128; }
    server {
        listen 127.0.0.1:$NGINX;
        gzip on;
        gzip_comp_level $level;
        gzip_min_length 1024;
        gzip_proxied any;
        gzip_types application/json text/plain;
        gzip_vary on;
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
} >"$base/nginx/nginx.conf"

start() {  # name cmd... -> background pid pinned to the server core
  local name=$1; shift
  taskset -c "$SERVER_CPU" "$@" >"$base/$name.out" 2>&1 &
  pids+=($!)
  echo $!
}
wait_port() {
  for _ in $(seq 100); do
    curl -s -o /dev/null -H 'Accept-Encoding: gzip' "http://127.0.0.1:$1/doc.json" && return 0
    sleep 0.05
  done
  echo "gzipbench: nothing answers on port $1" >&2; exit 1
}
origin_pid=$(start origin nginx -p "$base/origin/" -c "$base/origin/nginx.conf" -e "$base/origin/error.log")
wait_port "$ORIGIN"

# Both proxies must really send gzip, and it must decode to the file.
check() {
  curl -s -H 'Accept-Encoding: gzip' "http://127.0.0.1:$1/doc.json" | gunzip | cmp -s - "$base/www/doc.json" ||
    { echo "gzipbench: $2 did not return the gzip'd file" >&2; exit 1; }
  curl -s -H 'Accept-Encoding: gzip' "http://127.0.0.1:$1/doc.json" | wc -c >"$base/$2.gzsize"
}

results=$base/results.tsv
: >"$results"
for r in $(seq "$runs"); do
  for target in nginx davit; do
    if [[ $target == nginx ]]; then
      pid=$(start nginx nginx -p "$base/nginx/" -c "$base/nginx/nginx.conf" -e "$base/nginx/error.log"); port=$NGINX
    else
      pid=$(start davit "$bin" proxy --listen "127.0.0.1:$DAVIT" --workers 1 --access-log off \
              --route "*=127.0.0.1:$ORIGIN compress=gzip headers=off maxbody=off"); port=$DAVIT
    fi
    wait_port "$port"
    check "$port" "$target"
    taskset -c "$CLIENT_CPU" wrk -t1 -c"$conns" -d2s -H 'Accept-Encoding: gzip' "http://127.0.0.1:$port/doc.json" >/dev/null
    cpu0=$(awk '{print $14+$15}' "/proc/$pid/stat")
    out=$(taskset -c "$CLIENT_CPU" wrk -t1 -c"$conns" -d"${duration}s" -H 'Accept-Encoding: gzip' "http://127.0.0.1:$port/doc.json")
    cpu1=$(awk '{print $14+$15}' "/proc/$pid/stat")
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    rss=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
    tck=$(getconf CLK_TCK)
    cpu_pct=$(python3 -c "print(round(100*($cpu1-$cpu0)/$tck/$duration,1))")
    mbs=$(python3 -c "print(round($rps*$size/1e6,1))")
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$target" "$rps" "$mbs" "$cpu_pct" "$rss" >>"$results"
    kill "$pid"; wait "$pid" 2>/dev/null || true
  done
done
python3 - "$results" "$size" "$level" "$runs" "$duration" "$conns" "$base" <<'EOF'
import statistics, sys
rows = [l.split("\t") for l in open(sys.argv[1]).read().split("\n") if l]
size, level, runs, dur, conns, base = sys.argv[2:8]
print(f"gzip, level {level}, {size}-byte JSON document, {runs} interleaved runs x {dur} s, wrk -t1 -c{conns}, "
      "origin nginx (no gzip) + proxy on cpu0, wrk on cpu1")
print()
print("| proxy | req/s | uncompressed MB/s | proxy CPU % | proxy CPU ms/req | gzip bytes | VmHWM MB |")
print("|---|---|---|---|---|---|---|")
med, cms = {}, {}
for t in ("nginx", "davit"):
    r = [x for x in rows if x[1] == t]
    rps = [float(x[2]) for x in r]
    med[t] = statistics.median(rps)
    mbs = statistics.median(float(x[3]) for x in r)
    cpu = statistics.median(float(x[4]) for x in r)
    hwm = statistics.median(float(x[5]) for x in r) / 1024
    cpr = [float(x[4]) / 100 / float(x[2]) * 1000 for x in r if float(x[2]) > 0]
    cms[t] = statistics.median(cpr)
    gz = open(f"{base}/{t}.gzsize").read().strip()
    print(f"| {t} | {med[t]:.0f} ({min(rps):.0f}-{max(rps):.0f}) | {mbs:.1f} | {cpu:.0f} | {cms[t]:.2f} "
          f"({min(cpr):.2f}-{max(cpr):.2f}) | {gz} | {hwm:.1f} |")
print()
print(f"ratio davit/nginx: req/s {med['davit'] / med['nginx']:.2f}, CPU per request {cms['davit'] / cms['nginx']:.2f}")
EOF

#!/usr/bin/env bash
# HTTPS benchmark: davit's TLS termination next to nginx's, in one interleaved run, loopback only.
#
#   bash bench/tls.sh [--runs N (3)] [--duration S (8)] [--conns N (50)]
#
# Scenarios (wrk -t1, pinned to cpu1; origin + proxy pinned to cpu0):
#   https-keepalive   HTTPS requests/s on kept-alive connections
#   https-handshake   every request on a new connection (Connection: close): full TLS
#                     handshakes/s (wrk resumes no sessions), ECDSA P-256 certificate
#   http-keepalive    plain HTTP through the same proxies (davit's plain path must not suffer)
# Both proxies: one process/worker, TLS 1.2+1.3, the same certificate, upstream keep-alive to the
# same origin (nginx, 1 worker, 100-byte body). Per cell: median of the runs (min-max); proxy CPU
# µs per request from /proc/PID/stat. Record the table and ratios in bench/RESULTS.md.
set -uo pipefail
RUNS=3 DURATION=8 CONNS=50
while (($#)); do
  case $1 in
    --runs) RUNS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --conns) CONNS=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "tls.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
here=$(cd "$(dirname "$0")" && pwd)
DAVIT=${DAVIT_BIN:-$here/../davit}
for b in "$DAVIT" nginx wrk openssl taskset; do
  command -v "$b" >/dev/null || [[ -x $b ]] || { echo "tls.sh: $b missing: run scripts/install-deps.sh and make" >&2; exit 1; }
done
BASE=${PB_BASE:-/tmp/davit-tlsbench}
rm -rf "$BASE"; mkdir -p "$BASE"
ORIGIN=9201 NGX_TLS=9202 NGX_HTTP=9203 DV_TLS=9204 DV_HTTP=9205
declare -a PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; }
trap cleanup EXIT

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$BASE/key.pem" \
  -out "$BASE/cert.pem" -days 2 -subj /CN=bench.test -addext subjectAltName=DNS:bench.test 2>/dev/null

nginx_conf() { # name body
  mkdir -p "$BASE/$1"
  cat >"$BASE/$1/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $BASE/$1/nginx.pid;
error_log $BASE/$1/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  $2
}
EOF
}
nginx_conf origin "server { listen 127.0.0.1:$ORIGIN; keepalive_requests 100000;
    location / { return 200 'tlsbench-origin-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-0123456789abcdefghij\n'; } }"
nginx_conf proxy "upstream o { server 127.0.0.1:$ORIGIN; keepalive 64; }
  server { listen 127.0.0.1:$NGX_TLS ssl; listen 127.0.0.1:$NGX_HTTP; keepalive_requests 100000;
    ssl_certificate $BASE/cert.pem; ssl_certificate_key $BASE/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3; ssl_session_tickets on; ssl_session_cache off;
    location / { proxy_pass http://o; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }"

start() { # name cmd...
  taskset -c 0 "${@:2}" >"$BASE/$1.out" 2>&1 &
  PIDS+=($!); echo $!
}
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.05; done; return 1; }
cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
proc_tree_pids() { echo "$1"; pgrep -P "$1"; }

start origin nginx -c "$BASE/origin/nginx.conf" >/dev/null
wait_port $ORIGIN || { echo "origin did not start" >&2; exit 1; }

# The machine is shared: before each run wait (up to 30 s) until the busiest core is < 20% busy.
busiest_core() {
  local a b
  a=$(grep '^cpu[0-9]' /proc/stat); sleep 0.5; b=$(grep '^cpu[0-9]' /proc/stat)
  paste <(echo "$a") <(echo "$b") | awk '{ n = (NF) / 2; t1 = 0; t2 = 0; for (i = 2; i <= n; i++) { t1 += $i; t2 += $(i + n) }
    idle = ($(n + 5) + $(n + 6)) - ($5 + $6); busy = 100 * (1 - idle / (t2 - t1)); if (busy > m) m = busy } END { printf "%d", m }'
}
wait_quiet() { local i; for i in $(seq 60); do (($(busiest_core) < 20)) && return; done; log_noise=1; }
log_noise=0

declare -A RESULT CPU
run_one() { # target scenario run
  local target=$1 scen=$2 pid port url hdr=()
  wait_quiet
  if [[ $target == nginx ]]; then
    pid=$(start nginx-proxy nginx -c "$BASE/proxy/nginx.conf")
    [[ $scen == http-keepalive ]] && port=$NGX_HTTP || port=$NGX_TLS
  else
    pid=$(start davit "$DAVIT" proxy --workers 1 --access-log off --listen 127.0.0.1:$DV_HTTP \
      --tls-listen 127.0.0.1:$DV_TLS --cert "$BASE/cert.pem,$BASE/key.pem" --no-https-redirect \
      --route "*=127.0.0.1:$ORIGIN")
    [[ $scen == http-keepalive ]] && port=$DV_HTTP || port=$DV_TLS
  fi
  wait_port $port || { echo "$target did not start" >&2; exit 1; }
  [[ $scen == http-keepalive ]] && url=http://127.0.0.1:$port/ || url=https://127.0.0.1:$port/
  [[ $scen == https-handshake ]] && hdr=(-H "Connection: close")
  taskset -c 1 wrk -t1 -c"$CONNS" -d2s "${hdr[@]}" "$url" >/dev/null 2>&1 # warm-up
  local pids t0=0 t1=0 p
  pids=$(proc_tree_pids "$pid")
  for p in $pids; do t0=$((t0 + $(cpu_ticks "$p"))); done
  local out
  out=$(taskset -c 1 wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "${hdr[@]}" "$url" 2>&1)
  for p in $pids; do t1=$((t1 + $(cpu_ticks "$p"))); done
  local rps reqs errs
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  reqs=$(awk '/requests in/ {print $1}' <<<"$out")
  errs=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out" | tr '\n' ' ')
  local hz; hz=$(getconf CLK_TCK)
  local us; us=$(awk -v t=$((t1 - t0)) -v hz="$hz" -v n="$reqs" 'BEGIN { if (n > 0) printf "%.1f", t / hz * 1e6 / n; else print "nan" }')
  RESULT[$target,$scen]+="$rps "
  CPU[$target,$scen]+="$us "
  printf '%s %s run %s: %s req/s, %s us CPU/req %s\n' "$target" "$scen" "$3" "$rps" "$us" "$errs" >&2
  echo "$out" >"$BASE/$target-$scen-$3.wrk"
  kill "$pid"; wait "$pid" 2>/dev/null
  PIDS=("${PIDS[@]/$pid}")
}

SCENARIOS=(https-keepalive https-handshake http-keepalive)
for r in $(seq "$RUNS"); do
  for s in "${SCENARIOS[@]}"; do
    for t in davit nginx; do run_one "$t" "$s" "$r"; done
  done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END { if (NR % 2) m = a[(NR+1)/2]; else m = (a[NR/2]+a[NR/2+1])/2; printf "%.1f (%.1f-%.1f)", m, a[1], a[NR] }'; }
med() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END { if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2 }'; }
echo "## tls bench $(date -u +%Y-%m-%dT%H:%MZ): $RUNS runs x ${DURATION}s, wrk -t1 -c$CONNS, $(nginx -v 2>&1 | sed 's/.*: //'), $(openssl version | cut -d' ' -f1-2)"
((log_noise)) && echo "(some runs started while another process kept a core over 20% busy: treat the ratios with care)"
echo
echo "| scenario | davit req/s | nginx req/s | ratio | davit CPU µs/req | nginx CPU µs/req | CPU ratio |"
echo "|---|---|---|---|---|---|---|"
for s in "${SCENARIOS[@]}"; do
  dr=$(med <<<"${RESULT[davit,$s]}") nr=$(med <<<"${RESULT[nginx,$s]}")
  dc=$(med <<<"${CPU[davit,$s]}") nc=$(med <<<"${CPU[nginx,$s]}")
  printf '| %s | %s | %s | **%.2f×** | %s | %s | %.2f× |\n' "$s" "$(median <<<"${RESULT[davit,$s]}")" \
    "$(median <<<"${RESULT[nginx,$s]}")" "$(awk -v a="$dr" -v b="$nr" 'BEGIN{print a/b}')" \
    "$(median <<<"${CPU[davit,$s]}")" "$(median <<<"${CPU[nginx,$s]}")" "$(awk -v a="$dc" -v b="$nc" 'BEGIN{print a/b}')"
done

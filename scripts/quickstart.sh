#!/usr/bin/env bash
# The README's first command: installs what is missing, builds davit and runs
# its main job as far as it exists today: the reverse proxy in front of two
# example upstream replicas, showing routing and failover through it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
make -j2
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; return 1; }
p1=$(free_port); p2=$(free_port); px=$(free_port)
for n in 1 2; do
  mkdir -p "$work/replica$n"; echo "hello from replica $n" >"$work/replica$n/index.html"
  port=$([[ $n == 1 ]] && echo "$p1" || echo "$p2")
  /usr/bin/python3 -m http.server "$port" --bind 127.0.0.1 --directory "$work/replica$n" >/dev/null 2>&1 &
  pids+=($!)
  wait_port "$port"
done
./davit proxy --listen "127.0.0.1:$px" --route "app.localhost=127.0.0.1:$p1,127.0.0.1:$p2" \
  --access-log "$work/access.log" 2>"$work/proxy.log" &
pids+=($!)
wait_port "$px"
echo "davit proxy on 127.0.0.1:$px routes app.localhost to two replicas:"
for i in 1 2 3 4; do
  printf '  curl -H "Host: app.localhost" http://127.0.0.1:%s/  ->  %s\n' "$px" \
    "$(curl -s -H 'Host: app.localhost' "http://127.0.0.1:$px/")"
done
printf '  unknown host -> HTTP %s\n' "$(curl -s -o /dev/null -w '%{http_code}' -H 'Host: nope.localhost' "http://127.0.0.1:$px/")"
kill "${pids[0]}"; wait "${pids[0]}" 2>/dev/null || true
echo "replica 1 stopped; requests keep succeeding on replica 2:"
for i in 1 2 3; do
  printf '  -> %s\n' "$(curl -s -H 'Host: app.localhost' "http://127.0.0.1:$px/")"
done
echo "ok: the proxy works. 'make check' runs the test suite."

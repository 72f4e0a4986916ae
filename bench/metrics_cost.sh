#!/usr/bin/env bash
# What the request counters cost: `davit proxy` with metrics on (the default)
# and with --no-metrics, side by side with nginx in one interleaved run
# (bench/proxybench.sh does the measuring; see its --help).
#   bash bench/metrics_cost.sh [proxybench options]     e.g. --runs 5 --duration 10
# Record the table and the on/off ratio in bench/RESULTS.md (target: < 3% cost).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${DAVIT_BIN:-$here/../davit}
[[ -x $bin ]] || { echo "bench: $bin not built: run make" >&2; exit 1; }
# 1. the hot-path work alone (ns per request)
lib=$here/../build/release/libdavit.a
[[ -f $lib ]] || { echo "bench: $lib missing: run make" >&2; exit 1; }
cc -std=c17 -D_GNU_SOURCE -O2 -I"$here/../src" "$here/metrics_hotpath.c" "$lib" \
  $(pkg-config --libs yaml-0.1 sqlite3 libcrypto libssl libcurl) -lpthread -lm -o /tmp/davit-metrics-hotpath
taskset -c "${PB_SERVER_CPU:-0}" /tmp/davit-metrics-hotpath
# 2. the whole proxy, metrics on and off, next to nginx
common="proxy --listen 127.0.0.1:{PORT} --route *={UPSTREAM_HOST}:{UPSTREAM_PORT} --workers 1 --access-log off"
exec bash "$here/proxybench.sh" --scenarios plain \
  --extra "davit-metrics=$bin $common:8011" \
  --extra "davit-nometrics=$bin $common --no-metrics:8012" \
  "$@" nginx davit-metrics davit-nometrics

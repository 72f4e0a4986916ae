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
common="proxy --listen 127.0.0.1:{PORT} --route *={UPSTREAM_HOST}:{UPSTREAM_PORT} --workers 1 --access-log off"
exec bash "$here/proxybench.sh" --scenarios plain \
  --extra "davit-metrics=$bin $common:8011" \
  --extra "davit-nometrics=$bin $common --no-metrics:8012" \
  "$@" nginx davit-metrics davit-nometrics

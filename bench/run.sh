#!/usr/bin/env bash
# Side-by-side proxy benchmark: davit next to nginx, HAProxy (and Caddy when
# installed) and the origin alone, in one interleaved run on loopback
# (bench/proxybench.sh does the measuring; see its --help).
#   bash bench/run.sh [proxybench options]     e.g. --runs 3 --duration 10
# Results: a Markdown table on stdout and under /tmp/proxybench/results/latest/.
# Record the table and the ratios to nginx in bench/RESULTS.md.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${DAVIT_BIN:-$here/../davit}
[[ -x $bin ]] || { echo "bench: $bin not built: run make" >&2; exit 1; }
exec bash "$here/proxybench.sh" \
  --extra "davit=$bin proxy --listen 127.0.0.1:{PORT} --route *={UPSTREAM_HOST}:{UPSTREAM_PORT} --workers 1 --access-log off:8010" \
  "$@"

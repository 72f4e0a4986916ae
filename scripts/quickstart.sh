#!/usr/bin/env bash
# The README's first command: installs what is missing, builds davit and runs
# its main job: deploying the example stack (examples/penpal, the Penpal AI
# topology: db, auth, ai, payment, monitoring, notify and a frontend) with
# `davit up`, then shows each service answering through davit's proxy.
#   bash scripts/quickstart.sh            deploy, show, and leave it running
#   bash scripts/quickstart.sh --stop     deploy, show, then stop the daemon
# The state (database, logs) is in examples/penpal/.davit; the proxy listens on
# 127.0.0.1:8080 (DAVIT_HTTP=ADDR:PORT to change).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
make -j2
http=${DAVIT_HTTP:-127.0.0.1:8080}
davit=$PWD/davit
cd examples/penpal
"$davit" up --http "$http"
echo
echo "Each service through the proxy (curl -H 'Host: NAME.penpal.localhost' http://$http/):"
for svc in db auth ai payment monitoring notify; do
  printf '  %-11s %s\n' "$svc" "$(curl -s -H "Host: $svc.penpal.localhost" "http://$http/api/v1/health")"
done
printf '  %-11s %s\n' frontend "$(curl -s -H 'Host: penpal.localhost' "http://$http/")"
echo
"$davit" ps
echo
echo "Try: cd examples/penpal && AUTH_VERSION=2 $davit deploy   # replaces only auth, zero downtime"
echo "     $davit logs auth | $davit releases | $davit rollback | $davit down   (from examples/penpal)"
if [[ ${1:-} == --stop ]]; then
  kill "$(cat .davit/run/davit.pid)"
  echo "daemon stopped"
fi

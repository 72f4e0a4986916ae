#!/usr/bin/env bash
# Installs every Debian package davit needs to build, test and benchmark.
# Idempotent: installs only what is missing. Needs root (or sudo).
set -euo pipefail
pkgs=(
  build-essential pkg-config            # compiler, make, pkg-config
  libyaml-dev                           # compose loader
  libsqlite3-dev                        # state store
  libssl-dev                            # SHA-256 of releases (libcrypto), TLS termination (libssl), basic-auth hashes
  libcurl4-openssl-dev                  # ACME client (HTTPS to the CA), Docker Engine API, webhooks and SMTP
  pebble                                # ACME test server for the certificate tests (tests/e2e/test_acme.py)
  zlib1g-dev libbrotli-dev              # proxy: gzip and brotli response compression
  libcmocka-dev                         # unit tests
  clang libclang-rt-14-dev              # libFuzzer + sanitizer runtimes (make fuzz)
  python3 python3-pytest python3-websocket  # end-to-end tests (run with pytest-3)
  python3-brotli                        # e2e: decoding brotli responses
  curl procps iproute2 util-linux       # tests and benchmarks: curl, ps, ss, taskset
  openssl                               # e2e: openssl s_client checks TLS versions and SNI
  wrk nginx-light haproxy               # benchmarks (bench/): load generator and anchors
  libsodium-dev                         # encrypted registry credentials (libcurl above also talks to the Docker Engine API)
  docker.io iptables                    # the Docker runtime (tests start dockerd themselves when none runs)
  busybox-static                        # base images for the Docker tests (docker import; no Docker Hub)
  docker-registry apache2-utils         # private registry with htpasswd auth (tests); htpasswd
  docker-compose                        # bench/docker_deploy.py compares deploy times with it
  prometheus python3-aiosmtpd           # e2e tests: a real Prometheus scrapes /metrics; a real SMTP sink
  valgrind                              # bench/instructions.py: instructions per request
)
# The example stack (examples/penpal) runs on Node.js: any node on PATH will do.
command -v node >/dev/null || pkgs+=(nodejs)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  echo "install-deps: everything is installed"
  exit 0
fi
SUDO=
if [[ $(id -u) != 0 ]]; then SUDO=sudo; fi
echo "install-deps: installing ${missing[*]}"
# Keep package scripts from starting system services (nginx, haproxy) on :80.
policy_created=0
if [[ ! -e /usr/sbin/policy-rc.d ]]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod 755 /usr/sbin/policy-rc.d
  policy_created=1
fi
trap '((policy_created)) && $SUDO rm -f /usr/sbin/policy-rc.d' EXIT
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"

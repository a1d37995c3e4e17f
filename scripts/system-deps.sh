#!/usr/bin/env bash
# Debian packages driven for real: redis-server (the replicas' shared state), coturn (TURN),
# nginx (the gateway), and for the tests chromium (through Playwright; never a downloaded
# browser) with fonts for its screenshots. Installed when missing and running as root.
#
# make test-stressed also needs stress-ng, the competing CPU load.
#
#   system-deps.sh [test|cluster|stressed]   (make test: test; make cluster: cluster)
set -euo pipefail

missing=()
need() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || missing+=("$2"); }
need redis-server redis-server
need turnserver coturn
need nginx nginx-light
if [ "${1:-test}" = stressed ]; then
  need stress-ng stress-ng
fi
if [ "${1:-test}" != cluster ]; then
  [ -x /usr/bin/chromium ] || missing+=(chromium)
  [ -d /usr/share/fonts/truetype/dejavu ] || missing+=(fonts-dejavu-core)
fi

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "missing Debian packages: ${missing[*]}" >&2
  echo "install them with: sudo apt-get install ${missing[*]}" >&2
  exit 1
fi
echo "installing ${missing[*]} from Debian's packages"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null

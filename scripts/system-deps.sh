#!/usr/bin/env bash
# Debian packages driven for real: redis-server (the replicas' shared state), coturn (TURN),
# nginx (the gateway), and for the tests chromium (through Playwright; never a downloaded
# browser) with fonts for its screenshots, and iproute2 and nftables (a replica in a network
# namespace of a test's own, cut off from Redis: tests/faults/netns.py). Installed when missing
# and running as root.
#
# make test-stressed also needs stress-ng, the competing CPU load. Before the Python packages are
# installed (make python), what PyICU is built with: ICU's headers, pkg-config and a C++
# compiler.
#
#   system-deps.sh [test|cluster|stressed|build]   (make test: test; make cluster: cluster)
set -euo pipefail

missing=()
need() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || missing+=("$2"); }
what=${1:-test}
if [ "$what" = build ]; then
  need pkg-config pkg-config
  need g++ g++
  [ -f /usr/include/unicode/uspoof.h ] || missing+=(libicu-dev)
else
  need redis-server redis-server
  need turnserver coturn
  need nginx nginx-light
fi
if [ "$what" = stressed ]; then
  need stress-ng stress-ng
fi
if [ "$what" = test ] || [ "$what" = stressed ]; then
  [ -x /usr/bin/chromium ] || missing+=(chromium)
  [ -d /usr/share/fonts/truetype/dejavu ] || missing+=(fonts-dejavu-core)
  need ip iproute2
  need nft nftables
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

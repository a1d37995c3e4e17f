#!/usr/bin/env bash
# `make cluster`: the same topology as docker compose, on one machine without Docker. Redis, two
# replicas of each service, the nginx gateway rendered from gateway/nginx.conf.template by
# gateway/render.sh, and coturn, started together by honcho from the Procfile; Ctrl-C stops
# them all. Every variable below can be set from the environment (docs/configuration.md).
set -euo pipefail
cd "$(dirname "$0")/.."

export CLUSTER_DIR=${CLUSTER_DIR:-$PWD/.cluster}
export HOST=127.0.0.1
# nginx reaches the replicas from loopback: only it may say, in X-Forwarded-For, which client
# a connection carries.
export TRUSTED_PROXIES=${TRUSTED_PROXIES:-127.0.0.1}
export REDIS_PORT=${REDIS_PORT:-6390}
# REDIS_HA=1: no single Redis to lose. A replica and three sentinels beside the first primary,
# and every service reaching the primary through the sentinels.
export REDIS_HA=${REDIS_HA:-}
export REDIS_REPLICA_PORT=${REDIS_REPLICA_PORT:-6391}
export SENTINEL_PORT_1=${SENTINEL_PORT_1:-26391} SENTINEL_PORT_2=${SENTINEL_PORT_2:-26392}
export SENTINEL_PORT_3=${SENTINEL_PORT_3:-26393}
if [ "$REDIS_HA" = 1 ]; then
  sentinels=127.0.0.1:$SENTINEL_PORT_1,127.0.0.1:$SENTINEL_PORT_2,127.0.0.1:$SENTINEL_PORT_3
  export REDIS_URL=${REDIS_URL:-redis+sentinel://$sentinels/0/switchboard}
fi
export REDIS_URL=${REDIS_URL:-redis://127.0.0.1:$REDIS_PORT/0}
export REDIS_MAXMEMORY=${REDIS_MAXMEMORY:-256mb}
export CHAT_PORT_A=${CHAT_PORT_A:-8101} CHAT_PORT_B=${CHAT_PORT_B:-8102}
export CURSORS_PORT_A=${CURSORS_PORT_A:-8201} CURSORS_PORT_B=${CURSORS_PORT_B:-8202}
export SIGNAL_PORT_A=${SIGNAL_PORT_A:-8301} SIGNAL_PORT_B=${SIGNAL_PORT_B:-8302}
export TICKER_PORT_A=${TICKER_PORT_A:-8401} TICKER_PORT_B=${TICKER_PORT_B:-8402}
# The gateway's upstreams: space-separated replicas (gateway/render.sh makes a line of each).
export CHAT_UPSTREAMS="127.0.0.1:$CHAT_PORT_A 127.0.0.1:$CHAT_PORT_B"
export CURSORS_UPSTREAMS="127.0.0.1:$CURSORS_PORT_A 127.0.0.1:$CURSORS_PORT_B"
export SIGNAL_UPSTREAMS="127.0.0.1:$SIGNAL_PORT_A 127.0.0.1:$SIGNAL_PORT_B"
export TICKER_UPSTREAMS="127.0.0.1:$TICKER_PORT_A 127.0.0.1:$TICKER_PORT_B"
export GATEWAY_HTTPS_PORT=${GATEWAY_HTTPS_PORT:-8443}
export GATEWAY_HTTP_PORT=${GATEWAY_HTTP_PORT:-8080}
export GATEWAY_PUBLIC_HTTPS_PORT=${GATEWAY_PUBLIC_HTTPS_PORT:-$GATEWAY_HTTPS_PORT}
export GATEWAY_SOCKETS_PER_ADDRESS=${GATEWAY_SOCKETS_PER_ADDRESS:-256}
export GATEWAY_HANDSHAKES_PER_SECOND=${GATEWAY_HANDSHAKES_PER_SECOND:-20}
export GATEWAY_HANDSHAKE_BURST=${GATEWAY_HANDSHAKE_BURST:-100}
# Connections (two a client) and file descriptors of each nginx worker; within this machine's
# hard limit on open files (ulimit -Hn).
export GATEWAY_WORKER_CONNECTIONS=${GATEWAY_WORKER_CONNECTIONS:-8192}
export GATEWAY_WORKER_NOFILE=${GATEWAY_WORKER_NOFILE:-16384}
export GATEWAY_RUN_DIR=$CLUSTER_DIR/nginx
# nginx's workers run as whoever starts the cluster (as root they would otherwise be "nobody",
# who cannot read web/ in a checkout only its owner may enter, such as one made by mktemp -d).
export GATEWAY_USER=${GATEWAY_USER:-$(id -un)}
export GATEWAY_CONFIG=$GATEWAY_RUN_DIR/nginx.conf
export NGINX_MIME_TYPES=${NGINX_MIME_TYPES:-/etc/nginx/mime.types}
export WEB_ROOT=${WEB_ROOT:-$PWD/web}
export CERT_DIR=${CERT_DIR:-$PWD/.certs}

# TURN: coturn with a secret of this cluster's own (kept in $CLUSTER_DIR), on this machine's
# first LAN address so that phones can reach it; turn/turnserver.conf denies loopback, private
# and mapped peers, as in a deployment (TURN_PEER_RULES adds rules: for tests only).
mkdir -p "$CLUSTER_DIR" "$GATEWAY_RUN_DIR"
if [ -z "${TURN_SECRET:-}" ]; then
  [ -s "$CLUSTER_DIR/turn-secret" ] || .venv/bin/python -c \
    "import secrets; print(secrets.token_hex(24))" > "$CLUSTER_DIR/turn-secret"
  TURN_SECRET=$(cat "$CLUSTER_DIR/turn-secret")
fi
export TURN_SECRET
export TURN_PORT=${TURN_PORT:-3478}
export TURN_MIN_PORT=${TURN_MIN_PORT:-49160} TURN_MAX_PORT=${TURN_MAX_PORT:-49360}
lan=$(.venv/bin/python -c "from switchboard.certs import lan_addresses as a; print(next((str(i) for i in a() if i.version == 4), '127.0.0.1'))")
export TURN_LISTEN_IP=${TURN_LISTEN_IP:-$lan}
export TURN_URLS=${TURN_URLS:-turn:$TURN_LISTEN_IP:$TURN_PORT?transport=udp}
export TURN_PEER_RULES=${TURN_PEER_RULES:-}

# The certificate: yours (TLS_CERT_FILE, TLS_KEY_FILE), or the self-signed one of `make run`.
if [ -z "${TLS_CERT_FILE:-}" ]; then
  read -r TLS_CERT_FILE TLS_KEY_FILE < <(.venv/bin/python -m switchboard.certs "$CERT_DIR")
fi
export TLS_CERT_FILE TLS_KEY_FILE

sh gateway/render.sh gateway/nginx.conf.template "$GATEWAY_CONFIG"

# Ctrl-C stops every process at once, and honcho kills what has not stopped after 5 s: a
# short drain (DRAIN_SECONDS) so that the replicas still leave Redis cleanly.
export DRAIN_SECONDS=${DRAIN_SECONDS:-1}

processes=(redis chat-a chat-b cursors-a cursors-b signal-a signal-b ticker-a ticker-b gateway turn)
if [ "$REDIS_HA" = 1 ]; then
  processes+=(redis-replica sentinel-1 sentinel-2 sentinel-3)
fi
if [ -n "${SIMULATOR_PORT:-}" ]; then
  # The ticker follows a local simulator instead of Bitstamp (demos offline; the tests).
  export TICKER_UPSTREAM_URL=ws://127.0.0.1:$SIMULATOR_PORT TICKER_REST_URL=http://127.0.0.1:$SIMULATOR_PORT
  processes+=(simulator)
fi
# CLUSTER_PROCESSES: only these of the Procfile's processes (the fault tests start the replicas
# themselves, to stop and start them one at a time, which honcho cannot); CLUSTER_ENV_FILE: where
# to write the environment every process gets (NUL-separated), for whoever starts the others.
if [ -n "${CLUSTER_PROCESSES:-}" ]; then
  read -r -a processes <<< "$CLUSTER_PROCESSES"
fi
if [ -n "${CLUSTER_ENV_FILE:-}" ]; then
  env -0 > "$CLUSTER_ENV_FILE.tmp" && mv "$CLUSTER_ENV_FILE.tmp" "$CLUSTER_ENV_FILE"
fi
echo "cluster: https://localhost:$GATEWAY_PUBLIC_HTTPS_PORT/ (Ctrl-C stops everything)"
exec .venv/bin/honcho start --no-colour -f Procfile "${processes[@]}"

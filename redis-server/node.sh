#!/bin/sh
# A Redis data node of Switchboard, as docker compose, `make cluster` and the tests start it:
# its data in DIR, kept as an append-only file written to disk every second; a memory cap that
# never evicts (names, presence and the ticker's lock must not vanish behind the services'
# backs: full, Redis refuses writes and clients are told); and, when REDIS_PRIMARY ("host port")
# is set, a replica of that primary.
#
# The role goes in DIR/node.conf, written once: Redis's own config file, which Sentinel
# rewrites at a failover, so that a node restarted keeps the role Sentinel last gave it (a
# command-line --replicaof would undo that). docs/operations.md.
#
#   node.sh DIR [redis-server options...]
set -eu
dir=$1
shift
mkdir -p "$dir"
if [ ! -s "$dir/node.conf" ]; then
  {
    echo "# Written by redis-server/node.sh; Redis (and Sentinel, through CONFIG REWRITE) keeps it."
    if [ -n "${REDIS_PRIMARY:-}" ]; then
      echo "replicaof $REDIS_PRIMARY"
    fi
  } > "$dir/node.conf"
fi
exec redis-server "$dir/node.conf" --dir "$dir" --appendonly yes --appendfsync everysec \
  --save "" --maxmemory-policy noeviction "$@"

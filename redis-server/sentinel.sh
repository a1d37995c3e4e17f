#!/bin/sh
# A Redis Sentinel of Switchboard, its state in DIR/sentinel.conf: written once from
# redis-server/sentinel.conf with the first primary ("host port"), then Sentinel's own (it records
# there which node is the primary now, and the other sentinels and replicas it has met).
#
#   sentinel.sh DIR "PRIMARY_HOST PRIMARY_PORT" [redis-server options...]
set -eu
dir=$1
primary=$2
shift 2
mkdir -p "$dir"
if [ ! -s "$dir/sentinel.conf" ]; then
  sed "s/@PRIMARY@/$primary/" "$(dirname "$0")/sentinel.conf" > "$dir/sentinel.conf"
fi
exec redis-server "$dir/sentinel.conf" --sentinel --dir "$dir" "$@"

#!/bin/sh
# Renders gateway/nginx.conf.template into an nginx.conf: the one renderer of the one template,
# used by docker compose (the nginx image runs it from /docker-entrypoint.d/) and by
# `make cluster`. POSIX sh and awk only, as the nginx image has nothing more.
#
#   render.sh [TEMPLATE [OUTPUT]]   (defaults: $GATEWAY_TEMPLATE, $GATEWAY_CONFIG)
#
# ${NAME} (upper case; not in comments) is replaced by the environment variable NAME; nginx's own $variables are
# left alone. A variable missing from the environment is an error, named. A line whose variable
# holds several space-separated values (CHAT_UPSTREAMS="127.0.0.1:8101 127.0.0.1:8102") is
# repeated once per value: that is how an upstream gets its replicas.
set -eu

template=${1:-${GATEWAY_TEMPLATE:-/etc/nginx/switchboard/nginx.conf.template}}
output=${2:-${GATEWAY_CONFIG:-/etc/nginx/nginx.conf}}
trap 'rm -f "$output.tmp"' EXIT

awk '
function fail(message) { print "render.sh: " message > "/dev/stderr"; failed = 1; exit 1 }
# Comments are copied as they are.
/^[ \t]*#/ { print; next }
{
  line = $0
  # The list variable of this line, if any: its values each make a copy of the line.
  copies = 1
  rest = line
  while (match(rest, /\$\{[A-Z_][A-Z0-9_]*\}/)) {
    name = substr(rest, RSTART + 2, RLENGTH - 3)
    if (!(name in ENVIRON)) fail("line " NR ": " name " is not set")
    count = split(ENVIRON[name], values, /[ \t]+/)
    if (count > 1) { list = name; copies = count; split(ENVIRON[name], items, /[ \t]+/) }
    rest = substr(rest, RSTART + RLENGTH)
  }
  for (i = 1; i <= copies; i++) {
    out = ""
    rest = line
    while (match(rest, /\$\{[A-Z_][A-Z0-9_]*\}/)) {
      name = substr(rest, RSTART + 2, RLENGTH - 3)
      value = (copies > 1 && name == list) ? items[i] : ENVIRON[name]
      out = out substr(rest, 1, RSTART - 1) value
      rest = substr(rest, RSTART + RLENGTH)
    }
    print out rest
  }
}
' "$template" > "$output.tmp"
mv "$output.tmp" "$output"
echo "render.sh: wrote $output from $template"

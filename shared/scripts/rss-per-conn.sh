#!/usr/bin/env bash
# rss-per-conn.sh: what one idle connection costs a server in resident
# memory. Starts the server in echo mode, reads its RSS, opens CONNS
# connections (10,000 by default) and echoes one message on each, so that
# every connection is accepted and has been served once, then reads the RSS
# again and divides.
#
#   shared/scripts/rss-per-conn.sh -- ./04-epoll-et-binary
#   shared/scripts/rss-per-conn.sh -- go run ./04-epoll-et
#   CONNS=2000 shared/scripts/rss-per-conn.sh -- ./bin -some-flag
#
# The server gets -addr 127.0.0.1:0 -mode echo after its own arguments, like
# the grader does. Needs Go (for the lab's load generator) and ss (iproute2,
# installed with apt-get if absent). Stops everything it started, on any
# exit, and gives up after a bounded time at every step.
set -euo pipefail

conns=${CONNS:-10000}
ready_timeout=45  # seconds for the ready line: `go run` compiles first
hold_timeout=180  # seconds to open and echo on every connection
settle=1          # seconds between the last echo and the reading

usage() { echo "usage: $0 -- SERVER_CMD [ARGS...]   (CONNS=N to change the 10000)" >&2; exit 2; }
[ "${1:-}" = "--" ] && shift
[ $# -gt 0 ] || usage
[[ "$conns" =~ ^[0-9]+$ ]] && [ "$conns" -ge 1 ] && [ "$conns" -le 25000 ] || { echo "CONNS=$conns: want 1 to 25000" >&2; exit 2; }

# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
build_load
# Both ends need an fd per connection, and a few spare.
raise_nofile $((conns + 1024))

start_server "$@"

rss() { awk '/^VmRSS:/ {print $2}' "/proc/$pid/status"; }
fds() { ls "/proc/$pid/fd" | wc -l; }
sleep "$settle"
rss0=$(rss) fds0=$(fds)

"$tmp/load" -addr "$addr" -idle "$conns" -size 64 >"$tmp/load.out" 2>&1 &
load_pid=$!
for _ in $(seq $((hold_timeout * 10))); do
  grep -qs '^holding' "$tmp/load.out" && break
  kill -0 "$load_pid" 2>/dev/null || { echo "the load generator failed:"; cat "$tmp/load.out"; exit 1; } >&2
  sleep 0.1
done
grep -qs '^holding' "$tmp/load.out" || { echo "$conns connections not open and echoed in ${hold_timeout}s" >&2; exit 1; }
sleep "$settle"
rss1=$(rss) fds1=$(fds)

echo "server: $* (pid $pid, $addr)"
sed -n 's/^holding/load: holding/p' "$tmp/load.out"
echo "fds:   $fds0 -> $fds1 (+$((fds1 - fds0)))"
echo "RSS:   $((rss0 / 1024)) MiB -> $((rss1 / 1024)) MiB"
awk -v a="$rss0" -v b="$rss1" -v n="$conns" \
  'BEGIN { printf "RSS per connection: %.1f KiB (%d connections)\n", (b - a) / n, n }'
echo "(the process's own memory: the kernel's socket buffers are not in RSS)"

#!/usr/bin/env bash
# syscalls-idle.sh: what a server does with nothing to do. Starts the
# server in echo mode, opens CONNS idle connections (10 by default) and
# echoes one message on each, waits for the server to settle, then counts
# its system calls for SECONDS (3 by default) with `strace -c -f` attached
# to every thread. A server blocked in epoll_wait(-1) makes none; one that
# polls on a timer makes its timer's rate.
#
#   shared/scripts/syscalls-idle.sh -- ./04-epoll-et-binary
#   SECONDS_IDLE=10 shared/scripts/syscalls-idle.sh -- go run ./02-select-poll -poller poll
#
# The server gets -addr 127.0.0.1:0 -mode echo after its own arguments, like
# the grader. Needs Go (the lab's load generator), strace and ss (installed
# with apt-get if absent). Stops everything it started, on any exit.
set -euo pipefail

conns=${CONNS:-10}
window=${SECONDS_IDLE:-3}
ready_timeout=45 # seconds for the ready line: `go run` compiles first
settle=1         # seconds after the last echo: Go's sysmon backs off within ~100 ms

usage() { echo "usage: $0 -- SERVER_CMD [ARGS...]   (CONNS=10 SECONDS_IDLE=3 to change)" >&2; exit 2; }
[ "${1:-}" = "--" ] && shift
[ $# -gt 0 ] || usage
[[ "$conns" =~ ^[0-9]+$ ]] && [ "$conns" -ge 1 ] && [ "$conns" -le 5000 ] || { echo "CONNS=$conns: want 1 to 5000" >&2; exit 2; }
[[ "$window" =~ ^[0-9]+$ ]] && [ "$window" -ge 1 ] && [ "$window" -le 60 ] || { echo "SECONDS_IDLE=$window: want 1 to 60" >&2; exit 2; }

# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
need strace strace
build_load
start_server "$@"

# Held for longer than the window; cleanup ends it.
"$tmp/load" -addr "$addr" -idle "$conns" -duration "$((window + 60))s" >"$tmp/load.out" 2>&1 &
load_pid=$!
for _ in $(seq 300); do # up to 30 s to open and echo
  grep -qs '^holding' "$tmp/load.out" && break
  kill -0 "$load_pid" 2>/dev/null || { echo "the load generator failed:"; cat "$tmp/load.out"; exit 1; } >&2
  sleep 0.1
done
grep -qs '^holding' "$tmp/load.out" || { echo "$conns idle connections not open in 30s" >&2; exit 1; }
sleep "$settle"

# -f with -p attaches every thread of the process. Attaching interrupts
# each thread's current wait: the waits restart, and Go's sysmon, woken,
# makes one round of calls (futex, nanosleep, a look at the CPU limit)
# within a millisecond. That burst is strace's doing, not the server's, so
# the count starts one second after attaching, and the burst is listed
# apart. Only a call's start counts, not strace's "resumed" line for it.
skip=1
timeout -s INT "$((window + skip))" strace -f -ttt -p "$pid" -o "$tmp/strace.out" 2>"$tmp/strace.err" || true

echo "server: $* (pid $pid, $addr)"
sed -n 's/^holding/load: holding/p' "$tmp/load.out"
awk -v skip="$skip" -v w="$window" '
  $3 ~ /^<\.\.\./ || $3 ~ /^\+\+\+/ || $3 ~ /^---/ { next }
  { ts = $2 + 0; if (t0 == "") t0 = ts; name = $3; sub(/\(.*/, "", name) }
  ts < t0 + skip { early++; next }
  ts < t0 + skip + w { n[name]++; total++ }
  END {
    printf "syscalls in %ds idle: %d  (counted from %ds after strace attached; %d in that first second, strace'"'"'s doing)\n", w, total, skip, early
    for (k in n) printf "  %-16s %6d  (%.1f/s)\n", k, n[k], n[k] / w | "sort -k2,2nr"
  }' "$tmp/strace.out"

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

root=$(cd "$(dirname "$0")/../.." && pwd)
need() { command -v "$1" >/dev/null || { echo "installing $2 for $1"; apt-get install -y -qq "$2" >/dev/null || { apt-get update -qq && apt-get install -y -qq "$2" >/dev/null; }; }; }
need ss iproute2
need strace strace
command -v go >/dev/null || { echo "go is needed to build the lab's load generator" >&2; exit 1; }

tmp=$(mktemp -d)
server_pid= strace_pid= load_pid=
stop() { # stop PID [SIGNAL]: signal it, wait up to 3 s, then kill it
  kill -"${2:-TERM}" "$1" 2>/dev/null || return 0
  for _ in $(seq 30); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$1" 2>/dev/null || true
}
cleanup() {
  [ -n "$strace_pid" ] && stop "$strace_pid" INT
  [ -n "$load_pid" ] && stop "$load_pid" INT
  if [ -n "$server_pid" ]; then
    kill -TERM -- "-$server_pid" 2>/dev/null || true
    for _ in $(seq 30); do kill -0 -- "-$server_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$server_pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

(cd "$root" && go build -o "$tmp/load" ./shared/cmd/load)

setsid "$@" -addr 127.0.0.1:0 -mode echo >"$tmp/server.out" 2>"$tmp/server.err" &
server_pid=$!
addr=
for _ in $(seq $((ready_timeout * 10))); do
  addr=$(sed -n 's/^listening on \(.*\)$/\1/p' "$tmp/server.out" | head -1)
  [ -n "$addr" ] && break
  kill -0 "$server_pid" 2>/dev/null || { echo "the server exited:"; cat "$tmp/server.err"; exit 1; } >&2
  sleep 0.1
done
[ -n "$addr" ] || { echo "no ready line in ${ready_timeout}s" >&2; exit 1; }
pid=$(ss -Hltnp "sport = :${addr##*:}" | sed -n 's/.*pid=\([0-9]*\).*/\1/p' | head -1)
[ -n "$pid" ] || { echo "cannot find the process listening on $addr" >&2; exit 1; }

# Held for longer than the window; cleanup ends it.
"$tmp/load" -addr "$addr" -idle "$conns" -duration "$((window + 60))s" >"$tmp/load.out" 2>&1 &
load_pid=$!
for _ in $(seq 300); do # up to 30 s to open and echo
  grep -q '^holding' "$tmp/load.out" && break
  kill -0 "$load_pid" 2>/dev/null || { echo "the load generator failed:"; cat "$tmp/load.out"; exit 1; } >&2
  sleep 0.1
done
grep -q '^holding' "$tmp/load.out" || { echo "$conns idle connections not open in 30s" >&2; exit 1; }
sleep "$settle"

# -f with -p attaches every thread of the process. Attaching interrupts
# each thread's current syscall, which then restarts: those restarts are
# strace's doing, not the server's, and are listed apart.
timeout -s INT "$window" strace -c -f -p "$pid" -o "$tmp/strace.out" 2>"$tmp/strace.err" || true

echo "server: $* (pid $pid, $addr)"
sed -n 's/^holding/load: holding/p' "$tmp/load.out"
total=$(awk '$NF == "total" { print $4 }' "$tmp/strace.out")
restarts=$(awk '$NF == "restart_syscall" { print $4 }' "$tmp/strace.out")
echo "syscalls in ${window}s idle: $(( ${total:-0} - ${restarts:-0} ))  (and ${restarts:-0} restart_syscall, from strace attaching)"
awk '/^-/ || /^%/ || NF < 5 || $NF == "total" || $NF == "restart_syscall" { next } { print $4, $NF }' "$tmp/strace.out" |
  sort -rn | awk -v w="$window" '{ printf "  %-16s %6d  (%.1f/s)\n", $2, $1, $1 / w }'

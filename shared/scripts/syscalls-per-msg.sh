#!/usr/bin/env bash
# syscalls-per-msg.sh: how many system calls a server makes per echoed
# message. Starts the server in echo mode, opens CONNS connections (50 by
# default), attaches `strace -c -f` to every thread of the server, sends
# MSGS ping-pong messages in all (20,000 by default; strace slows the
# server down many times over, so keep it modest), detaches, and prints the
# count per message, syscall by syscall.
#
#   shared/scripts/syscalls-per-msg.sh -- ./04-epoll-et-binary
#   MSGS=5000 shared/scripts/syscalls-per-msg.sh -- go run ./shared/peers/cmd/stdlib
#
# The traced run's own CONNS connects are counted too (an accept and a few
# calls each, under 1% of the total at the defaults). The server gets
# -addr 127.0.0.1:0 -mode echo after its own arguments, like the grader.
# Needs Go (the lab's load generator), strace and ss (installed with
# apt-get if absent). Stops everything it started, on any exit.
set -euo pipefail

conns=${CONNS:-50}
msgs=${MSGS:-20000}
ready_timeout=45 # seconds for the ready line: `go run` compiles first
run_timeout=300  # seconds for the traced run

usage() { echo "usage: $0 -- SERVER_CMD [ARGS...]   (CONNS=50 MSGS=20000 to change)" >&2; exit 2; }
[ "${1:-}" = "--" ] && shift
[ $# -gt 0 ] || usage
[[ "$conns" =~ ^[0-9]+$ ]] && [ "$conns" -ge 1 ] && [ "$conns" -le 5000 ] || { echo "CONNS=$conns: want 1 to 5000" >&2; exit 2; }
[[ "$msgs" =~ ^[0-9]+$ ]] && [ "$msgs" -ge "$conns" ] && [ "$msgs" -le 10000000 ] || { echo "MSGS=$msgs: want CONNS to 10000000" >&2; exit 2; }

# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
need strace strace
build_load
start_server "$@"

# An untraced run first, so the traced one finds the server warm: its
# threads started, its buffers grown.
"$tmp/load" -addr "$addr" -conns "$conns" -count "$((conns * 10))" >/dev/null

# -f with -p attaches every thread of the process, and follows new ones.
strace -c -f -p "$pid" -o "$tmp/strace.out" 2>"$tmp/strace.err" &
strace_pid=$!
for _ in $(seq 100); do # up to 10 s for strace to attach
  grep -q 'attached' "$tmp/strace.err" 2>/dev/null && break
  sleep 0.1
done
grep -q 'attached' "$tmp/strace.err" || { echo "strace did not attach:"; cat "$tmp/strace.err"; exit 1; } >&2

timeout "$run_timeout" "$tmp/load" -addr "$addr" -conns "$conns" -count "$msgs" -json >"$tmp/load.json" &
load_pid=$!
wait "$load_pid" || { echo "the load run failed:"; cat "$tmp/load.json"; exit 1; } >&2
load_pid=
stop "$strace_pid" INT
wait "$strace_pid" 2>/dev/null || true
strace_pid=

echo "server: $* (pid $pid, $addr)"
echo "load:   $conns connections, ping-pong, 64 B, $msgs messages"
# strace -c: % time, seconds, usecs/call, calls, [errors,] syscall
total=$(awk '$NF == "total" { print $4 }' "$tmp/strace.out")
awk -v m="$msgs" -v t="${total:-0}" 'BEGIN { printf "syscalls per message: %.2f (%d in all)\n", t / m, t }'
awk '/^-/ || /^%/ || NF < 5 || $NF == "total" { next } { print $4, $NF }' "$tmp/strace.out" |
  sort -rn | awk -v m="$msgs" '{ printf "  %-16s %7.3f per message  (%d)\n", $2, $1 / m, $1 }'

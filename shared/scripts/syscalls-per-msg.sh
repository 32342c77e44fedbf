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
  [ -n "$load_pid" ] && stop "$load_pid" INT
  [ -n "$strace_pid" ] && stop "$strace_pid" INT
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

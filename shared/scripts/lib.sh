# lib.sh: what every probe in this folder does the same way, sourced by
# each: install a missing tool, build the load generator, start the server
# under test with the grader's argv (its own arguments, then -addr
# 127.0.0.1:0 -mode echo) in a session of its own, wait for its ready line,
# find the process that owns the listener, and stop everything on any exit.
#
# The sourcing script sets ready_timeout first; cleanup also ends its
# load_pid and strace_pid, if set, before the server.

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
tmp=$(mktemp -d)
server_pid= load_pid= strace_pid=

# need CMD PACKAGE: install PACKAGE with apt-get when CMD is missing.
need() {
  command -v "$1" >/dev/null && return 0
  echo "installing $2 for $1"
  apt-get install -y -qq "$2" >/dev/null || { apt-get update -qq && apt-get install -y -qq "$2" >/dev/null; }
}

# stop PID [SIGNAL]: signal it, wait up to 3 s, then kill it.
stop() {
  kill -"${2:-TERM}" "$1" 2>/dev/null || return 0
  for _ in $(seq 30); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$1" 2>/dev/null || true
}

cleanup() {
  local p
  for p in $strace_pid $load_pid; do stop "$p" INT; done
  if [ -n "$server_pid" ]; then
    kill -TERM -- "-$server_pid" 2>/dev/null || true
    for _ in $(seq 30); do kill -0 -- "-$server_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$server_pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# raise_nofile N: raise the shell's open-files limit (and so its
# children's) to N, or as far as the hard limit allows; fail below N.
raise_nofile() {
  if [ "$(ulimit -n)" -lt "$1" ]; then
    ulimit -n "$1" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
  fi
  [ "$(ulimit -n)" -ge "$1" ] || { echo "open files limited to $(ulimit -n), need $1" >&2; exit 1; }
}

# results_setup: what ladder.sh and targets.sh share: out (OUT, or
# docs/results), made and absolute; go present; an fd limit for 10,000
# connections in the load generator and in the server, plus a few. Run
# from the repository root.
results_setup() {
  out=${OUT:-$root/docs/results}
  mkdir -p "$out"
  out=$(cd "$out" && pwd)
  command -v go >/dev/null || { echo "go is needed to build compare and the servers" >&2; exit 1; }
  raise_nofile $((10000 + 1024))
}

# build_load: the lab's load generator, as $tmp/load.
build_load() {
  command -v go >/dev/null || { echo "go is needed to build the lab's load generator" >&2; exit 1; }
  (cd "$root" && go build -o "$tmp/load" ./shared/cmd/load)
}

# start_server CMD [ARGS...]: start it, wait for its ready line, and set
# addr (HOST:PORT) and pid (the process holding the listener, not a `go
# run` or shell wrapper).
start_server() {
  need ss iproute2
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
}

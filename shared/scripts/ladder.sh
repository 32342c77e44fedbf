#!/usr/bin/env bash
# ladder.sh: the chapter ladder. Every chapter and model, and the peers
# (stdlib, gnet, the C epoll server), under the same echo load (64 B
# messages, ping-pong) at 1, 100, 1,000 and 10,000 connections, through the
# compare command: interleaved rounds, each server a fresh process per round,
# medians. A server that cannot serve a level by design is not run there;
# its cell names the harness scenario that proves where it stops.
#
#   shared/scripts/ladder.sh                      # writes docs/results/ladder*
#   LEVELS="1 100" ROUNDS=5 DURATION=5s shared/scripts/ladder.sh
#   OUT=/tmp/ladder shared/scripts/ladder.sh
#
# Writes, under OUT (docs/results by default): ladder-N.md and ladder-N.svg
# for each level N (compare's own table and chart: msgs/s, p99 and the
# server's CPU per message, ratios to stdlib), and ladder.md, the ladder
# itself: one row per server, msgs/s and CPU per message at every level.
# Takes about 12 minutes at the defaults on 2 CPUs. Run it on a quiet
# machine: every figure is a ratio to another server of the same run, and
# other work on the machine moves them anyway.
set -euo pipefail

levels=${LEVELS:-"1 100 1000 10000"}
rounds=${ROUNDS:-3}
duration=${DURATION:-2s}
warmup=${WARMUP:-1s}

cd "$(dirname "$0")/../.."
# shellcheck source=lib.sh
source shared/scripts/lib.sh # $root, $tmp (removed on exit), results_setup
results_setup

go build -o "$tmp/compare" ./shared/peers/cmd/compare

# Every server of the ladder, in the table's order, as compare takes them.
servers=(
  "01-blocking -model serial"
  "01-blocking -model thread"
  "02-select-poll -poller select"
  "02-select-poll -poller poll"
  "03-epoll-lt"
  "04-epoll-et"
  "05-wakeup-fd"
  "06-reactor-pool -model loops"
  "06-reactor-pool -model queue"
  "07-send-buffer -model loops"
  "07-send-buffer -model queue"
  "stdlib"
  "gnet"
  "c-epoll"
)

# stops SERVER LEVEL prints why SERVER is not run at LEVEL connections (a
# scenario of the harness that shows it, and what it shows), or nothing.
stops() {
  case "$1" in
  "01-blocking -model serial")
    [ "$2" -gt 1 ] && echo "stops: \`concurrent\` stall (one client at a time)" ;;
  "01-blocking -model thread")
    [ "$2" -gt 1000 ] && echo "not run (an OS thread per client)" ;;
  "02-select-poll -poller select")
    [ "$2" -gt 1000 ] && echo "stops: \`many\` refused (fds past 1023)" ;;
  "02-select-poll -poller poll")
    [ "$2" -gt 1000 ] && echo "not run (poll scans every fd: 18 s to accept 10,000, 03's \`BenchmarkIdleCrowd\`)" ;;
  esac
  return 0
}

# limit SERVER prints the harness scenario a server fails whatever the
# level: the ladder's ping-pong clients all read, so it never shows there.
limit() {
  case "$1" in
  "01-blocking -model serial") echo "\`concurrent\`, \`many\`, \`pipeline\`, \`idle\`: stall (one client at a time)" ;;
  "02-select-poll -poller select") echo "\`many\`: refused (fds past 1023); \`slow-reader\`: stall" ;;
  02-select-poll* | 03-epoll-lt | 04-epoll-et | 05-wakeup-fd | 06-reactor-pool*)
    echo "\`slow-reader\`: stall (a write blocks behind a client that does not read)" ;;
  gnet) echo "\`slow-reader\`: leak (no high-water mark)" ;;
  c-epoll) echo "not graded (a benchmark peer: its writes wait, like 03-06)" ;;
  *) echo "none (stage 7 passes)" ;;
  esac
}

status=0
for n in $levels; do
  rm -f "$out/ladder-$n.md" "$out/ladder-$n.svg"
done
for n in $levels; do
  run=()
  for s in "${servers[@]}"; do
    [ -z "$(stops "$s" "$n")" ] && run+=("$s")
  done
  echo "== $n connections: ${#run[@]} servers, $rounds rounds of $duration" >&2
  "$tmp/compare" -conns "$n" -rounds "$rounds" -duration "$duration" -warmup "$warmup" \
    -baseline stdlib -o "$out/ladder-$n.md" -svg "$out/ladder-$n.svg" "${run[@]}" || status=$?
done

# cell FILE SERVER FIELD: one figure of a row of compare's table (2 msgs/s,
# 4 p99, 6 CPU/msg, 8 errors), or nothing.
cell() {
  [ -f "$1" ] || return 0
  awk -F' [|] ' -v s="\`$2\`" -v f="$3" '
    { label = $1; sub(/^[|] /, "", label); sub(/ [(]base[)]$/, "", label) }
    label == s { v = $f; sub(/ [|]$/, "", v); print v; exit }' "$1"
}

# The table takes every level that has a table under OUT, so that levels
# run one at a time (LEVELS=10000 after the others) still make one ladder.
levels=
for n in 1 100 1000 10000; do
  [ -f "$out/ladder-$n.md" ] && levels="$levels $n"
done
levels=${levels# }
{
  echo "# The chapter ladder"
  echo
  echo "Echo, 64 B messages, ping-pong; $rounds interleaved rounds of $duration per server"
  echo "(after $warmup of warm-up), each a fresh process; medians. Not pinned: server and"
  echo "load generator share the machine's $(nproc) CPUs. $(uname -sr), $(go env GOVERSION)."
  echo "Command: \`shared/scripts/ladder.sh\` (LEVELS=\"$levels\" ROUNDS=$rounds DURATION=$duration WARMUP=$warmup)."
  echo "Each level's own table, with p99 and the ratios to stdlib: ladder-N.md; its chart: ladder-N.svg."
  echo
  printf "| server |"
  for n in $levels; do printf " msgs/s @ %s |" "$n"; done
  for n in $levels; do printf " CPU/msg @ %s |" "$n"; done
  echo " fails (harness scenario) |"
  printf "|---|"
  for n in $levels; do printf -- "---:|---:|"; done
  echo "---|"
  for s in "${servers[@]}"; do
    printf "| \`%s\` |" "$s"
    for field in 2 6; do
      for n in $levels; do
        why=$(stops "$s" "$n")
        v=$(cell "$out/ladder-$n.md" "$s" "$field")
        errs=$(cell "$out/ladder-$n.md" "$s" 8)
        if [ -n "$why" ]; then
          v=$why
        elif [ -z "$v" ]; then
          v="failed (see ladder-$n.md)"
        elif [ "${errs:-0}" != 0 ]; then
          v="$v ($errs errors)"
        fi
        printf " %s |" "$v"
      done
    done
    printf " %s |\n" "$(limit "$s")"
  done
} >"$out/ladder.md"
echo "ladder: wrote $out/ladder.md" >&2
exit "$status"

#!/usr/bin/env bash
# targets.sh: 07-send-buffer against the peers (stdlib, gnet, the C epoll
# server), figure by figure, for the performance issue's targets:
#
#   - server CPU per echoed message, msgs/s and p99: the compare command,
#     64 B ping-pong at 1, 100 and 1,000 connections, 4 KiB ping-pong at 100
#     and 1,000, 64 B pipelined at depth 16 over 100, each pinned (server on
#     one CPU, load generator on the other) and not;
#   - RSS per idle connection at 10,000 (rss-per-conn.sh), system calls per
#     message at 50 connections (syscalls-per-msg.sh) and while idle
#     (syscalls-idle.sh), for all four;
#   - 07's allocations per message (its own BenchmarkEcho, -benchmem) and a
#     CPU profile of that benchmark (pprof -top).
#
#   shared/scripts/targets.sh                     # writes docs/results/targets*
#   ROUNDS=5 DURATION=5s shared/scripts/targets.sh
#   STEPS="compare probes" OUT=/tmp/t shared/scripts/targets.sh
#
# Writes under OUT (docs/results by default): peers-SHAPE-PIN.md and .svg
# (compare's tables and charts), probes.txt (the probes' own output),
# bench-echo.txt and profile-top.txt, and targets.md: each target, 07's
# figure, the ratio the target is about, and whether it is met. About 15
# minutes at the defaults on 2 CPUs; run it on a quiet machine.
set -euo pipefail

steps=${STEPS-"compare probes bench"}
rounds=${ROUNDS:-3}
duration=${DURATION:-2s}
warmup=${WARMUP:-1s}

cd "$(dirname "$0")/../.."
# shellcheck source=lib.sh
source shared/scripts/lib.sh # $root, $tmp (removed on exit), results_setup
results_setup
command -v cc >/dev/null || { echo "cc is needed to build the C epoll server" >&2; exit 1; }

# STEPS="" only rewrites targets.md from the files already there.
if [[ " $steps " == *" compare "* ]]; then
  go build -o "$tmp/compare" ./shared/peers/cmd/compare
fi
if [[ " $steps " == *" probes "* ]]; then
  go build -o "$tmp/07" ./07-send-buffer
  go build -o "$tmp/stdlib" ./shared/peers/cmd/stdlib
  go build -o "$tmp/gnet" ./shared/peers/cmd/gnet
  cc -O2 -o "$tmp/c-epoll" shared/peers/cmd/compare/c/epoll_echo.c
fi

# The four servers, as compare names them and as the probes run them.
# 07 runs with one loop: on 2 CPUs that the load generator shares, a
# second loop costs about twice the CPU per message (fewer events per
# epoll_wait, more sleeps and wakes); pinned to one CPU, it has one loop
# anyway. LOOPS07 changes it.
loops07=${LOOPS07:-1}
labels=(07-send-buffer stdlib gnet c-epoll)
# compare's name for 07, its flags included: the label of its table rows.
s07="07-send-buffer -loops $loops07"
bins=("$tmp/07" "$tmp/stdlib" "$tmp/gnet" "$tmp/c-epoll")

# shapes: name, then compare's flags.
shapes=(
  "64B-c1|-size 64 -conns 1"
  "64B-c100|-size 64 -conns 100"
  "64B-c1000|-size 64 -conns 1000"
  "4KiB-c100|-size 4096 -conns 100"
  "4KiB-c1000|-size 4096 -conns 1000"
  "64B-d16-c100|-size 64 -depth 16 -conns 100"
)

status=0
if [[ " $steps " == *" compare "* ]]; then
  for pin in unpinned pinned; do
    pinflag=()
    [ "$pin" = pinned ] && pinflag=(-pin)
    for sh in "${shapes[@]}"; do
      name=${sh%%|*}
      # One connection is for msgs/s and p99, which are quoted unpinned.
      [ "$name" = 64B-c1 ] && [ "$pin" = pinned ] && continue
      # shellcheck disable=SC2206 # the flags are words
      flags=(${sh#*|})
      echo "== $name $pin" >&2
      "$tmp/compare" "${pinflag[@]}" "${flags[@]}" -rounds "$rounds" -duration "$duration" -warmup "$warmup" \
        -baseline stdlib -o "$out/peers-$name-$pin.md" -svg "$out/peers-$name-$pin.svg" "$s07" "${labels[@]:1}" || status=$?
    done
  done
fi

if [[ " $steps " == *" probes "* ]]; then
  : >"$out/probes.txt"
  for i in "${!labels[@]}"; do
    for probe in rss-per-conn syscalls-per-msg syscalls-idle; do
      echo "== ${labels[$i]} $probe" | tee -a "$out/probes.txt" >&2
      # The probes print the binary's temporary path: name it instead.
      args=()
      [ "$i" -eq 0 ] && args=(-loops "$loops07")
      CONNS= "shared/scripts/$probe.sh" -- "${bins[$i]}" "${args[@]}" 2>&1 | sed "s|$tmp/[a-z0-9-]*|${labels[$i]}|g" |
        tee -a "$out/probes.txt" >&2 || status=$?
    done
  done
fi

if [[ " $steps " == *" bench "* ]]; then
  # -o keeps the test binary out of the chapter's folder.
  go test -run='^$' -bench='^BenchmarkEcho$' -benchtime=300000x -benchmem -count=1 \
    -cpuprofile "$tmp/cpu.out" -o "$tmp/07.test" ./07-send-buffer >"$out/bench-echo.txt" 2>&1 || status=$?
  go tool pprof -top -nodecount=40 "$tmp/07.test" "$tmp/cpu.out" >"$out/profile-top.txt" 2>&1 || status=$?
fi

# --- targets.md: each target against the tables above. ---

# fig FILE SERVER FIELD: a figure of a row of compare's table, as a number:
# 2 msgs/s, 4 p99 in µs, 6 CPU/msg in µs, 8 errors.
fig() {
  [ -f "$1" ] || return 0
  awk -F' [|] ' -v s="\`$2\`" -v f="$3" '
    function us(v,   a) { split(v, a, " "); if (a[2] == "ms") return a[1] * 1000; if (a[2] == "ns") return a[1] / 1000; if (a[2] == "s") return a[1] * 1e6; return a[1] + 0 }
    { label = $1; sub(/^[|] /, "", label); sub(/ [(]base[)]$/, "", label) }
    label == s { v = $f; sub(/ [|]$/, "", v); gsub(/,/, "", v); if (f == 4 || f == 6) v = us(v); print v; exit }' "$1"
}
# probe SERVER PROBE PATTERN: the number after PATTERN in the output of
# SERVER's PROBE (rss-per-conn, syscalls-per-msg, syscalls-idle).
probe() {
  awk -v s="== $1 $2" -v p="$3" '
    $0 == s { on = 1; next } /^== / { on = 0 }
    on && index($0, p) { rest = substr($0, index($0, p) + length(p)); split(rest, a, " "); print a[1]; exit }' "$out/probes.txt" 2>/dev/null
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b + 0 == 0) print "-"; else printf "%.2f", a / b }'; }
check() { awk -v r="$1" -v op="$2" -v t="$3" 'BEGIN { if (r == "-" || r == "") { print "not measured"; exit }
  ok = (op == "<=") ? (r + 0 <= t + 0) : (r + 0 >= t + 0); print (ok ? "met" : "missed") }'; }

{
  echo "# 07-send-buffer against the peers: the issue's targets"
  echo
  echo "$(nproc) CPUs, $(uname -sr), $(go env GOVERSION). Command: \`shared/scripts/targets.sh\`"
  echo "(ROUNDS=$rounds DURATION=$duration WARMUP=$warmup). compare: interleaved rounds, each server a fresh"
  echo "process per round, medians; CPU/msg is the server's own user+system time per echoed message."
  echo "07 runs as \`$s07\` (-model loops): on 2 CPUs shared with the load generator a second loop"
  echo "costs about twice the CPU per message; pinned, 07 has one CPU and so one loop by default anyway."
  echo
  echo "## CPU per echoed message"
  echo
  echo "Target: 07 at most 0.90 of the lower of stdlib's and gnet's, and at most 1.10 of C's."
  echo
  echo "| load | pinned | 07 | stdlib | gnet | c-epoll | 07 / min(stdlib, gnet) | 07 / C | target |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|---|"
  for sh in "${shapes[@]}"; do
    name=${sh%%|*}
    [ "$name" = 64B-c1 ] && continue
    for pin in unpinned pinned; do
      f="$out/peers-$name-$pin.md"
      c7=$(fig "$f" "$s07" 6) cs=$(fig "$f" stdlib 6) cg=$(fig "$f" gnet 6) cc=$(fig "$f" c-epoll 6)
      lo=$(awk -v a="$cs" -v b="$cg" 'BEGIN { if (a == "" || b == "") print ""; else print (a < b ? a : b) }')
      r1=$(ratio "$c7" "$lo") r2=$(ratio "$c7" "$cc")
      a=$(check "$r1" "<=" 0.90) b=$(check "$r2" "<=" 1.10)
      verdict=$([ "$a" = met ] && [ "$b" = met ] && echo met || echo "missed")
      [ "$a" = "not measured" ] && verdict="not measured"
      u() { [ -n "$1" ] && echo "$1 µs" || echo -; }
      echo "| $name | $pin | $(u "$c7") | $(u "$cs") | $(u "$cg") | $(u "$cc") | $r1 | $r2 | $verdict |"
    done
  done
  echo
  echo "## msgs/s (64 B ping-pong, not pinned) and p99 at one connection"
  echo
  echo "Targets: 07's msgs/s at least both Go peers'; its p99 at 1 connection no worse than stdlib's."
  echo
  echo "| connections | 07 msgs/s | stdlib | gnet | c-epoll | 07 / max(stdlib, gnet) | target |"
  echo "|---:|---:|---:|---:|---:|---:|---|"
  for n in 1 100 1000; do
    f="$out/peers-64B-c$n-unpinned.md"
    m7=$(fig "$f" "$s07" 2) ms=$(fig "$f" stdlib 2) mg=$(fig "$f" gnet 2) mc=$(fig "$f" c-epoll 2)
    hi=$(awk -v a="$ms" -v b="$mg" 'BEGIN { if (a == "" || b == "") print ""; else print (a > b ? a : b) }')
    r=$(ratio "$m7" "$hi")
    echo "| $n | ${m7:--} | ${ms:--} | ${mg:--} | ${mc:--} | $r | $(check "$r" ">=" 1.00) |"
  done
  f="$out/peers-64B-c1-unpinned.md"
  p7=$(fig "$f" "$s07" 4) ps=$(fig "$f" stdlib 4) pg=$(fig "$f" gnet 4) pc=$(fig "$f" c-epoll 4)
  r=$(ratio "$p7" "$ps")
  echo
  echo "p99 at 1 connection: 07 ${p7:--} µs, stdlib ${ps:--} µs, gnet ${pg:--} µs, c-epoll ${pc:--} µs;"
  echo "07 / stdlib = $r: $(check "$r" "<=" 1.00)."
  echo
  echo "## The probes (one run each; their output in probes.txt)"
  echo
  echo "Targets: RSS per idle connection at most 0.3 KiB; at most 2.2 system calls per message, of"
  echo "which futex and nanosleep (Go's runtime) at most 0.1; 0 system calls while idle."
  echo
  echo "| server | RSS per idle conn (10,000), KiB | syscalls/msg (50 conns) | read | write | epoll_pwait | futex | nanosleep | syscalls in 3 s idle |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
  for s in "${labels[@]}"; do
    # strace -c lists only the calls made: none listed is 0, once the
    # probe ran at all.
    pm() {
      local v; v=$(probe "$s" syscalls-per-msg "$1")
      [ -z "$v" ] && [ -n "$(probe "$s" syscalls-per-msg "syscalls per message:")" ] && v=0
      echo "$v"
    }
    echo "| \`$s\` | $(probe "$s" rss-per-conn "RSS per connection:") | $(pm "syscalls per message:") |" \
      "$(pm " read ") | $(pm " write ") | $(pm " epoll_pwait ") | $(pm " futex ") | $(pm " nanosleep ") |" \
      "$(probe "$s" syscalls-idle "idle:") |"
  done
  s=07-send-buffer
  rss=$(probe $s rss-per-conn "RSS per connection:") spm=$(probe $s syscalls-per-msg "syscalls per message:")
  rt=$(awk -v a="$(pm " futex ")" -v b="$(pm " nanosleep ")" 'BEGIN { if (a == "" && b == "") print "-"; else printf "%.3f", a + b }')
  idle=$(probe $s syscalls-idle "idle:")
  echo
  echo "07: RSS per idle connection ${rss:--} KiB (target 0.3: $(check "$rss" "<=" 0.3)); ${spm:--} system calls"
  echo "per message (target 2.2: $(check "$spm" "<=" 2.2)), futex + nanosleep $rt (target 0.1: $(check "$rt" "<=" 0.1));"
  echo "${idle:--} system calls in 3 s idle (target 0: $(check "$idle" "<=" 0))."
  echo
  echo "## Allocations per message"
  echo
  echo "Target: 0. \`go test -run='^\$' -bench='^BenchmarkEcho\$' -benchtime=300000x -benchmem -count=1 ./07-send-buffer\`:"
  echo
  echo '```text'
  grep '^BenchmarkEcho' "$out/bench-echo.txt" 2>/dev/null || echo "(not run)"
  echo '```'
} >"$out/targets.md"
echo "targets: wrote $out/targets.md" >&2
exit "$status"

#!/usr/bin/env bash
# flaky.sh: run the README's test command N times and list every test and
# every harness scenario that ever failed, with how often. Optionally beside
# CPU-bound processes, to see what a loaded machine breaks.
#
#   shared/scripts/flaky.sh                 # 5 runs of go test -race reactorlab/...
#   RUNS=20 HOGS=2 shared/scripts/flaky.sh  # 20 runs beside two busy loops
#   RUNS=10 shared/scripts/flaky.sh reactorlab/07-send-buffer   # one package
#
# Each run is bounded (RUN_TIMEOUT, 20 minutes by default); the busy loops
# and any run still going are stopped on exit. The logs stay in a folder
# the last line names.
set -euo pipefail

runs=${RUNS:-5}
hogs=${HOGS:-0}
run_timeout=${RUN_TIMEOUT:-1200}
[[ "$runs" =~ ^[0-9]+$ ]] && [ "$runs" -ge 1 ] && [ "$runs" -le 200 ] || { echo "RUNS=$runs: want 1 to 200" >&2; exit 2; }
[[ "$hogs" =~ ^[0-9]+$ ]] && [ "$hogs" -le 8 ] || { echo "HOGS=$hogs: want 0 to 8" >&2; exit 2; }
pkgs=("$@")
[ ${#pkgs[@]} -gt 0 ] || pkgs=(reactorlab/...)

cd "$(dirname "$0")/../.."
logs=$(mktemp -d /tmp/reactorlab-flaky.XXXXXX)
hog_pids=()
cleanup() { for p in "${hog_pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
trap 'exit 130' INT TERM
for _ in $(seq "$hogs"); do
  (while :; do :; done) &
  hog_pids+=($!)
done

failed_runs=0
for i in $(seq "$runs"); do
  start=$(date +%s)
  rc=0
  timeout "$run_timeout" go test -race -count=1 "${pkgs[@]}" >"$logs/run-$i.txt" 2>&1 || rc=$?
  [ "$rc" -eq 0 ] || failed_runs=$((failed_runs + 1))
  printf 'run %d of %d: exit %d in %ds\n' "$i" "$runs" "$rc" "$(($(date +%s) - start))"
done

echo
echo "$((runs - failed_runs)) of $runs runs passed (beside $hogs busy loops)."
# A failing test prints "--- FAIL: Name"; a failing scenario, "scenario NAME: ...".
fails=$(cat "$logs"/run-*.txt | grep -oE -- '--- FAIL: [^ ]+|scenario [a-z-]+: ' | sed 's/: $//' | sort | uniq -c | sort -rn || true)
if [ -n "$fails" ]; then
  echo "what failed (times seen across the runs):"
  echo "$fails"
fi
echo "logs: $logs"
[ "$failed_runs" -eq 0 ]

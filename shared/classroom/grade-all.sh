#!/usr/bin/env bash
# grade-all.sh: grade a folder of submissions on this machine, one after
# another, with the lab's grader. For each submission it builds the server
# (build.sh, else a Makefile, else the Go main package at its root), runs
# the stage's scenarios, keeps the grader's -json report and step log, and
# prints one line: passed, failed, and the scenarios that failed.
#
#   shared/classroom/grade-all.sh -stage 4 submissions/*
#   shared/classroom/grade-all.sh -stage 2 -o /tmp/grades -server './server -v' alice bob
#
# -stage N   the grader's stage (default 4)
# -o DIR     where the reports go, DIR/NAME.json and DIR/NAME.log (default ./grades)
# -server C  how to start a server, run in its submission's folder (default
#            ./server; a Go submission with no build.sh or Makefile is built
#            into DIR/NAME/server and started from there, its folder left as it was)
#
# The students' code runs unsandboxed, as you: grade in a throwaway VM or
# container. Exit status 0 when every submission passed, 1 when one did
# not, 2 on a usage error.
set -euo pipefail

stage=4 out=grades server=
usage() { sed -n '/^# grade-all.sh/,/^$/s/^# \{0,1\}//p' "$0" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case $1 in
    -stage) stage=${2:?}; shift 2 ;;
    -o) out=${2:?}; shift 2 ;;
    -server) server=${2:?}; shift 2 ;;
    -h|-help|--help) usage ;;
    --) shift; break ;;
    -*) echo "grade-all.sh: unknown flag $1" >&2; usage ;;
    *) break ;;
  esac
done
[ $# -gt 0 ] || usage
command -v go >/dev/null || { echo "grade-all.sh: go is needed to build the grader" >&2; exit 1; }
command -v jq >/dev/null || { echo "grade-all.sh: jq is needed to read the grader's reports (apt-get install jq)" >&2; exit 1; }

lab=$(cd "$(dirname "$0")/../.." && pwd)
mkdir -p "$out"
out=$(cd "$out" && pwd)
grade="$out/.grade"
go build -C "$lab" -o "$grade" ./shared/cmd/grade

# build NAME DIR: build a submission's server; prints the command that
# starts it, relative to DIR.
build() {
  local name=$1 dir=$2 log="$out/$1.build.log"
  if [ -f "$dir/build.sh" ]; then
    (cd "$dir" && bash build.sh) >"$log" 2>&1 || return 1
  elif [ -f "$dir/Makefile" ]; then
    make -C "$dir" >"$log" 2>&1 || return 1
  elif [ -f "$dir/go.mod" ]; then
    mkdir -p "$out/$name"
    (cd "$dir" && go build -o "$out/$name/server" .) >"$log" 2>&1 || return 1
    echo "${server:-$out/$name/server}"
    return 0
  else
    echo "no build.sh, Makefile or go.mod" >"$log"
    return 1
  fi
  echo "${server:-./server}"
}

printf '%-24s %6s %6s  %s\n' submission passed failed "failed scenarios"
failures=0
for dir in "$@"; do
  [ -d "$dir" ] || { echo "grade-all.sh: $dir is not a folder" >&2; exit 2; }
  name=$(basename "$(cd "$dir" && pwd)")
  if ! cmd=$(build "$name" "$dir"); then
    printf '%-24s %6s %6s  %s\n' "$name" - - "build failed: see $out/$name.build.log"
    failures=$((failures + 1))
    continue
  fi
  read -r -a argv <<<"$cmd"
  status=0
  (cd "$dir" && "$grade" -stage "$stage" -json -- "${argv[@]}") >"$out/$name.json" 2>"$out/$name.log" || status=$?
  if ! jq -e .scenarios "$out/$name.json" >/dev/null 2>&1; then
    printf '%-24s %6s %6s  %s\n' "$name" - - "the grader did not run (exit $status): see $out/$name.log"
    failures=$((failures + 1))
    continue
  fi
  jq -r --arg name "$name" '[$name, .passed, .failed, ([.scenarios[] | select(.passed | not) | "\(.name) [\(.kind)]"] | join(", "))] | @tsv' "$out/$name.json" |
    while IFS=$'\t' read -r n p f which; do printf '%-24s %6s %6s  %s\n' "$n" "$p" "$f" "$which"; done
  [ "$status" -eq 0 ] || failures=$((failures + 1))
done
echo "stage $stage: $# submissions, $((${#} - failures)) passed every scenario; reports in $out"
[ "$failures" -eq 0 ]

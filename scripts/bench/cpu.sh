#!/usr/bin/env bash
# CPU per message by process: runs tput.sh <mode> <rate> for 20 s and samples utime+stime of
# each process over 10 s of steady traffic. Prints µs of CPU per message for each process.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=${BENCH_WORK:-/tmp/tassis-bench}; mkdir -p "$WORK"
mode=$1; rate=$2
$ROOT/scripts/bench/tput.sh $mode $rate 1000 50 20s > $ROOT/scripts/bench/cpu-$mode-$rate.txt 2>&1 &
sleep 10
declare -A t0 names
tick=$(getconf CLK_TCK)
pids="$(pgrep -f 'target/release/tassis') $(pgrep -f 'redis-server 127.0.0.1:2')"
for p in $pids; do t0[$p]=$(awk '{print $14+$15}' /proc/$p/stat); names[$p]=$(tr '\0' ' ' < /proc/$p/cmdline | awk '{print $1" "$2" "$3}' | sed 's|$ROOT/target/release/||'); done
sleep 10
total=0
for p in $pids; do
  t1=$(awk '{print $14+$15}' /proc/$p/stat 2>/dev/null || echo ${t0[$p]})
  us=$(( (t1 - t0[$p]) * 1000000 / tick / (rate * 10) ))
  total=$((total + us))
  printf '%-45s %6d us/message\n' "${names[$p]}" "$us"
done
echo "total $total us CPU per message -> 2 cores / total = $(( 2000000 / (total>0?total:1) )) messages/s"
wait
tail -4 $ROOT/scripts/bench/cpu-$mode-$rate.txt

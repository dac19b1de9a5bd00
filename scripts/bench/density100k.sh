#!/usr/bin/env bash
# 5 gateways (one per 19.5k connections: the open-file limit is 20,000 per process) on the same
# keystore/messaging/attachments, 5 tassis-load processes holding 19,500 idle authenticated
# connections each, from distinct 127.0.k.x source addresses. Prints RSS per gateway.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=${BENCH_WORK:-/tmp/tassis-bench}; mkdir -p "$WORK"
B=$ROOT/target/release/tassis
L=$ROOT/target/release/tassis-load
cd "$WORK"
GWFLAGS="--rate-connections-per-ip off" $ROOT/scripts/bench/split.sh >/dev/null
for k in 1 2 3 4; do
  $B gateway --listen 127.0.0.1:$((8080+k)) --admin-listen 127.0.0.1:$((19190+k)) --keystore http://127.0.0.1:50051 --messaging http://127.0.0.1:50052 --attachments http://127.0.0.1:50053 --rate-connections-per-ip off > gw$k.log 2>&1 &
done
sleep 2
declare -A base
for k in 0 1 2 3 4; do
  pid=$(pgrep -f "tassis gateway --listen 127.0.0.1:$((8080+k))"); base[$k]=$(grep VmRSS /proc/$pid/status | awk '{print $2}')
done
for k in 0 1 2 3 4; do
  srcs=$(for i in 1 2 3 4 5 6 7 8; do printf '127.0.%d.%d,' $((k+10)) $i; done); srcs=${srcs%,}
  $L --url ws://127.0.0.1:$((8080+k))/api --receivers 19500 --rate 0 --duration 80s --warmup 0s --ramp 400 \
     --source-addrs "$srcs" --quiet --seed "d100k-$k" > load$k.out 2>&1 &
done
sleep 65
total=0; conns=0; growth=0
for k in 0 1 2 3 4; do
  pid=$(pgrep -f "tassis gateway --listen 127.0.0.1:$((8080+k))")
  n=$(curl -s http://127.0.0.1:$(( k==0 ? 19090 : 19190+k ))/metrics | grep 'tassis_gateway_connections{kind="authenticated"}' | awk '{print $2}')
  r=$(grep VmRSS /proc/$pid/status | awk '{print $2}')
  echo "gateway $k: $n authenticated connections, RSS $r KiB (base ${base[$k]} KiB): $(( (r-base[$k])*1024/n )) B/connection"
  conns=$((conns+n)); growth=$((growth + r - base[$k]))
done
echo "all: $conns connections, RSS growth $growth KiB = $(( growth*1024/conns )) B/connection"
wait

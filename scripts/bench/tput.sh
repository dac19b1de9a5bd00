#!/usr/bin/env bash
# Throughput/latency run: tput.sh <redis|embedded> <rate> [receivers] [senders] [duration]
# redis: keystore + messaging + attachments + gateway as 4 processes on the 3-master cluster in
# $REDIS_URL (scripts/redis-cluster.sh start prints one); embedded: tassis standalone. Rate limits off (a load generator is not a client).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=${BENCH_WORK:-/tmp/tassis-bench}; mkdir -p "$WORK"
mode=$1; rate=$2; recv=${3:-1000}; send=${4:-50}; dur=${5:-20s}
B=$ROOT/target/release/tassis; L=$ROOT/target/release/tassis-load
cd "$WORK"; pkill -f "$B"; sleep 0.5
OFF="--rate-connections-per-ip off --rate-requests-per-connection off --rate-sends-per-device off --rate-prekey-fetches-per-identity off"
if [[ $mode == redis ]]; then
  BACKFLAGS="--redis-url ${REDIS_URL:?set REDIS_URL to a redis-cluster:// URL}" GWFLAGS="$OFF" $ROOT/scripts/bench/split.sh >/dev/null
  url=ws://127.0.0.1:8080/api
else
  $B standalone --listen 127.0.0.1:8080 --admin-listen 127.0.0.1:19090 $OFF > sa.log 2>&1 &
  for i in $(seq 50); do curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:19090/readyz 2>/dev/null | grep -q 200 && break; sleep 0.2; done
  url=ws://127.0.0.1:8080/api
fi
$L --url $url --receivers $recv --senders $send --rate $rate --duration $dur --warmup 3s --source-addrs 4 \
   --seed "tput-$mode-$rate-$RANDOM" --quiet --json $ROOT/scripts/bench/tput-$mode-$rate.json

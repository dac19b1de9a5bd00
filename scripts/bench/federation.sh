#!/usr/bin/env bash
# Federation throughput/latency: federation.sh <rate> [local|federated] [receivers] [senders] [duration]
# Two `tassis standalone` deployments, a.bench and b.bench, each on its own 3-master Redis Cluster
# ($REDIS_URL_A, $REDIS_URL_B), sharing a presence directory ($PRESENCE_URL), allowlisting each
# other. Receivers register and listen at b. `federated`: the senders are at a, so every message
# crosses a -> outbox -> forwarder -> b's federation listener -> b's queue. `local`: the senders
# are at b too (the same deployments, no hop), for comparison. Rate limits off.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=${BENCH_WORK:-/tmp/tassis-bench-fed}; mkdir -p "$WORK"
rate=$1; mode=${2:-federated}; recv=${3:-1000}; send=${4:-50}; dur=${5:-20s}
B=$ROOT/target/release/tassis; L=$ROOT/target/release/tassis-load
stop() { pkill -f "$B standalone"; while pgrep -f "$B standalone" >/dev/null; do sleep 0.2; done; }
cd "$WORK"; stop
OFF="--rate-connections-per-ip off --rate-requests-per-connection off --rate-sends-per-device off --rate-prekey-fetches-per-identity off"
for d in a b; do [[ -f $d.key ]] || $B federation-keygen --out $d.key > $d.pub; done
start() { # name port admin fedport redis peer peerpub peerport
  $B standalone --listen 127.0.0.1:$2 --admin-listen 127.0.0.1:$3 $OFF --redis-url "$5" \
    --public-addr $1.bench --presence-redis-url "${PRESENCE_URL:?}" \
    --federation-listen 127.0.0.1:$4 --federation-signing-key-file $1.key \
    --federation-peers "$6.bench=$7@http://127.0.0.1:$8" > $1.log 2>&1 &
  for i in $(seq 100); do curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:$3/readyz 2>/dev/null | grep -q 200 && return; sleep 0.2; done
  echo "deployment $1 did not start" >&2; cat $1.log >&2; exit 1
}
start a 18080 19090 15054 "${REDIS_URL_A:?}" b "$(cat b.pub)" 25054
start b 28080 29090 25054 "${REDIS_URL_B:?}" a "$(cat a.pub)" 15054
senders=ws://127.0.0.1:28080/api
[[ $mode == federated ]] && senders=ws://127.0.0.1:18080/api
$L --url ws://127.0.0.1:28080/api --sender-url $senders --receivers $recv --senders $send --rate $rate \
   --duration $dur --warmup 3s --source-addrs 4 --seed "fed-$mode-$rate-$RANDOM" --quiet \
   --json "$WORK/federation-$mode-$rate.json"
curl -s http://127.0.0.1:19090/metrics | grep -E '^tassis_federation_(forwarded|queued|failed|dropped)'
stop

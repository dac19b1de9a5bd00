#!/usr/bin/env bash
# Starts keystore, messaging, attachments and one gateway (release build) on fixed local ports.
# Extra gateway flags: $GWFLAGS; extra messaging/keystore flags: $BACKFLAGS.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=${BENCH_WORK:-/tmp/tassis-bench}; mkdir -p "$WORK"
B=$ROOT/target/release/tassis
cd "$WORK"
pkill -f "$B" ; sleep 0.5
$B keystore --listen 127.0.0.1:50051 --admin-listen 127.0.0.1:19091 $BACKFLAGS > ks.log 2>&1 &
$B messaging --listen 127.0.0.1:50052 --admin-listen 127.0.0.1:19092 --keystore http://127.0.0.1:50051 $BACKFLAGS $MSFLAGS > ms.log 2>&1 &
$B attachments --listen 127.0.0.1:50053 --admin-listen 127.0.0.1:19093 > at.log 2>&1 &
sleep 1
$B gateway --listen 127.0.0.1:8080 --admin-listen 127.0.0.1:19090 --keystore http://127.0.0.1:50051 --messaging http://127.0.0.1:50052 --attachments http://127.0.0.1:50053 $GWFLAGS > gw.log 2>&1 &
for i in $(seq 50); do curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:19090/readyz 2>/dev/null | grep -q 200 && break; sleep 0.2; done
echo "gateway pid $(pgrep -f "$B gateway")"

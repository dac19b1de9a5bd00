#!/usr/bin/env bash
# The project's one test command (README "Test it"; .ci/run calls it).
#
# Runs every test of the workspace: unit tests, the backend behaviour suites (embedded and Redis
# Cluster), and the end-to-end tests against real tassis processes. The Redis tests use the cluster
# named by TASSIS_TEST_REDIS_URL; when it is unset, a 3-master cluster of real redis-server
# processes is started on free 127.0.0.1 ports for the run and stopped afterwards.
set -Eeuo pipefail
cd "$(dirname "$0")/.."

if [[ -z "${TASSIS_TEST_REDIS_URL:-}" ]]; then
  if ! command -v redis-server >/dev/null 2>&1; then
    echo "test.sh: redis-server is needed for the Redis Cluster tests (apt-get install redis-server)" >&2
    exit 1
  fi
  work=$(mktemp -d)
  cleanup() {
    local d
    # Clusters tests started for themselves (replicas, failover) that a killed test left behind.
    for d in "$work"/own/*/; do [[ -d "$d" ]] && scripts/redis-cluster.sh stop --dir "$d" >/dev/null 2>&1 || true; done
    scripts/redis-cluster.sh stop --dir "$work/cluster" >/dev/null 2>&1 || true
    rm -rf "$work"
  }
  trap cleanup EXIT
  TASSIS_TEST_REDIS_URL=$(scripts/redis-cluster.sh start --masters 3 --dir "$work/cluster")
  export TASSIS_TEST_REDIS_URL
  # Tests that need a cluster of their own (replicas, failover) start it with the same script, in
  # a fresh directory under this one (services/redis/src/testing.rs).
  export TASSIS_TEST_REDIS_CLUSTER_DIR="$work/own"
fi
echo "test.sh: Redis Cluster for tests: $TASSIS_TEST_REDIS_URL" >&2

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi

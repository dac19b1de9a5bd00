#!/usr/bin/env bash
# Start and stop a throwaway local Redis Cluster of real redis-server processes on 127.0.0.1, for
# tests and local development (DESIGN.md: tests run against a real Redis Cluster, never a stand-in).
#
#   scripts/redis-cluster.sh start [--masters N] [--replicas R] [--dir DIR] [--node-timeout MS]
#       Starts N*(1+R) nodes (N >= 3, default 3; R default 0) in DIR (default: a fresh mktemp -d),
#       creates the cluster, waits until every node reports cluster_state:ok, then prints exactly one
#       line to stdout:
#           redis-cluster://127.0.0.1:P1,127.0.0.1:P2,...     (the master seed addresses)
#       The same URL is written to DIR/url; DIR itself is reported on stderr. All other output
#       (progress, redis-cli chatter, errors) goes to stderr, so `URL=$(scripts/redis-cluster.sh start)`
#       works.
#   scripts/redis-cluster.sh stop --dir DIR
#       Shuts down every node started in DIR and removes DIR.
#   scripts/redis-cluster.sh kill-node --dir DIR --port PORT
#       Kills the node of DIR on PORT with SIGKILL, as a crash would (for fault tests); its data and
#       config stay in DIR.
#   scripts/redis-cluster.sh start-node --dir DIR --port PORT
#       Starts a stopped or killed node of DIR again from its own config (same ports, AOF and
#       nodes.conf) and waits until it answers PING. A master that was failed over rejoins as a
#       replica of the node that took over its slots.
#
# Environment:
#   REDIS_CLUSTER_PORT_RANGE  "LO-HI" to pick ports from (default: 20000 up to just below the
#                             kernel's ephemeral port range, or 20000-60000 if that leaves too few).
#   REDIS_CLUSTER_TIMEOUT     seconds to wait for each readiness step (default 30).
#   REDIS_SERVER, REDIS_CLI   binaries to use (default: redis-server / redis-cli from PATH).
#
# Safety: the script only ever talks to ports it picked itself (never 6379 or any port in use when it
# started), and `stop` only shuts down a node after checking that the process on the port is the one
# started from DIR (its config file / working directory), so a pre-existing Redis is never touched.
# It refuses to remove a DIR that it did not create (marker file DIR/.redis-cluster-sh).

set -Eeuo pipefail

# Only the final URL line may reach stdout: keep the real stdout on fd 3, send everything else
# (including the stdout of redis-cli and friends) to stderr.
exec 3>&1 1>&2

readonly PROG="redis-cluster.sh"
readonly MARKER=".redis-cluster-sh"
REDIS_SERVER="${REDIS_SERVER:-redis-server}"
REDIS_CLI="${REDIS_CLI:-redis-cli}"
TIMEOUT="${REDIS_CLUSTER_TIMEOUT:-30}"

log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() { printf '%s: error: %s\n' "$PROG" "$*" >&2; exit 1; }

usage() {
  cat >&2 <<EOF
usage: $PROG start [--masters N] [--replicas R] [--dir DIR] [--node-timeout MS]
       $PROG stop --dir DIR
       $PROG kill-node --dir DIR --port PORT
       $PROG start-node --dir DIR --port PORT

start  launches N*(1+R) redis-server nodes on free 127.0.0.1 ports (N >= 3, default 3; R default 0),
       forms a Redis Cluster and prints its URL (redis-cluster://127.0.0.1:P1,...) on stdout.
stop   shuts down the nodes started in DIR and removes DIR.
kill-node   SIGKILLs the node of DIR on PORT (a crash, for fault tests).
start-node  starts a stopped node of DIR on PORT again from its config.
EOF
}

is_uint() { [[ "$1" =~ ^[0-9]+$ ]]; }

require_redis() {
  if ! command -v "$REDIS_SERVER" >/dev/null 2>&1; then
    die "'$REDIS_SERVER' not found. Install Redis (>= 7 recommended), e.g. on Debian/Ubuntu:
    sudo apt-get install redis-server
(or set REDIS_SERVER to the redis-server binary)"
  fi
  if ! command -v "$REDIS_CLI" >/dev/null 2>&1; then
    die "'$REDIS_CLI' not found. It ships with Redis; on Debian/Ubuntu:
    sudo apt-get install redis-server     (pulls in redis-tools, which provides redis-cli)
(or set REDIS_CLI to the redis-cli binary)"
  fi
}

# rcli PORT ARGS...: redis-cli against one of our nodes; never blocks for long, never fails (prints
# nothing if the node does not answer).
rcli() {
  local port="$1" out=""; shift
  out="$(timeout 5 "$REDIS_CLI" -h 127.0.0.1 -p "$port" "$@" 2>/dev/null)" || true
  [[ -n "$out" ]] && printf '%s\n' "${out//$'\r'/}"
  return 0
}

# info_field PORT SECTION FIELD: one field of INFO (empty if the node does not answer).
info_field() {
  rcli "$1" info "$2" | sed -n "s/^$3://p" | head -n1
}

# ---------------------------------------------------------------------------------------------------
# Port selection

PORT_LO=0
PORT_HI=0
pick_port_range() {
  if [[ -n "${REDIS_CLUSTER_PORT_RANGE:-}" ]]; then
    [[ "$REDIS_CLUSTER_PORT_RANGE" =~ ^([0-9]+)-([0-9]+)$ ]] \
      || die "REDIS_CLUSTER_PORT_RANGE must look like LO-HI, got '$REDIS_CLUSTER_PORT_RANGE'"
    PORT_LO="${BASH_REMATCH[1]}"; PORT_HI="${BASH_REMATCH[2]}"
    (( PORT_LO >= 1024 && PORT_HI <= 65535 && PORT_HI - PORT_LO >= 100 )) \
      || die "REDIS_CLUSTER_PORT_RANGE must be within 1024-65535 and span at least 100 ports"
    return
  fi
  # Prefer ports below the kernel's ephemeral range: outgoing connections take their source ports
  # from that range, so a port picked there could be grabbed between our bind test and the start.
  PORT_LO=20000; PORT_HI=60000
  local eph_lo
  if read -r eph_lo _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null && is_uint "$eph_lo" \
    && (( eph_lo - 1 - PORT_LO >= 2000 )); then
    PORT_HI=$(( eph_lo - 1 ))
  fi
}

# ports_free PORT...: succeeds if every port can be bound on 127.0.0.1 right now.
ports_free() {
  if command -v python3 >/dev/null 2>&1; then
    python3 - "$@" <<'PY'
import socket, sys
for port in sys.argv[1:]:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", int(port)))  # no SO_REUSEADDR: be conservative
    except OSError:
        sys.exit(1)
    finally:
        s.close()
PY
  else
    # Fallback without python3: a port is taken if anything listens on it (any address).
    local p
    for p in "$@"; do
      if ss -Htan "( sport = :$p )" 2>/dev/null | grep -q .; then return 1; fi
    done
  fi
}

declare -A TAKEN=()   # ports already handed out in this run (client and bus ports)
PICKED=0              # result of pick_port (a global, not stdout: TAKEN must survive the call)

# pick_port: set PICKED to a random free port in [PORT_LO, PORT_HI] not yet used in this run.
pick_port() {
  local tries=0 span=$(( PORT_HI - PORT_LO + 1 )) p
  while (( tries++ < 200 )); do
    p=$(( PORT_LO + ( (RANDOM << 15) | RANDOM ) % span ))
    if [[ -z "${TAKEN[$p]:-}" ]] && ports_free "$p"; then
      TAKEN[$p]=1
      PICKED="$p"
      return 0
    fi
  done
  die "could not find a free port in $PORT_LO-$PORT_HI after 200 tries"
}

# ---------------------------------------------------------------------------------------------------
# Nodes

# write_conf NODEDIR PORT BUSPORT NODE_TIMEOUT
write_conf() {
  local dir="$1" port="$2" bus="$3" node_timeout="$4"
  cat >"$dir/redis.conf" <<EOF
# Generated by $PROG; one node of a local test cluster.
bind 127.0.0.1
port $port
cluster-port $bus
dir "$dir"
daemonize yes
pidfile "$dir/redis.pid"
logfile "$dir/redis.log"
cluster-enabled yes
cluster-config-file nodes.conf
cluster-node-timeout $node_timeout
# No RDB snapshots; the AOF keeps acknowledged writes across a node restart like a real
# deployment would (fsync once per second).
save ""
appendonly yes
appendfsync everysec
EOF
}

# node_is_ours PORT NODEDIR: the process answering on PORT was started from NODEDIR's config.
node_is_ours() {
  local cfg
  cfg="$(info_field "$1" server config_file)"
  [[ -n "$cfg" && "$cfg" == "$2/redis.conf" ]]
}

# pid_alive PID NODEDIR: PID is a live (not zombie) process running in NODEDIR. Redis chdir()s to
# its `dir`, so checking the working directory makes sure a recycled pid is never signalled.
pid_alive() {
  local pid="$1" dir="$2" stat cwd
  kill -0 "$pid" 2>/dev/null || return 1
  if [[ -r "/proc/$pid/stat" ]]; then
    stat="$(<"/proc/$pid/stat")" 2>/dev/null || return 1
    stat="${stat##*) }"                      # skip "pid (comm) "
    [[ "${stat%% *}" != "Z" ]] || return 1   # exited, waiting to be reaped
    cwd="$(readlink "/proc/$pid/cwd" 2>/dev/null || true)"
    [[ "$cwd" == "$dir" ]] || return 1
  fi
}

# node_pid NODEDIR: pid from the pidfile, if that process is alive and runs in NODEDIR.
node_pid() {
  local dir="$1" pid
  [[ -s "$dir/redis.pid" ]] || return 1
  pid="$(<"$dir/redis.pid")"
  is_uint "$pid" || return 1
  pid_alive "$pid" "$dir" || return 1
  printf '%s\n' "$pid"
}

NODE_PORT=0   # result of start_node

# start_node NODEDIR NODE_TIMEOUT: picks ports, starts the node, waits for PING; retries with fresh
# ports if the chosen ones got taken in the meantime (e.g. by a parallel run of this script).
# Sets NODE_PORT to the node's client port.
start_node() {
  local dir="$1" node_timeout="$2" attempt port bus deadline
  mkdir -p "$dir"
  for attempt in 1 2 3 4 5; do
    pick_port; port="$PICKED"
    pick_port; bus="$PICKED"
    write_conf "$dir" "$port" "$bus" "$node_timeout"
    rm -f "$dir/redis.log" "$dir/redis.pid" "$dir/nodes.conf"
    # The daemon must not inherit fd 3 (the real stdout): `URL=$(... start)` would wait on it forever.
    "$REDIS_SERVER" "$dir/redis.conf" </dev/null >/dev/null 2>&1 3>&- || true
    deadline=$(( SECONDS + TIMEOUT ))
    while (( SECONDS < deadline )); do
      if [[ "$(rcli "$port" ping)" == "PONG" ]] && node_is_ours "$port" "$dir"; then
        NODE_PORT="$port"
        return 0
      fi
      if [[ -f "$dir/redis.log" ]] \
        && grep -qE 'Address already in use|Failed listening on port|Could not create server TCP listening socket' "$dir/redis.log"; then
        log "port $port or $bus was taken meanwhile (attempt $attempt); retrying with other ports"
        break
      fi
      sleep 0.1
    done
    if (( SECONDS >= deadline )); then
      tail -n 20 "$dir/redis.log" >&2 2>/dev/null || true
      die "node in $dir did not answer PING on port $port within ${TIMEOUT}s (log above)"
    fi
  done
  die "could not start node in $dir: ports kept clashing"
}

# stop_node NODEDIR: graceful SHUTDOWN NOSAVE if the node on its port is ours; then make sure the
# process is gone (SIGTERM, then SIGKILL, via the pidfile).
stop_node() {
  local dir="$1" port pid deadline
  port="$(sed -n 's/^port //p' "$dir/redis.conf" 2>/dev/null | head -n1)"
  if is_uint "${port:-}" && node_is_ours "$port" "$dir"; then
    rcli "$port" shutdown nosave >/dev/null || true
  fi
  pid="$(node_pid "$dir")" || return 0
  deadline=$(( SECONDS + 10 ))
  while pid_alive "$pid" "$dir" && (( SECONDS < deadline )); do sleep 0.1; done
  if pid_alive "$pid" "$dir"; then
    log "node $dir (pid $pid) still running; sending SIGTERM"
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$(( SECONDS + 5 ))
    while pid_alive "$pid" "$dir" && (( SECONDS < deadline )); do sleep 0.1; done
  fi
  if pid_alive "$pid" "$dir"; then
    log "node $dir (pid $pid) ignored SIGTERM; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    deadline=$(( SECONDS + 5 ))
    while pid_alive "$pid" "$dir" && (( SECONDS < deadline )); do sleep 0.1; done
  fi
}

# stop_all DIR: replicas first (so no master waits for them, and no failover is attempted), then
# the masters.
stop_all() {
  local dir="$1" conf node port replicas=() masters=()
  for conf in "$dir"/node-*/redis.conf; do
    [[ -e "$conf" ]] || continue
    node="${conf%/redis.conf}"
    port="$(sed -n 's/^port //p' "$conf" | head -n1)"
    if is_uint "${port:-}" && [[ "$(info_field "$port" replication role)" == "slave" ]]; then
      replicas+=("$node")
    else
      masters+=("$node")
    fi
  done
  for node in ${replicas[@]+"${replicas[@]}"} ${masters[@]+"${masters[@]}"}; do
    stop_node "$node"
  done
}

# ---------------------------------------------------------------------------------------------------
# start

CREATED_DIR=""      # set when start created DIR (so it may remove it on failure)
STARTED=0           # set once nodes may be running in DIR
DIR=""

on_start_failure() {
  local rc=$?
  trap - ERR INT TERM EXIT
  if (( rc != 0 )) && [[ -n "$DIR" ]]; then
    log "start failed; cleaning up $DIR"
    if (( STARTED )); then stop_all "$DIR" || true; fi
    if [[ -n "$CREATED_DIR" ]]; then
      rm -rf -- "$DIR"
    else
      # DIR was given to us empty: leave it empty again.
      find "$DIR" -mindepth 1 -delete 2>/dev/null || true
    fi
  fi
  exit "$rc"
}

cmd_start() {
  local masters=3 replicas=0 node_timeout=5000
  while (( $# )); do
    case "$1" in
      --masters) [[ $# -ge 2 ]] || die "--masters needs a value"; masters="$2"; shift 2 ;;
      --masters=*) masters="${1#*=}"; shift ;;
      --replicas) [[ $# -ge 2 ]] || die "--replicas needs a value"; replicas="$2"; shift 2 ;;
      --replicas=*) replicas="${1#*=}"; shift ;;
      --dir) [[ $# -ge 2 ]] || die "--dir needs a value"; DIR="$2"; shift 2 ;;
      --dir=*) DIR="${1#*=}"; shift ;;
      --node-timeout) [[ $# -ge 2 ]] || die "--node-timeout needs a value"; node_timeout="$2"; shift 2 ;;
      --node-timeout=*) node_timeout="${1#*=}"; shift ;;
      -h|--help) usage; exit 0 ;;
      *) usage; die "unknown argument to start: $1" ;;
    esac
  done
  is_uint "$masters" && (( masters >= 3 )) || die "--masters must be an integer >= 3 (Redis Cluster needs at least 3 masters), got '$masters'"
  is_uint "$replicas" || die "--replicas must be an integer >= 0, got '$replicas'"
  is_uint "$node_timeout" && (( node_timeout >= 100 )) || die "--node-timeout must be milliseconds >= 100, got '$node_timeout'"
  is_uint "$TIMEOUT" && (( TIMEOUT >= 1 )) || die "REDIS_CLUSTER_TIMEOUT must be a positive integer (seconds)"
  require_redis
  command -v timeout >/dev/null 2>&1 || die "'timeout' (coreutils) is required"

  trap on_start_failure EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM

  if [[ -z "$DIR" ]]; then
    DIR="$(mktemp -d "${TMPDIR:-/tmp}/redis-cluster.XXXXXX")"
    CREATED_DIR=1
  elif [[ -e "$DIR" ]]; then
    [[ -d "$DIR" ]] || { DIR=""; die "--dir exists and is not a directory"; }
    if [[ -n "$(ls -A -- "$DIR")" ]]; then
      local d="$DIR"; DIR=""   # not ours: the failure handler must not touch it
      if [[ -e "$d/$MARKER" ]]; then
        die "$d already holds a cluster started by this script; run '$PROG stop --dir $d' first"
      fi
      die "--dir $d is not empty; give an empty or new directory"
    fi
  else
    mkdir -p -- "$DIR"
    CREATED_DIR=1
  fi
  DIR="$(cd -- "$DIR" && pwd -P)"   # absolute, symlinks resolved (matches /proc/PID/cwd)
  : >"$DIR/$MARKER"

  pick_port_range
  local total=$(( masters * (1 + replicas) )) i port ports=() addrs=()
  log "starting $total redis-server node(s) ($masters master(s), $replicas replica(s) each) in $DIR"
  log "$("$REDIS_SERVER" --version)"
  STARTED=1
  for (( i = 1; i <= total; i++ )); do
    start_node "$DIR/node-$i" "$node_timeout"
    port="$NODE_PORT"
    ports+=("$port")
    addrs+=("127.0.0.1:$port")
    log "node-$i up on 127.0.0.1:$port"
  done

  log "creating the cluster"
  # (redis-cli colours its output even when it is not a terminal: strip the escapes.)
  timeout $(( TIMEOUT * 2 )) "$REDIS_CLI" --cluster create "${addrs[@]}" \
    --cluster-replicas "$replicas" --cluster-yes </dev/null 2>&1 \
    | sed 's/\x1b\[[0-9;]*m//g' >&2 \
    || die "redis-cli --cluster create failed"

  # Ready means: every node sees the whole cluster, all slots assigned, state ok, and every replica
  # is linked to its master.
  local deadline=$(( SECONDS + TIMEOUT )) ready info
  while :; do
    ready=1
    for port in "${ports[@]}"; do
      info="$(rcli "$port" cluster info)"
      if ! grep -qx 'cluster_state:ok' <<<"$info" \
        || ! grep -qx 'cluster_slots_assigned:16384' <<<"$info" \
        || ! grep -qx "cluster_known_nodes:$total" <<<"$info"; then
        ready=0; break
      fi
      if [[ "$(info_field "$port" replication role)" == "slave" \
        && "$(info_field "$port" replication master_link_status)" != "up" ]]; then
        ready=0; break
      fi
    done
    if (( ready )); then break; fi
    (( SECONDS < deadline )) || die "cluster did not reach cluster_state:ok within ${TIMEOUT}s"
    sleep 0.2
  done

  local seeds=()
  for port in "${ports[@]}"; do
    if [[ "$(info_field "$port" replication role)" == "master" ]]; then
      seeds+=("127.0.0.1:$port")
    fi
  done
  (( ${#seeds[@]} == masters )) || die "expected $masters masters, found ${#seeds[@]}"
  local url
  url="redis-cluster://$(IFS=,; printf '%s' "${seeds[*]}")"
  printf '%s\n' "$url" >"$DIR/url"

  trap - EXIT INT TERM
  log "cluster ready: $url"
  log "stop with: $0 stop --dir $DIR"
  printf '%s\n' "$DIR" >&2   # the DIR path alone on the last stderr line, for scripts
  printf '%s\n' "$url" >&3
}

# ---------------------------------------------------------------------------------------------------
# stop

cmd_stop() {
  local dir=""
  while (( $# )); do
    case "$1" in
      --dir) [[ $# -ge 2 ]] || die "--dir needs a value"; dir="$2"; shift 2 ;;
      --dir=*) dir="${1#*=}"; shift ;;
      -h|--help) usage; exit 0 ;;
      *) usage; die "unknown argument to stop: $1" ;;
    esac
  done
  [[ -n "$dir" ]] || { usage; die "stop needs --dir DIR"; }
  [[ -d "$dir" ]] || die "no such directory: $dir"
  dir="$(cd -- "$dir" && pwd -P)"
  [[ -e "$dir/$MARKER" ]] || die "$dir was not created by '$PROG start' (no $MARKER); refusing to touch it"
  command -v "$REDIS_CLI" >/dev/null 2>&1 || log "warning: '$REDIS_CLI' not found; stopping nodes by pid only"

  stop_all "$dir"

  # Do not delete the data of a node that is somehow still alive.
  local conf node left=0
  for conf in "$dir"/node-*/redis.conf; do
    [[ -e "$conf" ]] || continue
    node="${conf%/redis.conf}"
    if node_pid "$node" >/dev/null; then
      log "node $node is still running"
      left=1
    fi
  done
  (( left == 0 )) || die "some nodes in $dir did not stop; $dir left in place"
  rm -rf -- "$dir"
  log "stopped all nodes and removed $dir"
}

# ---------------------------------------------------------------------------------------------------
# kill-node / start-node (fault tests)

NODE_DIR=""   # result of find_node

# find_node ARGS...: parses --dir DIR --port PORT and sets NODE_DIR to the node directory of DIR
# whose config listens on PORT.
find_node() {
  local dir="" port="" conf
  while (( $# )); do
    case "$1" in
      --dir) [[ $# -ge 2 ]] || die "--dir needs a value"; dir="$2"; shift 2 ;;
      --dir=*) dir="${1#*=}"; shift ;;
      --port) [[ $# -ge 2 ]] || die "--port needs a value"; port="$2"; shift 2 ;;
      --port=*) port="${1#*=}"; shift ;;
      *) usage; die "unknown argument: $1" ;;
    esac
  done
  [[ -n "$dir" && -n "$port" ]] || { usage; die "needs --dir DIR and --port PORT"; }
  is_uint "$port" || die "--port must be a port number, got '$port'"
  [[ -d "$dir" ]] || die "no such directory: $dir"
  dir="$(cd -- "$dir" && pwd -P)"
  [[ -e "$dir/$MARKER" ]] || die "$dir was not created by '$PROG start' (no $MARKER); refusing to touch it"
  for conf in "$dir"/node-*/redis.conf; do
    [[ -e "$conf" ]] || continue
    if [[ "$(sed -n 's/^port //p' "$conf" | head -n1)" == "$port" ]]; then
      NODE_DIR="${conf%/redis.conf}"
      return 0
    fi
  done
  die "no node of $dir listens on port $port"
}

cmd_kill_node() {
  find_node "$@"
  local pid deadline
  pid="$(node_pid "$NODE_DIR")" || die "the node in $NODE_DIR is not running"
  kill -KILL "$pid"
  deadline=$(( SECONDS + TIMEOUT ))
  while pid_alive "$pid" "$NODE_DIR"; do
    (( SECONDS < deadline )) || die "node $NODE_DIR (pid $pid) survived SIGKILL for ${TIMEOUT}s"
    sleep 0.05
  done
  log "killed node $NODE_DIR (pid $pid)"
}

cmd_start_node() {
  find_node "$@"
  local port deadline logged
  if node_pid "$NODE_DIR" >/dev/null; then die "the node in $NODE_DIR is already running"; fi
  require_redis
  port="$(sed -n 's/^port //p' "$NODE_DIR/redis.conf" | head -n1)"
  # (No ports_free check: connections of the killed process may linger in TIME_WAIT on the port,
  # which Redis binds over with SO_REUSEADDR; a port really taken shows in the log below.)
  logged="$(stat -c %s "$NODE_DIR/redis.log" 2>/dev/null || echo 0)"
  "$REDIS_SERVER" "$NODE_DIR/redis.conf" </dev/null >/dev/null 2>&1 3>&- || true
  deadline=$(( SECONDS + TIMEOUT ))
  until [[ "$(rcli "$port" ping)" == "PONG" ]] && node_is_ours "$port" "$NODE_DIR"; do
    if (( SECONDS >= deadline )) || tail -c +$(( logged + 1 )) "$NODE_DIR/redis.log" 2>/dev/null \
      | grep -qE 'Address already in use|Could not create server TCP listening socket'; then
      tail -n 20 "$NODE_DIR/redis.log" >&2 2>/dev/null || true
      die "node in $NODE_DIR did not answer PING on port $port within ${TIMEOUT}s (log above)"
    fi
    sleep 0.1
  done
  log "node $NODE_DIR up again on 127.0.0.1:$port"
}

# ---------------------------------------------------------------------------------------------------

main() {
  (( $# )) || { usage; exit 2; }
  local cmd="$1"; shift
  case "$cmd" in
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    kill-node) cmd_kill_node "$@" ;;
    start-node) cmd_start_node "$@" ;;
    -h|--help|help) usage ;;
    *) usage; die "unknown command: $cmd" ;;
  esac
}

main "$@"

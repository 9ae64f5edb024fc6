#!/usr/bin/env bash
# A local muster cluster in one command: nats-server with JetStream (temp store dir), one
# control node (`muster serve --nats`) and N workers (`muster worker`) on this machine,
# then the code-review example (examples/code-review) run across them with
# `muster run --server`. Prints the run's outcome, which node ran each step and how many
# steps each worker ran, then stops everything it started, by pid, whatever happens (also
# on Ctrl-C).
#
#   scripts/cluster.sh                    # 2 workers, free ports
#   scripts/cluster.sh --workers 3 --nats-port 4222 --api-port 7070
#   scripts/cluster.sh --nats-servers 3   # a 3-server JetStream cluster, 3 replicas
#   scripts/cluster.sh --keep             # leave the cluster up until Ctrl-C
#
# Options:
#   --workers N      worker processes (default 2, at most 16)
#   --nats-servers N nats-servers in one JetStream cluster (default 1, at most 5): each
#                    with its name (nats-1..), store dir and ports, routes between them
#   --nats-port P    the (first) NATS client port (default: a free one)
#   --monitor-port P the (first) nats-server's monitor port (default: a free one)
#   --api-port P     the control node's HTTP API port (default: a free one)
#   --keep           after the run, keep everything up until Ctrl-C
#   --json           print the run's JSON document (muster run --json) instead of a table
#
# Free ports are drawn below the kernel's ephemeral range and checked free; NATS that does
# not come up (a server exits, or no meta leader within 45 s) is stopped by pid and started
# again on fresh ports, 3 attempts in all, each failure with the servers' log tails.
# Environment: MUSTER_BIN (default target/release/muster, built when absent).
# Exit: the run's exit code (0 completed), 2 bad arguments, 1 when the cluster does not
# come up. Needs python3 (the example's agents) and curl.
set -euo pipefail
cd "$(dirname "$0")/.."                # the repo root: the example's manifests name paths from it

WORKERS=2 SERVERS=1 NATS_PORT_OPT="" MONITOR_PORT_OPT="" API_PORT="" KEEP=0 JSON=0
usage() { sed -n '2,28p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
port_arg() { [[ "${2:-}" =~ ^[0-9]{1,5}$ ]] && [ "$2" -ge 1 ] && [ "$2" -le 65535 ] \
  || { echo "cluster.sh: $1 needs a port (1..65535), got \`${2:-}\`" >&2; exit 2; }; }
while [ $# -gt 0 ]; do
  case "$1" in
    --workers)
      [[ "${2:-}" =~ ^[0-9]+$ ]] && [ "$2" -ge 1 ] && [ "$2" -le 16 ] \
        || { echo "cluster.sh: --workers needs 1..16, got \`${2:-}\`" >&2; exit 2; }
      WORKERS=$2; shift 2 ;;
    --nats-servers)
      [[ "${2:-}" =~ ^[0-9]+$ ]] && [ "$2" -ge 1 ] && [ "$2" -le 5 ] \
        || { echo "cluster.sh: --nats-servers needs 1..5, got \`${2:-}\`" >&2; exit 2; }
      SERVERS=$2; shift 2 ;;
    --nats-port) port_arg "$1" "${2:-}"; NATS_PORT_OPT=$2; shift 2 ;;
    --monitor-port) port_arg "$1" "${2:-}"; MONITOR_PORT_OPT=$2; shift 2 ;;
    --api-port) port_arg "$1" "${2:-}"; API_PORT=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --json) JSON=1; shift ;;
    -h|--help) usage ;;
    *) echo "cluster.sh: unknown argument \`$1\`" >&2; usage ;;
  esac
done

say() { echo "cluster.sh: $*" >&2; }
die() { say "$*"; exit 1; }
command -v python3 >/dev/null || die "python3 is needed (the example's agents are Python)"
command -v curl >/dev/null || die "curl is needed"

MUSTER="${MUSTER_BIN:-target/release/muster}"
if [ ! -x "$MUSTER" ]; then
  say "building $MUSTER (cargo build --release)"
  cargo build --release --quiet || die "cargo build --release failed"
fi
NATS_SERVER="$(scripts/nats-server path)" || die "no nats-server 2.11+ (scripts/nats-server path failed)"

TMP="$(mktemp -d "${TMPDIR:-/tmp}/muster-cluster-XXXXXX")"
PIDS=()
cleanup() {
  local code=$?
  trap - EXIT INT TERM
  # Workers first (they delete their keys), then the control node, then NATS.
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    kill -TERM "${PIDS[i]}" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  [ ${#PIDS[@]} -gt 0 ] && say "stopped ${#PIDS[@]} processes (pids ${PIDS[*]})"
  rm -rf "$TMP"
  exit "$code"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# free_ports N: N distinct ports, each free (nothing listens on it on loopback or on every
# address) when picked, drawn at random from below the kernel's ephemeral range: bind(0)
# and outgoing connections take their ports from that range, so no other process takes
# one of these between the check and the server's bind unless it asks for it by number.
free_ports() {
  python3 - "$1" <<'PY'
import random, socket, sys
n = int(sys.argv[1])
try:
    lo = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
except (OSError, ValueError, IndexError):
    lo = 49152
bottom, top = 10000, min(lo, 65536) - 1
if top - bottom < 2000:
    bottom, top = 1024, 65535
held, out = [], []
for _ in range(100000):
    if len(out) == n:
        break
    p = random.randint(bottom, top)
    if p in out:
        continue
    try:
        a = socket.socket(); a.bind(("127.0.0.1", p)); a.close()
        b = socket.socket(); b.bind(("0.0.0.0", p)); held.append(b)
    except OSError:
        continue
    out.append(p)
print(" ".join(map(str, out)))
PY
}

# wait_for WHAT SECONDS PID COMMAND...: polls COMMAND every 100 ms; fails when PID exits or
# the time is up.
wait_for() {
  local what=$1 secs=$2 pid=$3; shift 3
  local limit=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    kill -0 "$pid" 2>/dev/null || die "$what exited (log: see above)"
    [ $SECONDS -lt $limit ] || die "$what not ready within ${secs}s"
    sleep 0.1
  done
}

# 1. NATS with JetStream, its store in the temp dir: one server, or a cluster of
#    $SERVERS (each its own name, store dir, client, monitor and route ports; routes to
#    all the others; a cluster name of its own), which every muster process is given the
#    whole list of. A server that exits at start (its port taken after all) or a cluster
#    whose servers are not all healthy (JetStream in touch with a meta leader) within
#    $NATS_START_SECS is stopped by pid and started again on fresh ports (those not given
#    by option) and empty stores, $NATS_ATTEMPTS times in all; each failure shows the
#    servers' log tails.
NATS_ATTEMPTS=3 NATS_START_SECS=45
CLUSTER_NAME="muster-local-$$"

# stop_pids PID...: SIGTERM, up to 5 s, then SIGKILL, and reap.
stop_pids() {
  local pid
  for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "$@"; do
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
}

# nats_healthy K PATH: server K (0-based) answers PATH on its monitor port with 200.
nats_healthy() { curl -fsS -m 2 "http://127.0.0.1:${MONITOR_PORTS[$1]}$2"; }

# start_nats ATTEMPT: starts the servers; 0 when all are ready within the bound, else 1
# with the servers stopped and their log tails shown.
start_nats() {
  local attempt=$1 i k ports n_fresh=$((SERVERS * 3)) base=${#PIDS[@]}
  read -r -a ports <<<"$(free_ports "$n_fresh")"
  CLIENT_PORTS=() MONITOR_PORTS=() ROUTE_PORTS=() NATS_PIDS=()
  for ((k = 0; k < SERVERS; k++)); do
    CLIENT_PORTS+=("${ports[k * 3]}"); MONITOR_PORTS+=("${ports[k * 3 + 1]}")
    ROUTE_PORTS+=("${ports[k * 3 + 2]}")
  done
  [ -n "$FIXED_NATS_PORT" ] && CLIENT_PORTS[0]=$FIXED_NATS_PORT
  [ -n "$FIXED_MONITOR_PORT" ] && MONITOR_PORTS[0]=$FIXED_MONITOR_PORT
  ROUTES="$(printf 'nats://127.0.0.1:%s,' "${ROUTE_PORTS[@]}")"; ROUTES=${ROUTES%,}
  NATS_URL="$(printf 'nats://127.0.0.1:%s,' "${CLIENT_PORTS[@]}")"; NATS_URL=${NATS_URL%,}
  for ((k = 0; k < SERVERS; k++)); do
    i=$((k + 1))
    rm -rf "$TMP/nats-store-$i"
    if [ "$SERVERS" = 1 ]; then
      "$NATS_SERVER" -js -a 127.0.0.1 -p "${CLIENT_PORTS[k]}" -m "${MONITOR_PORTS[k]}" \
        -sd "$TMP/nats-store-$i" >"$TMP/nats-$i.log" 2>&1 &
    else
      "$NATS_SERVER" -js -a 127.0.0.1 -p "${CLIENT_PORTS[k]}" -m "${MONITOR_PORTS[k]}" \
        --server_name "nats-$i" -sd "$TMP/nats-store-$i" --cluster_name "$CLUSTER_NAME" \
        --cluster "nats://127.0.0.1:${ROUTE_PORTS[k]}" --routes "$ROUTES" \
        >"$TMP/nats-$i.log" 2>&1 &
    fi
    PIDS+=($!); NATS_PIDS+=($!)
  done
  # One server: JetStream enabled; a cluster: every server's JetStream in touch with the
  # meta leader.
  local path=/healthz limit=$((SECONDS + NATS_START_SECS)) why=""
  [ "$SERVERS" = 1 ] && path='/healthz?js-enabled-only=true'
  for ((k = 0; k < SERVERS && ${#why} == 0; k++)); do
    until nats_healthy "$k" "$path" >/dev/null 2>&1; do
      for ((i = 0; i < SERVERS; i++)); do
        kill -0 "${NATS_PIDS[i]}" 2>/dev/null || { why="nats-$((i + 1)) exited"; break; }
      done
      [ -n "$why" ] && break
      [ $SECONDS -lt $limit ] || { why="nats-$((k + 1)) not healthy within ${NATS_START_SECS}s"; break; }
      sleep 0.1
    done
  done
  [ -z "$why" ] && return 0
  say "attempt $attempt of $NATS_ATTEMPTS to start NATS failed: $why; stopping its servers (pids ${NATS_PIDS[*]})"
  stop_pids "${NATS_PIDS[@]}"
  PIDS=("${PIDS[@]:0:base}")
  for ((k = 0; k < SERVERS; k++)); do
    say "--- the tail of nats-$((k + 1))'s log (client ${CLIENT_PORTS[k]}, route ${ROUTE_PORTS[k]}, monitor ${MONITOR_PORTS[k]}):"
    tail -n 15 "$TMP/nats-$((k + 1)).log" >&2 || true
  done
  return 1
}

FIXED_NATS_PORT=$NATS_PORT_OPT FIXED_MONITOR_PORT=$MONITOR_PORT_OPT
started=0
for attempt in $(seq "$NATS_ATTEMPTS"); do
  if start_nats "$attempt"; then started=1; break; fi
done
[ "$started" = 1 ] || die "NATS did not start in $NATS_ATTEMPTS attempts (see the log tails above)"
NATS_PORT=${CLIENT_PORTS[0]} MONITOR_PORT=${MONITOR_PORTS[0]}
if [ "$SERVERS" = 1 ]; then
  say "nats-server (pid ${NATS_PIDS[0]}) on $NATS_URL, JetStream store $TMP/nats-store-1"
else
  for ((k = 0; k < SERVERS; k++)); do
    say "nats-server nats-$((k + 1)) (pid ${NATS_PIDS[k]}) on nats://127.0.0.1:${CLIENT_PORTS[k]}, JetStream store $TMP/nats-store-$((k + 1))"
  done
  say "JetStream cluster $CLUSTER_NAME: $SERVERS servers, routes on ports ${ROUTE_PORTS[*]}"
fi
# Picked now, while the servers hold theirs.
API_PORT=${API_PORT:-$(free_ports 1)}

# 2. The control node: the code-review workflow, the repo's cast (actors/, schemas/); it
#    runs no agents itself.
mkdir -p "$TMP/workflows"
cp examples/code-review/workflow.toml "$TMP/workflows/code-review.toml"
python3 -c 'import secrets; print(secrets.token_hex(24))' >"$TMP/token"
chmod 600 "$TMP/token"
"$MUSTER" serve --nats "$NATS_URL" --node control --workflows "$TMP/workflows" \
  --journal "$TMP/journal.db" --listen "127.0.0.1:$API_PORT" --token-file "$TMP/token" \
  --json >"$TMP/control.out" 2>"$TMP/control.log" &
PIDS+=($!)
CONTROL_PID=$!
API="http://127.0.0.1:$API_PORT"
wait_for "the control node" 60 "$CONTROL_PID" test -s "$TMP/control.out"
say "control node (pid $CONTROL_PID) serving $API, journal $TMP/journal.db"
if [ "$SERVERS" != 1 ]; then
  REPLICAS="$(python3 -c 'import json, sys
d = json.load(sys.stdin)
each = ", ".join(f"{k} {v}" for k, v in d.get("replicas_of", {}).items())
n = d.get("replicas")
print(f"{n} replicas ({each})")' <"$TMP/control.out")"
  say "buckets and journal stream: $REPLICAS"
fi

# 3. N workers, each hosting the whole cast.
WORKER_PIDS=()
for i in $(seq "$WORKERS"); do
  "$MUSTER" worker --nats "$NATS_URL" --node "worker-$i" --json \
    >"$TMP/worker-$i.out" 2>"$TMP/worker-$i.log" &
  PIDS+=($!); WORKER_PIDS+=($!)
done
for i in $(seq "$WORKERS"); do
  pid=${WORKER_PIDS[$((i - 1))]}
  wait_for "worker-$i" 60 "$pid" test -s "$TMP/worker-$i.out"
  say "worker-$i (pid $pid) joined: $(cat "$TMP/worker-$i.out")"
done

# Every worker's instances are registered on the control node before the run starts.
nodes_listed() {
  curl -fsS -H "Authorization: Bearer $(cat "$TMP/token")" "$API/v1/agents" |
    python3 -c 'import json, sys; n = int(sys.argv[1]); d = json.load(sys.stdin)
nodes = {a.get("node") for a in d.get("agents", [])}
sys.exit(0 if all(f"worker-{i}" in nodes for i in range(1, n + 1)) else 1)' "$WORKERS"
}
wait_for "the control node's agent list" 60 "$CONTROL_PID" nodes_listed

# 4. The example across the cluster.
say "running examples/code-review across $WORKERS workers"
set +e
if [ "$JSON" = 1 ]; then
  "$MUSTER" run --server "$API" --token-file "$TMP/token" --json \
    examples/code-review/workflow.toml --input @examples/code-review/input.json
  code=$?
else
  "$MUSTER" run --server "$API" --token-file "$TMP/token" \
    examples/code-review/workflow.toml --input @examples/code-review/input.json
  code=$?
fi
set -e
say "the run exited $code"

# 5. How many of the run's steps each worker ran (a step's agent is `id@worker-N`; equally
#    loaded instances of a capability take turns, so idle workers share the steps).
steps_per_worker() {
  local auth run
  auth="Authorization: Bearer $(cat "$TMP/token")"
  run="$(curl -fsS -H "$auth" "$API/v1/runs?limit=1" |
    python3 -c 'import json, sys; r = json.load(sys.stdin).get("runs") or [{}]; print(r[0].get("run", ""))')"
  [ -n "$run" ] || return 1
  curl -fsS -H "$auth" "$API/v1/runs/$run" | python3 -c 'import json, sys
n = int(sys.argv[1]); d = json.load(sys.stdin)
count = {f"worker-{i}": 0 for i in range(1, n + 1)}
for s in d.get("steps", []):
    node = (s.get("owner") or s.get("agent") or "").rpartition("@")[2]
    if node in count:
        count[node] += 1
print(", ".join(f"{w} {c}" for w, c in count.items()))' "$WORKERS"
}
say "steps per worker: $(steps_per_worker || echo "unknown (the run could not be read)")"

if [ "$KEEP" = 1 ]; then
  say "the cluster stays up: $API (token in $TMP/token), NATS $NATS_URL; Ctrl-C stops it"
  while kill -0 "$CONTROL_PID" 2>/dev/null; do sleep 1; done
fi
exit "$code"

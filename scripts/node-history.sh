#!/usr/bin/env bash
# A node with history: makes a journal of N gate-waiting code-review runs with the
# simulator, serves it, and reports how soon the node answers, how long resuming takes,
# and each route's p50/p99 over S requests (BENCHMARKS.md, "A node with history").
#
#   scripts/node-history.sh [RUNS=3000] [SAMPLES=100]
#
# Needs `muster` built (`cargo build --release`) and curl. Uses a temporary directory and
# a free port on loopback; stops the node by pid.
set -euo pipefail
runs=${1:-3000}
samples=${2:-100}
root=$(cd "$(dirname "$0")/.." && pwd)
muster="$root/target/release/muster"
[ -x "$muster" ] || { echo "build first: cargo build --release" >&2; exit 2; }
dir=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
cd "$root"
"$muster" sim examples/scenarios/code-review-heavy-faults.toml --tasks "$runs" \
  --journal "$dir/j.db" >/dev/null
echo "journal: $runs runs, $(du -h "$dir/j.db" | cut -f1)"
start=$(date +%s%N)
"$muster" serve --journal "$dir/j.db" --workflows examples/code-review \
  --listen 127.0.0.1:0 --json >"$dir/serve.json" 2>"$dir/serve.err" &
pid=$!
for _ in $(seq 1 3000); do
  addr=$(sed -n 's/.*"listen":"\([^"]*\)".*/\1/p' "$dir/serve.json" 2>/dev/null || true)
  [ -n "$addr" ] && curl -sf -o /dev/null "http://$addr/healthz" && break
  sleep 0.01
done
answering=$(( ($(date +%s%N) - start) / 1000000 ))
base="http://$addr"
worst=0
until curl -sf -o /dev/null "$base/readyz"; do
  t=$(curl -s -o /dev/null -w '%{time_total}' "$base/healthz")
  worst=$(awk -v a="$worst" -v b="$t" 'BEGIN { print (b > a) ? b : a }')
  sleep 0.02
done
ready=$(( ($(date +%s%N) - start) / 1000000 ))
echo "answering after ${answering} ms; ready (all runs resumed) after ${ready} ms;" \
  "slowest /healthz while resuming $(awk -v t="$worst" 'BEGIN { printf "%.2f", t * 1000 }') ms"
token=$(cat "$dir/token")
auth="Authorization: Bearer $token"
page=$(curl -s -H "$auth" "$base/v1/runs?limit=500&status=waiting")
mapfile -t waiting < <(grep -o '"run":"[^"]*"' <<<"$page" | cut -d'"' -f4)
measure() {
  local name=$1; shift
  local times=()
  for i in $(seq 0 $((samples - 1))); do
    times+=("$("$@" "$i")")
  done
  printf '%s\n' "${times[@]}" | sort -g | awk -v n="$name" '
    { t[NR] = $1 * 1000 }
    END { printf "%-30s p50 %7.2f ms  p99 %7.2f ms\n", n, t[int(NR * 0.5) + 1], t[int(NR * 0.99) + (NR < 100 ? 0 : 1)] }'
}
get() { curl -s -o /dev/null -H "$auth" -w '%{time_total}' "$base$1"; }
healthz() { get /healthz; }
list() { get "/v1/runs?limit=50"; }
list_waiting() { get "/v1/runs?limit=50&status=waiting"; }
detail() { get "/v1/runs/${waiting[$(( $1 % ${#waiting[@]} ))]}"; }
agents() { get /v1/agents; }
tree() { get /v1/tree; }
decide() {
  curl -s -o /dev/null -H "$auth" -H 'content-type: application/json' -w '%{time_total}' \
    -d '{"decision":"reject","note":"bench"}' \
    "$base/v1/runs/${waiting[$(( $1 % ${#waiting[@]} ))]}/gates/human"
}
measure "GET /healthz" healthz
measure "GET /v1/runs?limit=50" list
measure "GET /v1/runs?status=waiting" list_waiting
measure "GET /v1/runs/{id}" detail
measure "GET /v1/agents" agents
measure "GET /v1/tree" tree
measure "POST .../gates/human" decide

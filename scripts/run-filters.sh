#!/usr/bin/env bash
# Filtering the runs of a node with history: makes a journal of N code-review runs with the
# simulator, serves it, and times `GET /v1/runs` with each filter S times, one request at
# a time on loopback (BENCHMARKS.md, "Filtering runs").
#
#   scripts/run-filters.sh [RUNS=10000] [SAMPLES=50]
#
# Needs `muster` built (`cargo build --release`), curl and sqlite3. Uses a temporary directory and
# a free port on loopback; stops the node by pid.
set -euo pipefail
runs=${1:-10000}
samples=${2:-50}
root=$(cd "$(dirname "$0")/.." && pwd)
muster="$root/target/release/muster"
[ -x "$muster" ] || { echo "build first: cargo build --release" >&2; exit 2; }
dir=$(mktemp -d)
pid=
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$dir"' EXIT
cd "$root"
"$muster" sim examples/scenarios/code-review-heavy-faults.toml --tasks "$runs" \
  --journal "$dir/j.db" >/dev/null
echo "journal: $runs runs, $(du -h "$dir/j.db" | cut -f1)"
"$muster" serve --journal "$dir/j.db" --workflows examples/code-review \
  --listen 127.0.0.1:0 --json >"$dir/serve.json" 2>"$dir/serve.err" &
pid=$!
for _ in $(seq 1 3000); do
  addr=$(sed -n 's/.*"listen":"\([^"]*\)".*/\1/p' "$dir/serve.json" 2>/dev/null || true)
  [ -n "$addr" ] && curl -sf -o /dev/null "http://$addr/healthz" && break
  sleep 0.01
done
base="http://$addr"
until curl -sf -o /dev/null "$base/readyz"; do sleep 0.05; done
auth="Authorization: Bearer $(cat "$dir/token")"
# The simulator stamps runs on its virtual clock: the time filters use the journal's own
# range (the oldest run's start, and a point in the middle).
oldest=$(sqlite3 -readonly "$dir/j.db" 'SELECT min(started_ms) FROM runs')
middle=$(sqlite3 -readonly "$dir/j.db" "SELECT started_ms FROM runs ORDER BY started_seq LIMIT 1 OFFSET $((runs / 2))")
measure() {
  local name=$1 path=$2
  local n
  n=$(curl -s -H "$auth" "$base$path" | { grep -o "\"run\":\"" || true; } | wc -l)
  for _ in $(seq 1 "$samples"); do
    curl -s -o /dev/null -H "$auth" -w '%{time_total}\n' "$base$path"
  done | sort -g | awk -v n="$name" -v c="$n" '
    { t[NR] = $1 * 1000 }
    END { printf "%-44s %3d runs  p50 %7.2f ms  p99 %7.2f ms\n", n, c, t[int(NR * 0.5) + 1], t[int(NR * 0.99) + (NR < 100 ? 0 : 1)] }'
}
measure "?limit=50" "/v1/runs?limit=50"
measure "?status=waiting&limit=50" "/v1/runs?status=waiting&limit=50"
measure "?input.requested_by=warehouse team (all)" "/v1/runs?limit=50&input.requested_by=warehouse%20team"
measure "?input.requested_by=nobody (none: 2,000 read)" "/v1/runs?limit=50&input.requested_by=nobody"
measure "?started_after=MIDDLE" "/v1/runs?limit=50&started_after=$middle"
measure "?started_before=MIDDLE" "/v1/runs?limit=50&started_before=$middle"
measure "?started_before=OLDEST+1 (one)" "/v1/runs?limit=50&started_before=$((oldest + 1))"
measure "?status=completed&input.title=x (none)" "/v1/runs?limit=50&status=completed&input.title=x"

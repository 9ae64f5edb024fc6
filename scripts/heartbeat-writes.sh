#!/usr/bin/env bash
# Heartbeat writes of one worker: starts a nats-server (JetStream, monitoring on), a control
# node and a worker hosting INSTANCES instances of a function agent, lets the heartbeats
# settle, and counts the messages written to the agents bucket's stream (KV_muster_agents,
# its last sequence from the server's /jsz) over SECS seconds, at the default TTL (1.5 s).
#
#   scripts/heartbeat-writes.sh [INSTANCES=1000] [SECS=20] [MUSTER=target/release/muster]
#
# Prints `instances N: W writes in S s = R per s`, then the keys and bytes the bucket holds. Uses a temporary directory and free
# loopback ports; stops every process it started by pid. Needs python3 and curl.
set -euo pipefail
n=${1:-1000}
secs=${2:-20}
root=$(cd "$(dirname "$0")/.." && pwd)
muster=${3:-$root/target/release/muster}
[ -x "$muster" ] || { echo "build first: cargo build --release" >&2; exit 2; }
nats=$("$root/scripts/nats-server" path)
dir=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$dir"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port); monitor=$(free_port)
mkdir -p "$dir/actors" "$dir/schemas" "$dir/workflows"
echo '{"type":"object"}' >"$dir/schemas/obj.schema.json"
printf 'name = "echo"\nreplicas = %s\n[[capabilities]]\nname = "echo"\ninput = "obj"\noutput = "obj"\n[backend]\nkind = "function"\nname = "echo"\n' "$n" >"$dir/actors/echo.toml"
"$nats" -js -a 127.0.0.1 -p "$port" -m "$monitor" -sd "$dir/js" >"$dir/nats.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$monitor/healthz" >/dev/null && break; sleep 0.1; done
cd "$dir"
MUSTER_TOKEN=heartbeat-writes-0123456789 "$muster" serve --nats "nats://127.0.0.1:$port" \
  --node c1 --workflows workflows --journal "$dir/c1.db" --listen 127.0.0.1:0 --json \
  >"$dir/c1.out" 2>"$dir/c1.err" &
pids+=($!)
for _ in $(seq 600); do [ -s "$dir/c1.out" ] && break; sleep 0.1; done
"$muster" worker --nats "nats://127.0.0.1:$port" --node w1 --json >"$dir/w1.out" 2>"$dir/w1.err" &
pids+=($!)
for _ in $(seq 1200); do [ -s "$dir/w1.out" ] && break; sleep 0.1; done
[ -s "$dir/w1.out" ] || { echo "the worker did not join:" >&2; tail -n 5 "$dir/w1.err" >&2; exit 1; }
sleep 3
last_seq() {
  curl -fs "http://127.0.0.1:$monitor/jsz?accounts=true&streams=true" | python3 -c '
import json, sys
d = json.load(sys.stdin)
print(next(s["state"]["last_seq"] for a in d.get("account_details", [])
           for s in a.get("stream_detail", []) if s["name"] == "KV_muster_agents"))'
}
a=$(last_seq); t0=$(date +%s.%N)
sleep "$secs"
b=$(last_seq); t1=$(date +%s.%N)
python3 -c "w=$b-$a; s=$t1-$t0; print(f'instances $n: {w} writes in {s:.2f} s = {w/s:.1f} per s')"
# What the bucket holds now: its keys and their bytes (stored messages, subjects included).
curl -fs "http://127.0.0.1:$monitor/jsz?accounts=true&streams=true" | python3 -c '
import json, sys
d = json.load(sys.stdin)
s = next(s["state"] for a in d.get("account_details", [])
         for s in a.get("stream_detail", []) if s["name"] == "KV_muster_agents")
print("the bucket holds", s["messages"], "keys,", s["bytes"], "bytes")' 

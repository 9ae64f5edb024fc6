#!/usr/bin/env bash
# A node's memory under steady load: serves a cast of one function agent (`echo`, two
# replicas) with a SQLite journal, submits bare tasks through `POST /v1/tasks` at RATE
# per second for SECS seconds, then leaves the node idle for IDLE seconds, and prints the
# node's resident memory (VmRSS) every 30 s of load and every 15 s of idle.
#
#   scripts/node-memory.sh [RATE=20] [SECS=420] [IDLE=60]
#
# Needs `muster` built (`cargo build --release`) and python3 (for the client). Uses a
# temporary directory and a free port on loopback; stops the node by pid. Linux only (it
# reads /proc).
set -euo pipefail
rate=${1:-20}
secs=${2:-420}
idle=${3:-60}
root=$(cd "$(dirname "$0")/.." && pwd)
muster="$root/target/release/muster"
[ -x "$muster" ] || { echo "build first: cargo build --release" >&2; exit 2; }
dir=$(mktemp -d)
pid=
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$dir"' EXIT
mkdir -p "$dir/actors" "$dir/schemas" "$dir/workflows"
echo '{"type":"object"}' >"$dir/schemas/any.schema.json"
cat >"$dir/actors/echo.toml" <<'TOML'
name = "echo"
replicas = 2
[[capabilities]]
name = "echo"
input = "any"
output = "any"
[backend]
kind = "function"
name = "echo"
TOML
token=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
(umask 077 && echo "$token admin" >"$dir/tokens")
"$muster" serve --journal "$dir/j.db" --actors "$dir/actors" --schemas "$dir/schemas" \
  --workflows "$dir/workflows" --token-file "$dir/tokens" --listen 127.0.0.1:0 --json \
  >"$dir/serve.json" 2>"$dir/serve.err" &
pid=$!
addr=
for _ in $(seq 1 3000); do
  addr=$(sed -n 's/.*"listen":"\([^"]*\)".*/\1/p' "$dir/serve.json" 2>/dev/null || true)
  [ -n "$addr" ] && break
  kill -0 "$pid" 2>/dev/null || { cat "$dir/serve.err" >&2; exit 1; }
  sleep 0.01
done
[ -n "$addr" ] || { echo "the node did not start within 30 s" >&2; exit 1; }
python3 - "$addr" "$pid" "$rate" "$secs" "$idle" "$token" <<'PY'
import json, sys, time, urllib.request
addr, pid, rate, secs, idle, token = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
def rss_mb():
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) // 1024
print(f"load  0 s: tasks 0, RSS {rss_mb()} MB", flush=True)
start = time.time(); sent = 0; due = start; next_sample = 30
while time.time() - start < secs:
    body = json.dumps({"capability": "echo", "input": {"n": sent}}).encode()
    req = urllib.request.Request(f"http://{addr}/v1/tasks", data=body, headers=headers)
    try:
        urllib.request.urlopen(req, timeout=10).read()
        sent += 1
    except Exception as e:
        print(f"a submission failed: {e}", file=sys.stderr, flush=True)
    due += 1 / rate
    time.sleep(max(0.0, due - time.time()))
    if time.time() - start >= next_sample:
        print(f"load {next_sample} s: tasks {sent}, RSS {rss_mb()} MB", flush=True)
        next_sample += 30
for i in range(idle // 15):
    time.sleep(15)
    print(f"idle {(i + 1) * 15} s: tasks {sent}, RSS {rss_mb()} MB", flush=True)
PY
echo "journal: $(du -h "$dir/j.db" | cut -f1)"

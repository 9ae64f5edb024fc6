#!/usr/bin/env bash
# A node's memory under steady load: serves a cast of one function agent (`echo`, two
# replicas) with a SQLite journal, submits work through the API at RATE per second for
# SECS seconds, then leaves the node idle for IDLE seconds, and prints the node's resident
# memory (VmRSS) every SAMPLE seconds of load (default 30) and every 15 s of idle.
#
#   scripts/node-memory.sh [RATE=20] [SECS=420] [IDLE=60]
#
# The work is bare tasks (`POST /v1/tasks`), or with MODE=runs workflow runs
# (`POST /v1/runs`) of a four-step workflow: one step, two in parallel, one more, each
# delegated to `echo`. A line is printed when the node lags (work accepted but unfinished).
#
# Needs `muster` built (`cargo build --release`) and python3 (for the client). Uses a
# temporary directory and a free port on loopback; stops the node by pid. Linux only (it
# reads /proc).
set -euo pipefail
rate=${1:-20}
secs=${2:-420}
idle=${3:-60}
mode=${MODE:-tasks}
sample=${SAMPLE:-30}
case "$mode" in tasks | runs) ;; *) echo "MODE must be tasks or runs, not $mode" >&2; exit 2 ;; esac
root=$(cd "$(dirname "$0")/.." && pwd)
muster="${MUSTER_BIN:-$root/target/release/muster}"
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
cat >"$dir/workflows/steps.toml" <<'TOML'
name = "steps"
input = "any"
start = "first"

[steps.first]
capability = "echo"
timeout = "60s"
attempts = 3
on_exhausted = "fail"
input = "{'n': run.input.n, 'step': 'first'}"
next = "both"

[steps.both]
parallel = ["left", "right"]
next = "last"

[steps.left]
capability = "echo"
timeout = "60s"
attempts = 3
on_exhausted = "fail"
input = "{'from': steps.first.output, 'side': 'left'}"

[steps.right]
capability = "echo"
timeout = "60s"
attempts = 3
on_exhausted = "fail"
input = "{'from': steps.first.output, 'side': 'right'}"

[steps.last]
capability = "echo"
timeout = "60s"
attempts = 3
on_exhausted = "fail"
input = "{'left': steps.left.output, 'right': steps.right.output}"
next = "done"

[steps.done]
terminal = "done"
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
python3 - "$addr" "$pid" "$rate" "$secs" "$idle" "$token" "$mode" "$sample" <<'PY'
import json, sys, time, urllib.request
addr, pid, rate, secs, idle, token = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
mode, sample = sys.argv[7], int(sys.argv[8])
headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
def rss_mb():
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) // 1024
def unfinished():
    # Runs the node still drives (runs mode); tasks are not listed, so 0 there.
    if mode != "runs":
        return 0
    req = urllib.request.Request(f"http://{addr}/v1/runs?status=unfinished&limit=500", headers=headers)
    try:
        page = json.loads(urllib.request.urlopen(req, timeout=10).read())
    except Exception as e:
        print(f"listing unfinished runs failed: {e}", file=sys.stderr, flush=True)
        return -1
    n = len(page.get("runs", []))
    return f"{n}+" if page.get("next") else n
what = "runs" if mode == "runs" else "tasks"
print(f"load  0 s: {what} 0, RSS {rss_mb()} MB", flush=True)
start = time.time(); sent = 0; due = start; next_sample = sample
while time.time() - start < secs:
    if mode == "runs":
        body = json.dumps({"workflow": "steps", "input": {"n": sent}}).encode()
        url = f"http://{addr}/v1/runs"
    else:
        body = json.dumps({"capability": "echo", "input": {"n": sent}}).encode()
        url = f"http://{addr}/v1/tasks"
    req = urllib.request.Request(url, data=body, headers=headers)
    try:
        urllib.request.urlopen(req, timeout=10).read()
        sent += 1
    except Exception as e:
        print(f"a submission failed: {e}", file=sys.stderr, flush=True)
    due += 1 / rate
    time.sleep(max(0.0, due - time.time()))
    if time.time() - start >= next_sample:
        print(f"load {next_sample} s: {what} {sent}, RSS {rss_mb()} MB, unfinished {unfinished()}", flush=True)
        next_sample += sample
for i in range(idle // 15):
    time.sleep(15)
    print(f"idle {(i + 1) * 15} s: {what} {sent}, RSS {rss_mb()} MB, unfinished {unfinished()}", flush=True)
PY
echo "journal: $(du -h "$dir/j.db" | cut -f1)"

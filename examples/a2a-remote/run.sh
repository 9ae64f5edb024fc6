#!/usr/bin/env bash
# Runs the a2a-remote workflow: installs a2a-sdk when absent (scripts/a2a-sdk, into
# ~/.cache/muster/a2a), starts the remote A2A agent tests/fixtures/a2a/remote_agent.py on
# a free loopback port, points the `remote` agent's card at it, and runs
#   muster run examples/a2a-remote/workflow.toml --actors examples/a2a-remote/actors \
#     --schemas examples/a2a-remote/schemas --input @examples/a2a-remote/input.json
# The remote agent is stopped by its pid on the way out. Extra arguments are passed on.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv="$(scripts/a2a-sdk path | sed -n 's/^venv=//p')"
out="$(mktemp)"
"$venv/bin/python" tests/fixtures/a2a/remote_agent.py >"$out" &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; rm -f "$out"' EXIT
for _ in $(seq 1 300); do
  [ -s "$out" ] && break
  kill -0 "$pid" 2>/dev/null || { echo "the remote agent did not start" >&2; exit 1; }
  sleep 0.1
done
card="$(sed -n 's/.*"card": "\([^"]*\)".*/\1/p' "$out")"
[ -n "$card" ] || { echo "the remote agent printed no card URL" >&2; exit 1; }
export MUSTER_REMOTE__BACKEND__CARD="$card"
if [ -n "${MUSTER:-}" ]; then bin=("$MUSTER"); else bin=(cargo run --release --quiet --); fi
has_input=0
for a in "$@"; do [ "$a" = "--input" ] && has_input=1; done
extra=()
[ "$has_input" = 1 ] || extra=(--input @examples/a2a-remote/input.json)
"${bin[@]}" run examples/a2a-remote/workflow.toml \
  --actors examples/a2a-remote/actors --schemas examples/a2a-remote/schemas "${extra[@]}" "$@"

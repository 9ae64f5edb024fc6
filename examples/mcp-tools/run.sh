#!/usr/bin/env bash
# Runs the mcp-tools workflow: installs mcp-server-time and mcp-server-git when absent
# (scripts/mcp-servers, into ~/.cache/muster/mcp), puts them on PATH, and runs
#   muster run examples/mcp-tools/workflow.toml --actors examples/mcp-tools/actors \
#     --schemas examples/mcp-tools/schemas --input @examples/mcp-tools/input.json
# on this repository. Extra arguments are passed on (`--input '{"repo": "DIR"}'`, `--json`).
set -euo pipefail
cd "$(dirname "$0")/../.."
venv="$(scripts/mcp-servers path | sed -n 's/^venv=//p')"
export PATH="$venv/bin:$PATH"
if [ -n "${MUSTER:-}" ]; then bin=("$MUSTER"); else bin=(cargo run --release --quiet --); fi
has_input=0
for a in "$@"; do [ "$a" = "--input" ] && has_input=1; done
extra=()
[ "$has_input" = 1 ] || extra=(--input @examples/mcp-tools/input.json)
exec "${bin[@]}" run examples/mcp-tools/workflow.toml \
  --actors examples/mcp-tools/actors --schemas examples/mcp-tools/schemas "${extra[@]}" "$@"

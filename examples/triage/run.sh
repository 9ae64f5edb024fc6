#!/usr/bin/env bash
# Runs the triage workflow against the local model server:
#   scripts/model-server install && scripts/model-server start   # once
#   examples/triage/run.sh [--input @FILE] [--json] [--wait]
# The manifests say base_url = 127.0.0.1:8080; the server listens on a free port, so the
# URL is handed to both agents through their environment overrides.
set -euo pipefail
cd "$(dirname "$0")/../.."
url="$(scripts/model-server status)" || {
  echo "no model server: run scripts/model-server install && scripts/model-server start" >&2
  exit 1
}
export MUSTER_CLASSIFIER__BACKEND__BASE_URL="$url"
export MUSTER_RESPONDER__BACKEND__BASE_URL="$url"
if [ -n "${MUSTER:-}" ]; then bin=("$MUSTER"); else bin=(cargo run --release --quiet --); fi
exec "${bin[@]}" run examples/triage/workflow.toml \
  --actors examples/triage/actors --schemas examples/triage/schemas \
  --journal "${JOURNAL:-.muster/triage.db}" "$@"

#!/usr/bin/env bash
# Webhook load benchmark: installs wrk when missing (Debian, as root), then runs
# benchmarks/webhook_load.py with the given arguments (e.g. --write-docs). Needs PostgreSQL on
# 127.0.0.1:5432 (scripts/services.sh starts it); all traffic stays on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v wrk >/dev/null; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && apt-get install -y -qq wrk >/dev/null
  else
    echo "error: wrk is needed (apt-get install wrk)" >&2
    exit 2
  fi
fi
PY=.venv/bin/python
[ -x "$PY" ] || PY=python3
exec timeout 900 "$PY" benchmarks/webhook_load.py "$@"

#!/bin/sh
# Start the slo-guard Prometheus harness: tests/prometheus/start.sh DIR [--port N] [--horizon-hours H] [--parent-pid PID]
# Prints PROM_URL=..., PROM_PID=..., PROM_STOP=... (also in DIR/env). Fails loudly if prometheus/promtool are missing.
set -eu
here=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)
if [ $# -lt 1 ]; then echo "usage: $0 DIR [--port N] [--horizon-hours H] [--parent-pid PID]" >&2; exit 2; fi
command -v python3 >/dev/null 2>&1 || { echo "prometheus harness: ERROR: python3 not found" >&2; exit 2; }
exec python3 "$here/harness.py" start "$@"

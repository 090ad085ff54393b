#!/bin/sh
# Stop the harness Prometheus started by start.sh DIR (only that process: its pid file, checked against its command line).
set -eu
here=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)
if [ $# -ne 1 ]; then echo "usage: $0 DIR" >&2; exit 2; fi
exec python3 "$here/harness.py" stop "$1"

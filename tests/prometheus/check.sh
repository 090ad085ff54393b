#!/bin/sh
# Start the harness in a temporary dir (or DIR), query every scenario with the policy's PromQL,
# print budget / burn / traffic figures, assert the documented ranges, stop. Exit 0 only if all pass.
set -eu
here=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)
command -v python3 >/dev/null 2>&1 || { echo "prometheus harness: ERROR: python3 not found" >&2; exit 2; }
exec python3 "$here/harness.py" check "$@"

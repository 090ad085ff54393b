#!/usr/bin/env bash
# Instructions per review of a slo-guard binary, counted by callgrind: 500 /validate and
# 500 /mutate reviews of the captured Deployment CREATE
# (tests/fixtures/captured/deployment-create.json, compacted), over one keep-alive
# HTTP/1.1 connection per endpoint, after four warm-up reviews; the policies of
# tests/load/policies, SLO answers from benches/callgrind/prometheus.py, cached
# (--prometheus-refresh-interval 1h). Instructions are counted only around the 1,000
# reviews (callgrind_control -i on / -d), so start-up is left out; the TLS handshakes of
# the two connections are in.
#
#   bash benches/callgrind/run.sh [BINARY] [OUT]   # default target/release/slo-guard
#
# Prints the HTTP status counts and "Ir per review". Needs valgrind, curl, jq, python3.
# Ports 19391, 19443 and 19080 on 127.0.0.1 must be free.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BIN="$(realpath "${1:-$ROOT/target/release/slo-guard}")"
WORK="$(mktemp -d)"
OUT="${2:-$WORK/callgrind.out}"
PROM=""; SERVER=""
trap 'kill $PROM $SERVER 2>/dev/null || true; rm -rf "$WORK"' EXIT
cd "$ROOT"
"$BIN" certs --out-dir "$WORK/certs" --ip 127.0.0.1 >/dev/null 2>&1
jq -c . tests/fixtures/captured/deployment-create.json > "$WORK/review.json"
python3 benches/callgrind/prometheus.py 19391 & PROM=$!
valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUT" \
  "$BIN" serve --listen 127.0.0.1:19443 --metrics-listen 127.0.0.1:19080 \
  --tls-cert "$WORK/certs/tls.crt" --tls-key "$WORK/certs/tls.key" --policies tests/load/policies \
  --prometheus-url http://127.0.0.1:19391 --prometheus-refresh-interval 1h > "$WORK/serve.log" 2>&1 & SERVER=$!
for _ in $(seq 1 600); do
  curl -sf http://127.0.0.1:19080/readyz >/dev/null 2>&1 && break
  sleep 0.5
done
review() { # <url>...: one curl, one connection; each status on stderr
  curl -s --http1.1 --cacert "$WORK/certs/ca.crt" -H Content-Type:application/json \
    --data-binary "@$WORK/review.json" -w '%{stderr}%{http_code}\n' "$@"
}
for endpoint in validate mutate validate mutate; do
  review "https://127.0.0.1:19443/$endpoint" >/dev/null 2>&1
done
callgrind_control -i on "$SERVER" >/dev/null
for endpoint in validate mutate; do
  echo "/$endpoint: $(review $(for _ in $(seq 500); do echo "https://127.0.0.1:19443/$endpoint"; done) 2>&1 >/dev/null | sort | uniq -c | tr -s ' ')"
done
callgrind_control -d "$SERVER" >/dev/null
sleep 1
total="$(grep -h '^totals:' "$OUT".1 | awk '{print $2}')"
echo "Ir per review: $((total / 1000)) ($total for 1,000 reviews)"
[ -n "${2:-}" ] && echo "profile: $OUT.1 (callgrind_annotate)"
exit 0

#!/usr/bin/env bash
# Runs every test slo-guard has. Installs what the tests need first (idempotent; fast
# when already installed). A missing dependency is a failure, never a skip.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "formatting and lints"
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings

step "cargo test (unit, router over TLS, golden responses, CLI)"
cargo test --all-targets --locked

#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, every test.
# Installs what the tests need on a fresh Debian machine; assumes nothing left running.
set -euo pipefail
cd "$(dirname "$0")/.."

need() { command -v "$1" >/dev/null 2>&1; }
if ! need git; then
  echo "== installing git"
  apt-get update -qq && apt-get install -y -qq git
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --locked --all-targets -- -D warnings
echo "== cargo test"
cargo test --locked

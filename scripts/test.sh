#!/usr/bin/env bash
# The whole test suite, as CI runs it: system packages, format, lints, tests.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install-deps.sh

echo "== cargo fmt --check" >&2
cargo fmt --all -- --check
echo "== cargo clippy" >&2
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo check (fuzz targets)" >&2
cargo check --manifest-path fuzz/Cargo.toml --locked --quiet
echo "== cargo test" >&2
cargo test --workspace --locked

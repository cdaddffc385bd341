#!/usr/bin/env bash
# The test suite, in two tiers.
#
#   ./scripts/test.sh         everything, as CI runs it: system packages, format,
#                             lints (of every target, the fuzz target's too), then
#                             every test
#   ./scripts/test.sh fast    unit and crate tests only (no `tests/` of the root):
#                             seconds once built
#   ./scripts/test.sh e2e     the end-to-end tests in `tests/`: the real binary,
#                             real calls, windows under Xvfb, Chromium
#   ./scripts/test.sh long    the long audio runs (tests/e2e/long_audio.rs): 5 minutes
#                             of clock drift each way and a 10-minute call on real
#                             devices, one after the other (side by side, two
#                             cores starve them), about 16 minutes; not in CI
set -euo pipefail
cd "$(dirname "$0")/.."

tier="${1:-all}"
case "$tier" in
  all | fast | e2e | long) ;;
  *)
    echo "usage: $0 [fast|e2e|long]   (no argument: everything, as CI runs it)" >&2
    exit 2
    ;;
esac

./scripts/install-deps.sh

case "$tier" in
  fast)
    echo "== cargo test: unit and crate tests" >&2
    exec cargo test --workspace --exclude duet-e2e --locked
    ;;
  e2e)
    echo "== cargo test: end-to-end tests" >&2
    exec cargo test -p duet-e2e --locked
    ;;
  long)
    echo "== cargo test: the long audio runs" >&2
    exec cargo test -p duet-e2e --locked --test e2e -- --ignored --nocapture --test-threads=1 long_audio::
    ;;
esac

echo "== cargo fmt --check" >&2
cargo fmt --all -- --check
echo "== cargo clippy" >&2
# The fuzz target is a workspace member, so this checks it too: on its own
# workspace it checked its dependencies a second time, 40 s of a cold run.
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test" >&2
# `--tests`: every crate's unit tests and every file of `tests/`, without
# building the examples again (clippy above has compiled and linted them, and
# building them here took a minute of a cold run). No crate has doc tests.
# `--no-fail-fast`: one failing file does not hide the others' results.
cargo test --workspace --locked --tests --no-fail-fast

#!/usr/bin/env bash
# The test suite, in two tiers, and the lints.
#
#   ./scripts/test.sh         everything, as CI runs it: system packages, format,
#                             then every test (the examples are built too)
#   ./scripts/test.sh lint    format and clippy on every target (the examples,
#                             the benchmarks, the fuzz target): run it before you
#                             commit; CI does not, for time (a cold clippy took
#                             10.6 of the 44 min a cold suite took)
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
  all | lint | fast | e2e | long) ;;
  *)
    echo "usage: $0 [lint|fast|e2e|long]   (no argument: everything, as CI runs it)" >&2
    exit 2
    ;;
esac

# The crates download while the system packages install: a fresh machine (CI)
# has neither. A fetch that fails says so again, with its reason, in the build.
# A full run installs only what compiling needs before it builds, and the
# rest (Chromium, the desktop, the sound and network servers) while the tree
# compiles; the other tiers install everything first.
cargo fetch --locked >/dev/null 2>&1 &
fetching=$!
if [ "$tier" = all ]; then
  ./scripts/install-deps.sh build
else
  ./scripts/install-deps.sh
fi
wait "$fetching" || true

check_format() {
  echo "== cargo fmt --check" >&2
  cargo fmt --all -- --check
}

case "$tier" in
  lint)
    check_format
    echo "== cargo clippy" >&2
    # The fuzz target is a workspace member, so this checks it too.
    cargo clippy --workspace --all-targets --locked -- -D warnings
    # The media crate without its Wayland portal feature, as a build for a
    # desktop without one gets it.
    exec cargo clippy -p duet-media --no-default-features --all-targets --locked -- -D warnings
    ;;
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

runtime_log="$(mktemp)"
./scripts/install-deps.sh run >"$runtime_log" 2>&1 &
installing=$!
check_format
target_dir="${CARGO_TARGET_DIR:-target}"
# A first build (a fresh clone, as in CI) gains nothing from incremental
# compilation's bookkeeping: without it, Duet's and the patched WebRTC
# crates built in 248 s instead of 277. Later builds keep it.
if [ ! -d "$target_dir" ]; then
  export CARGO_INCREMENTAL=0
fi
# The app is built with the tests, in one cargo run, so that both see the
# same features of their dependencies: the end-to-end tests' own
# `cargo build -p duet` resolved them for the app alone and compiled most of
# the tree again, inside the first test of a cold run.
# (`--bin duet`, not `--bins`: the fuzz target's binary would bring libFuzzer's
# C++ build; the examples are built below, as test targets.)
echo "== cargo build: the tests and the app ($SECONDS s in)" >&2
cargo build --workspace --locked --bin duet --tests
echo "== the packages the tests run ($SECONDS s in)" >&2
if ! wait "$installing"; then
  cat "$runtime_log" >&2
  echo "test.sh: installing the packages the tests need failed (above)" >&2
  exit 1
fi
cat "$runtime_log" >&2
rm -f "$runtime_log"
case "$target_dir" in
  /*) ;;
  *) target_dir="$PWD/$target_dir" ;;
esac
export DUET_BIN="$target_dir/debug/duet"
echo "== cargo test ($SECONDS s in)" >&2
# `--tests`: every crate's unit tests and every file of `tests/`; `--examples`:
# the examples as test targets, so they keep compiling (their helpers' unit
# tests run; their `main` does not). No crate has doc tests. Clippy is not
# run here: checking every dependency apart from the build took 10.6 min of
# a cold run on 2 cores, and the build after it reused only the build
# scripts (`./scripts/test.sh lint`).
# `--no-fail-fast`: one failing file does not hide the others' results.
cargo test --workspace --locked --tests --examples --no-fail-fast

#!/usr/bin/env bash
# Builds Duet and runs its main job: `duet demo`, a real call between two ends
# on this machine, through an embedded signaling server, in one window.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install-deps.sh
cargo build --release --locked -p duet
exec ./target/release/duet demo "$@"

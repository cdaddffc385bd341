#!/usr/bin/env bash
# Builds Duet and runs its main job. For now that is the signaling server
# (`duet serve` on 127.0.0.1:8787); once the call and window land, `duet demo`.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install-deps.sh
cargo build --release --locked -p duet
exec ./target/release/duet serve "$@"

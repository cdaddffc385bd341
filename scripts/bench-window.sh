#!/usr/bin/env bash
# What the window costs: CPU (% of one core) and resident memory of a caller
# over 15 s of a 640x480 call with the test signals, windowed under Xvfb
# (Mesa's software renderer: no GPU here) against the same call headless, and
# of a window with nothing to show (the error screen) to show it does not spin.
# The windowed caller's report also gives the latency of the pictures it
# showed (video.display_latency_ms, stamps read at paint).
# Needs a release build: cargo build --release -p duet
set -euo pipefail
cd "$(dirname "$0")/.."
duet=./target/release/duet
runs=${1:-3}

display=:$((400 + $$ % 400))
Xvfb "$display" -screen 0 1280x800x24 -nolisten tcp >/dev/null 2>&1 &
xvfb=$!
runtime_dir=$(mktemp -d)
reports=$(mktemp -d)
server_out=$(mktemp)
"$duet" serve --listen 127.0.0.1:0 >"$server_out" 2>/dev/null &
server=$!
trap 'kill $server $xvfb 2>/dev/null; rm -rf "$runtime_dir" "$reports" "$server_out"' EXIT
sleep 1
url="ws://$(head -1 "$server_out")"
ticks=$(getconf CLK_TCK)

# cpu_ticks PID: user+system ticks of a process so far.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# measure NAME COMMAND...: starts COMMAND, waits 5 s, then samples 15 s.
measure() {
  local name=$1; shift
  "$@" >/dev/null 2>&1 &
  local pid=$!
  sleep 5
  local before; before=$(cpu_ticks "$pid")
  sleep 15
  local after; after=$(cpu_ticks "$pid")
  local rss; rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  awk -v n="$name" -v d=$((after - before)) -v t="$ticks" -v r="$rss" \
    'BEGIN { printf "%-28s %5.1f %% of a core  %6.1f MB\n", n, 100 * d / t / 15, r / 1024 }'
}

for run in $(seq 1 "$runs"); do
  room="bench-$run"
  "$duet" callee --headless --server "$url" --room "$room" --video test --audio test \
    --tone-hz 660 >/dev/null 2>&1 &
  callee=$!
  measure "run $run: caller, window" env DISPLAY="$display" XDG_RUNTIME_DIR="$runtime_dir" \
    "$duet" caller --server "$url" --room "$room" --video test --audio test \
    --stats-json "$reports/window-$run.json"
  # The report is written when the window closes (SIGTERM closes it).
  for _ in $(seq 1 30); do [ -s "$reports/window-$run.json" ] && break; sleep 0.1; done
  printf '%-28s display latency %s\n' "run $run: caller, window" \
    "$(tr -d ' \n' <"$reports/window-$run.json" 2>/dev/null \
      | grep -o '"display_latency_ms":{[^}]*}' || echo 'not reported')"
  measure "run $run: caller, headless" \
    "$duet" caller --headless --server "$url" --room "$room" --video test --audio test
  kill $callee; wait $callee 2>/dev/null || true
  measure "run $run: window, error screen" env DISPLAY="$display" XDG_RUNTIME_DIR="$runtime_dir" \
    "$duet" caller --server ws://127.0.0.1:1 --video test --audio test
done

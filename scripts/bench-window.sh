#!/usr/bin/env bash
# What the window costs: CPU (% of one core) and resident memory of a caller
# over 15 s of a 640x480 call with the test signals, windowed under Xvfb
# (Mesa's software renderer: no GPU here) against the same call headless, and
# of a window with nothing to show (the error screen) to show it does not spin.
# The windowed and the headless caller run at the same time (each in a room
# of its own, against a headless callee) and are sampled over the same 15 s,
# so a shared, noisy machine slows both alike: each run gives a ratio, and the
# last line is the median of the runs' ratios.
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

# sample NAME PID...: CPU and RSS of each PID over the same 15 s, after 5 s.
# Prints one line per PID and leaves their CPU in the array `cpu`.
sample() {
  sleep 5
  local before=() pid
  for pid in "$@"; do before+=("$(cpu_ticks "$pid")"); done
  sleep 15
  cpu=()
  local i=0
  for pid in "$@"; do
    local after; after=$(cpu_ticks "$pid")
    local rss; rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
    cpu+=("$(awk -v d=$((after - ${before[$i]})) -v t="$ticks" 'BEGIN { printf "%.1f", 100 * d / t / 15 }')")
    awk -v n="${names[$i]}" -v c="${cpu[$i]}" -v r="$rss" \
      'BEGIN { printf "%-28s %5.1f %% of a core  %6.1f MB\n", n, c, r / 1024 }'
    i=$((i + 1))
  done
}

ratios=()
for run in $(seq 1 "$runs"); do
  callees=()
  for room in "window-$run" "headless-$run"; do
    "$duet" callee --headless --server "$url" --room "$room" --video test --audio test \
      --tone-hz 660 >/dev/null 2>&1 &
    callees+=($!)
  done
  env DISPLAY="$display" XDG_RUNTIME_DIR="$runtime_dir" \
    "$duet" caller --server "$url" --room "window-$run" --video test --audio test \
    --stats-json "$reports/window-$run.json" >/dev/null 2>&1 &
  window=$!
  "$duet" caller --headless --server "$url" --room "headless-$run" --video test --audio test \
    >/dev/null 2>&1 &
  headless=$!
  names=("run $run: caller, window" "run $run: caller, headless")
  sample "$window" "$headless"
  ratios+=("$(awk -v w="${cpu[0]}" -v h="${cpu[1]}" 'BEGIN { printf "%.2f", (h > 0 ? w / h : 0) }')")
  echo "run $run: window / headless   ${ratios[-1]}x"
  kill "$window" "$headless"
  wait "$window" "$headless" 2>/dev/null || true
  # The report is written when the window closes (SIGTERM closes it).
  for _ in $(seq 1 30); do [ -s "$reports/window-$run.json" ] && break; sleep 0.1; done
  printf '%-28s display latency %s\n' "run $run: caller, window" \
    "$(tr -d ' \n' <"$reports/window-$run.json" 2>/dev/null \
      | grep -o '"display_latency_ms":{[^}]*}' || echo 'not reported')"
  kill "${callees[@]}"; wait "${callees[@]}" 2>/dev/null || true

  env DISPLAY="$display" XDG_RUNTIME_DIR="$runtime_dir" \
    "$duet" caller --server ws://127.0.0.1:1 --video test --audio test >/dev/null 2>&1 &
  idle=$!
  names=("run $run: window, error screen")
  sample "$idle"
  kill "$idle"; wait "$idle" 2>/dev/null || true
done
printf 'median window / headless ratio over %s runs: %sx\n' "$runs" \
  "$(printf '%s\n' "${ratios[@]}" | sort -n | awk '{ r[NR] = $1 } END { print (NR % 2 ? r[(NR + 1) / 2] : (r[NR / 2] + r[NR / 2 + 1]) / 2) }')"

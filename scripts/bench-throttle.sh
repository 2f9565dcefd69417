#!/usr/bin/env bash
# Throughput benchmark: N shots against the simulator with a rate limit, W workers
# and a time scale. Prints the makespan against the ideal
#   max(shots / rate, ceil(shots / workers) * render time),
# the submits answered 429 and the requests per shot. Figures: docs/BENCHMARKS.md.
#   scripts/bench-throttle.sh [--shots 1000] [--workers 100] [--rate 15] [--scale 0.05] [--margin 0.97]
# --rate is the provider's limit in submits per real second (a fixed 60 s simulated
# window); the daemon is configured at --margin of it.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
. "$ROOT/scripts/lib.sh"

shots=1000 workers=100 rate=15 scale=0.05 margin=0.97 render=138
while [ $# -gt 0 ]; do
  case "$1" in
    --shots) shots=$2; shift 2 ;;
    --workers) workers=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --scale) scale=$2; shift 2 ;;
    --margin) margin=$2; shift 2 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

ensure_packages
build build
BIN="$ROOT/build"
W=$(mktemp -d /tmp/wanbatch-bench.XXXXXX)
mkdir -p "$W"/{spool/incoming,spool/done,spool/failed,state,out,media}
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

window=60                                     # simulated seconds
per_window=$(awk -v r="$rate" -v w="$window" -v s="$scale" 'BEGIN { printf "%d", r * w * s }')
"$BIN/segmind-sim" --port 0 --port-file "$W/port" --time-scale "$scale" --workers "$workers" \
  --render-seconds "$render" --rate-limit "$per_window" --rate-window "$window" 2>"$W/sim.log" &
pids+=($!)
for _ in $(seq 100); do [ -s "$W/port" ] && break; sleep 0.05; done
port=$(cat "$W/port")
daemon_rate=$(awk -v r="$rate" -v m="$margin" 'BEGIN { printf "%.1f", r * 60 * m }')
daemon_window=$(awk -v w="$window" -v s="$scale" 'BEGIN { printf "%.4g", w * s }')  # the provider's window, in real seconds
cat >"$W/wanbatch.yaml" <<YAML
api: {base_url: 'http://127.0.0.1:$port', storage_url: 'http://127.0.0.1:$port/upload-asset', allow_loopback_http: true}
spool: {incoming: $W/spool/incoming, done: $W/spool/done, failed: $W/spool/failed, settle_seconds: 0}
state_dir: $W/state
output_root: $W/out
input_roots: [$W/media]
limits: {max_in_flight: $((workers * 2)), submits_per_minute: $daemon_rate, submit_window_seconds: $daemon_window, max_shots_per_manifest: $shots, max_concurrent_downloads: 16}
poll: {min_interval_seconds: 0.05, max_interval_seconds: 1}
retry: {base_delay_seconds: 0.1, max_delay_seconds: 2}
log_level: warn
YAML
{
  echo "batch: bench"
  echo "shots:"
  for i in $(seq 1 "$shots"); do
    echo "  - {id: s$i, prompt: \"shot $i\", image: 'https://cdn.example/f.png', duration: 5}"
  done
} >"$W/media/bench.yaml"

SEGMIND_API_KEY=bench "$BIN/wanbatch" --config "$W/wanbatch.yaml" daemon 2>"$W/daemon.log" &
pids+=($!)
sleep 0.5
start=$(date +%s.%N)
mv "$W/media/bench.yaml" "$W/spool/incoming/bench.yaml"
while [ ! -f "$W/out/bench/report.json" ]; do sleep 0.05; done
end=$(date +%s.%N)
daemon_pid=${pids[1]}
cpu=$(awk '{ printf "%.2f", ($14 + $15) / 100 }' "/proc/$daemon_pid/stat")
peak_kib=$(awk '/VmHWM/ { print $2 }' "/proc/$daemon_pid/status")

stats=$(curl -s "http://127.0.0.1:$port/sim/stats" 2>/dev/null || true)
if [ -z "$stats" ]; then
  stats=$(exec 3<>"/dev/tcp/127.0.0.1/$port"; printf 'GET /sim/stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' >&3; tail -n 1 <&3)
fi
field() { echo "$stats" | sed -n "s/.*\"$1\":\([0-9.]*\).*/\1/p"; }
done_count=$(grep -o '"DONE": *[0-9]*' "$W/out/bench/report.json" | grep -o '[0-9]*$')
awk -v s="$start" -v e="$end" -v n="$shots" -v w="$workers" -v r="$rate" -v sc="$scale" -v rt="$render" \
    -v acc="$(field submits_accepted)" -v lim="$(field rate_limited)" -v req="$(field requests)" -v ok="$done_count" '
BEGIN {
  makespan = e - s
  by_rate = n / r
  by_workers = int((n + w - 1) / w) * rt * sc
  ideal = by_rate > by_workers ? by_rate : by_workers
  printf "shots %d (DONE %d), workers %d, rate limit %.1f/s, render %.2f s real\n", n, ok, w, r, rt * sc
  printf "makespan %.2f s, ideal %.2f s (rate %.2f s, workers %.2f s): %+.1f%%\n", makespan, ideal, by_rate, by_workers, (makespan / ideal - 1) * 100
  printf "submits accepted %d, answered 429: %d (%.2f%% of %d submit requests)\n", acc, lim, 100 * lim / (acc + lim), acc + lim
  printf "requests per shot %.2f\n", req / n
}'
echo "daemon cpu ${cpu} s, peak rss $((peak_kib / 1024)) MiB"

#!/usr/bin/env bash
# Rehearsal benchmark (issue 10): how well `wanbatch rehearse` predicts a real run.
# On segmind-sim at --scale (real seconds per simulated second), with the poll, credit
# and retry intervals, the prior render time and the rates of config/wanbatch.yaml's
# defaults scaled by it, so the run stands for a real one:
#   1. rehearse the batch with nothing learned (the prior) and no daemon (balance unknown);
#   2. render it for real: the daemon against the simulator (renders vary by class, a
#      lognormal spread and a tail, as in bench-polling);
#   3. rehearse the same shots again (under another batch name: the store now has this
#      one, so its own manifest would be a no-op revision) with what the daemon learned,
#      the daemon still running (its balance known, the local images uploaded);
#   4. render that second batch for real too.
# Prints predicted (prior, learned) and actual makespan (first submit to last video
# written, simulated seconds), API requests (in all, and by endpoint: submit, status,
# result, upload, credits) and credits, and checks that neither rehearsal sent one
# request (the simulator counts them).
# Exits 0 when the run finished and the rehearsals sent nothing, 1 if not.
# Figures: docs/BENCHMARKS.md, "Rehearsal".
#   scripts/bench-rehearse.sh [--shots 24] [--scale 0.01] [--seed 7] [--build build]
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
. "$ROOT/scripts/lib.sh"

shots=24 scale=0.01 seed=7 BUILD=build spread=0.075 tail=0.05:2
while [ $# -gt 0 ]; do
  case "$1" in
    --shots) shots=$2; shift 2 ;;
    --scale) scale=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --build) BUILD=$2; shift 2 ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

command -v jq >/dev/null || WANBATCH_PACKAGES+=(jq)
command -v curl >/dev/null || WANBATCH_PACKAGES+=(curl)
ensure_packages
BIN="$ROOT/$BUILD"
if [ ! -x "$BIN/wanbatch" ] || [ ! -x "$BIN/segmind-sim" ]; then build "$BUILD"; fi

W=$(mktemp -d /tmp/wanbatch-bench-rehearse.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
s() { awk -v v="$1" -v k="$scale" 'BEGIN { printf "%.10g", v * k }'; }   # seconds, scaled
r() { awk -v v="$1" -v k="$scale" 'BEGIN { printf "%.10g", v / k }'; }   # rates, scaled

mkdir -p "$W"/spool/{incoming,active,done,failed} "$W/state" "$W/out" "$W/media"
cp "$ROOT/examples/frames/sh010.png" "$W/media/a.png"
cp "$ROOT/examples/frames/sh020.png" "$W/media/b.png"
"$BIN/segmind-sim" --port 0 --port-file "$W/port" --time-scale "$scale" --workers 8 --render-by-class \
  --render-spread "$spread" --render-tail "$tail" --seed "$seed" --credits 100000 2>"$W/sim.log" &
pids+=($!)
for _ in $(seq 200); do [ -s "$W/port" ] && break; sleep 0.05; done
[ -s "$W/port" ] || { echo "segmind-sim did not start (log: $W/sim.log)" >&2; exit 1; }
port=$(cat "$W/port")
sim_get() { curl -sf "http://127.0.0.1:$port$1"; }

cat >"$W/wanbatch.yaml" <<YAML
api: {base_url: 'http://127.0.0.1:$port', storage_url: 'http://127.0.0.1:$port/upload-asset', allow_loopback_http: true}
spool: {incoming: $W/spool/incoming, active: $W/spool/active, done: $W/spool/done, failed: $W/spool/failed, settle_seconds: 0.1}
state_dir: $W/state
output_root: $W/out
input_roots: [$W/media]
log_level: warn
metrics: {listen: ""}
limits: {max_in_flight: 8, submits_per_minute: $(r 20)}
credits: {check_interval_seconds: $(s 300)}
poll: {min_interval_seconds: $(s 2), max_interval_seconds: $(s 300), prior_render_seconds: $(s 138)}
retry: {max_attempts: 5, base_delay_seconds: $(s 1), max_delay_seconds: $(s 60)}
YAML

manifest="$W/media/bench.yaml"
{
  echo "batch: bench"
  echo "base_dir: $W/media"
  echo "shots:"
  for i in $(seq 1 "$shots"); do
    res=720P dur=5 img="'https://cdn.example/f.png'"
    [ $((i % 4)) -ge 2 ] && dur=10
    [ $((i % 3)) -eq 0 ] && res=1080P
    [ $((i % 6)) -eq 1 ] && img=a.png
    [ $((i % 6)) -eq 4 ] && img=b.png
    echo "  - {id: s$i, prompt: \"shot $i\", image: $img, duration: $dur, resolution: $res}"
  done
} >"$manifest"

wb() { SEGMIND_API_KEY=bench "$BIN/wanbatch" --config "$W/wanbatch.yaml" "$@"; }
endpoints() { sim_get /sim/stats | jq -c '.endpoints | {submit, status, result, upload, credits}'; }

before=$(sim_get /sim/stats | jq .requests)
t0=$(date +%s.%N)
wb rehearse --json "$manifest" >"$W/prior.json" || true
t1=$(date +%s.%N)
[ "$(sim_get /sim/stats | jq .requests)" = "$before" ] || { echo "FAIL: the rehearsal sent requests" >&2; exit 1; }

SEGMIND_API_KEY=bench "$BIN/wanbatch" --config "$W/wanbatch.yaml" daemon 2>"$W/daemon.log" &
daemon_pid=$!
pids+=("$daemon_pid")
wb submit "$manifest" >/dev/null
for _ in $(seq 6000); do [ -s "$W/out/bench/report.json" ] && break; sleep 0.1; done
[ -s "$W/out/bench/report.json" ] || { echo "FAIL: the real run did not finish (log: $W/daemon.log)" >&2; exit 1; }
actual_endpoints=$(endpoints)
actual_credits=$(jq '.total_cost' "$W/out/bench/report.json")
jobs=$(sim_get /sim/jobs)
actual_makespan=$(echo "$jobs" | jq '([.jobs[].last_download] | max) - ([.jobs[].submitted] | min)')

sent=$(sim_get /sim/stats | jq '.endpoints.submit')
# The same shots under another batch name: the store has `bench` now, and a
# rehearsal of its own manifest would be a no-op revision (nothing to render).
sed 's/^batch: bench$/batch: bench-again/' "$manifest" >"$W/again.yaml"
# The daemon stores what it learned at most every 10 s: rehearse once its render times of
# this run are in the store (each rehearsal reads them, sends nothing, and takes 0.5 s).
for _ in $(seq 60); do
  wb rehearse --json "$W/again.yaml" >"$W/learned.json" || true
  [ "$(jq '.learned_render_samples' "$W/learned.json" 2>/dev/null || echo 0)" -ge "$shots" ] && break
  sleep 1
done
[ "$(sim_get /sim/stats | jq '.endpoints.submit')" = "$sent" ] || { echo "FAIL: the rehearsal submitted" >&2; exit 1; }

# 4. The second batch for real: what the daemon sends for it (the simulator's counters, before and after).
before_again=$(endpoints)
sim_before=$(sim_get /sim/jobs | jq .now)
wb submit "$W/again.yaml" >/dev/null
for _ in $(seq 6000); do [ -s "$W/out/bench-again/report.json" ] && break; sleep 0.1; done
[ -s "$W/out/bench-again/report.json" ] || { echo "FAIL: the second real run did not finish (log: $W/daemon.log)" >&2; exit 1; }
again_endpoints=$(jq -cn --argjson a "$(endpoints)" --argjson b "$before_again" \
  '{submit: ($a.submit - $b.submit), status: ($a.status - $b.status), result: ($a.result - $b.result),
    upload: ($a.upload - $b.upload), credits: ($a.credits - $b.credits)}')
again_credits=$(jq '.total_cost' "$W/out/bench-again/report.json")
again_makespan=$(sim_get /sim/jobs | jq --argjson t "$sim_before" \
  '[.jobs[] | select(.submitted >= $t)] | ([.[].last_download] | max) - ([.[].submitted] | min)')
kill "$daemon_pid" 2>/dev/null || true

by_endpoint='"\(.submit // 0)/\(.status // 0)/\(.result // 0)/\(.upload // 0)/\(.credits // 0)"'
row() {  # label json
  jq -r --arg name "$1" --argjson k "$scale" \
    '[$name, (if .makespan_seconds then (.makespan_seconds / $k | round | tostring) else "-" end),
      (.api_requests | tostring), (.requests | '"$by_endpoint"'), (.credits | tostring),
      (.learned_render_samples | tostring)] | @tsv' "$2"
}
real_row() {  # label makespan endpoints credits
  jq -rn --arg name "$1" --argjson m "$2" --argjson e "$3" --arg c "$4" \
    '[$name, ($m + 0.5 | floor | tostring), ($e | .submit + .status + .result + .upload + .credits | tostring),
      ($e | '"$by_endpoint"'), $c, "-"] | @tsv'
}
echo "rehearsal vs real run: $shots shots, --scale $scale, seed $seed, 8 in flight (simulated seconds)"
{
  printf 'run\tmakespan_s\tapi_requests\tsubmit/status/result/upload/credits\tcredits\tlearned_samples\n'
  row "rehearse (prior)" "$W/prior.json"
  real_row "real run" "$actual_makespan" "$actual_endpoints" "$actual_credits"
  row "rehearse (learned), batch 2" "$W/learned.json"
  real_row "real run, batch 2" "$again_makespan" "$again_endpoints" "$again_credits"
} | column -t -s $'\t'
printf 'the first rehearsal took %.2f s of real time; neither rehearsal sent a request\n' \
  "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')"

#!/usr/bin/env bash
# Polling benchmark (issue 8): wanbatch as a real daemon against segmind-pattern, a
# client that follows the provider's documented pattern (submit, poll the status URL
# every 2 s, result, download), on the same simulator settings and seed, for
#   (a) no provider queue: simulator workers = limits.max_in_flight
#   (b) a provider queue:  simulator workers = max_in_flight / 2
# Renders vary by class (720P/1080P, 5/10 s): a lognormal spread of sigma 0.075 (95% within
# about ±15%, the baseline's "138 s ±15%") and a heavier tail (5% of jobs up to 2x slower).
# Time is compressed by --scale; every time-valued key of config/wanbatch.yaml (*_seconds,
# *_per_minute, *_per_second) is the shipped default scaled by it, so the run stands for
# a real one. Prints per scenario requests/shot by endpoint, mean and p95 detection delay
# (first COMPLETED answer - actual finish, as % of the job's render time), makespan (first
# submit to last download, simulated seconds), CPU per shot and peak RSS, then a PASS or
# FAIL line per target. Exits 0 when the runs finished (whatever the targets), 1 if not.
# Figures: docs/BENCHMARKS.md, "Polling".
#   scripts/bench-polling.sh [--quick] [--shots 100] [--scale 0.02] [--seed 7]
#                            [--spread 0.075] [--tail 0.05:2] [--build build]
#                            [--only a|b] [--log-level debug] [--no-scale]
# --quick: 40 shots at --scale 0.01 (about two minutes instead of nine).
# --only: one scenario; --log-level: the daemon's (debug logs every poll decision, in
# <work dir>/<scenario>-wanbatch/daemon.log); --no-scale: skip bench-scale.sh at the end.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
. "$ROOT/scripts/lib.sh"

shots=100 scale=0.02 seed=7 spread=0.075 tail=0.05:2 BUILD=build pattern_interval=2
scenarios="a b" log_level=warn with_scale=1
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) shots=40 scale=0.01; shift ;;
    --shots) shots=$2; shift 2 ;;
    --scale) scale=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --spread) spread=$2; shift 2 ;;
    --tail) tail=$2; shift 2 ;;
    --build) BUILD=$2; shift 2 ;;
    --only) case "$2" in a|b) scenarios=$2 ;; *) echo "--only takes a or b" >&2; exit 2 ;; esac; shift 2 ;;
    --log-level) log_level=$2; shift 2 ;;
    --no-scale) with_scale=0; shift ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

command -v jq >/dev/null || WANBATCH_PACKAGES+=(jq)
command -v curl >/dev/null || WANBATCH_PACKAGES+=(curl)
ensure_packages
BIN="$ROOT/$BUILD"
if [ ! -x "$BIN/wanbatch" ] || [ ! -x "$BIN/segmind-sim" ] || [ ! -x "$BIN/segmind-pattern" ]; then
  build "$BUILD"
fi

W=$(mktemp -d /tmp/wanbatch-bench-polling.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

# --- the shipped defaults, scaled --------------------------------------------------
# section.key -> value for every scalar of a two-level YAML file, comments dropped.
read_defaults() {
  awk '
    /^[A-Za-z_]+:[ \t]*(#.*)?$/ { sec = $1; sub(":", "", sec); next }
    /^[A-Za-z_]+:/ { sec = ""; }
    /^  [A-Za-z_]+:[ \t]*[^ \t#]/ {
      line = $0; sub(/[ \t]+#.*/, "", line); sub(/^  /, "", line)
      key = line; sub(/:.*/, "", key); val = line; sub(/^[^:]*:[ \t]*/, "", val)
      if (sec != "") print sec "." key "\t" val
    }' "$ROOT/config/wanbatch.yaml"
}
declare -A cfg scaled_from
while IFS=$'\t' read -r key val; do
  case "$key" in
    *_seconds) cfg[$key]=$(awk -v v="$val" -v s="$scale" 'BEGIN { printf "%.10g", v * s }'); scaled_from[$key]=$val ;;
    *_per_minute|*_per_second) cfg[$key]=$(awk -v v="$val" -v s="$scale" 'BEGIN { printf "%.10g", v / s }'); scaled_from[$key]=$val ;;
  esac
  [ "$key" = limits.max_in_flight ] && in_flight=$val
done < <(read_defaults)
: "${in_flight:?config/wanbatch.yaml has no limits.max_in_flight}"
cfg[api.allow_loopback_http]=true
cfg[limits.max_shots_per_manifest]=$((shots > 1000 ? shots : 1000))
cfg[limits.max_in_flight]=$in_flight

# Writes the daemon's config for a simulator on port $2 into $1/wanbatch.yaml.
write_config() {
  local dir=$1 port=$2
  cfg[api.base_url]="'http://127.0.0.1:$port'"
  cfg[api.storage_url]="'http://127.0.0.1:$port/upload-asset'"
  cfg[spool.incoming]=$dir/spool/incoming cfg[spool.active]=$dir/spool/active
  cfg[spool.done]=$dir/spool/done cfg[spool.failed]=$dir/spool/failed
  {
    echo "state_dir: $dir/state"
    echo "output_root: $dir/out"
    echo "input_roots: [$dir/media]"
    echo "log_level: $log_level"
    local sec
    for sec in $(printf '%s\n' "${!cfg[@]}" | cut -d. -f1 | sort -u); do
      echo "$sec:"
      local k
      for k in $(printf '%s\n' "${!cfg[@]}" | grep "^$sec\." | sort); do echo "  ${k#*.}: ${cfg[$k]}"; done
    done
  } >"$dir/wanbatch.yaml"
}

# --- the batch ----------------------------------------------------------------------
manifest="$W/bench.yaml"
{
  echo "batch: bench"
  echo "shots:"
  for i in $(seq 1 "$shots"); do
    res=720P dur=5
    [ $((i % 4)) -ge 2 ] && dur=10
    [ $((i % 3)) -eq 0 ] && res=1080P
    echo "  - {id: s$i, prompt: \"shot $i\", image: 'https://cdn.example/f.png', duration: $dur, resolution: $res}"
  done
} >"$manifest"

start_sim() {  # dir workers -> port in $dir/port
  local dir=$1 workers=$2
  "$BIN/segmind-sim" --port 0 --port-file "$dir/port" --time-scale "$scale" --workers "$workers" \
    --render-by-class --render-spread "$spread" --render-tail "$tail" --seed "$seed" --credits 1000000 \
    2>"$dir/sim.log" &
  pids+=($!)
  sim_pid=$!
  for _ in $(seq 200); do [ -s "$dir/port" ] && break; sleep 0.05; done
  [ -s "$dir/port" ] || { echo "segmind-sim did not start (log: $dir/sim.log)" >&2; exit 1; }
}

sim_get() { curl -sf "http://127.0.0.1:$(cat "$1/port")$2"; }

notes=()
# The daemon must take the scaled config; where it refuses a value (a validation floor,
# an integer key), the nearest accepted value is used and the refusal reported.
fit_config() {
  local dir=$1 out key msg lo val
  for _ in $(seq 30); do
    write_config "$dir" "$(cat "$dir/port")"
    if out=$(SEGMIND_API_KEY=bench "$BIN/wanbatch" --config "$dir/wanbatch.yaml" validate "$manifest" 2>&1); then return 0; fi
    key=$(echo "$out" | sed -n 's/.*wanbatch\.yaml:[0-9]*: \([a-z_.]*\): .*/\1/p' | head -n 1)
    msg=$(echo "$out" | sed -n 's/.*wanbatch\.yaml:[0-9]*: [a-z_.]*: \(.*\)/\1/p' | head -n 1)
    [ -n "$key" ] && [ -n "${cfg[$key]:-}" ] || { echo "wanbatch refused the benchmark's config: $out" >&2; exit 1; }
    val=${cfg[$key]}
    case "$msg" in
      "must be an integer") cfg[$key]=$(awk -v v="$val" 'BEGIN { printf "%d", (v == int(v)) ? v : int(v) + 1 }') ;;
      "must be between "*) lo=$(echo "$msg" | awk '{ print $4 }'); cfg[$key]=$lo ;;
      *) echo "wanbatch refused the benchmark's config: $out" >&2; exit 1 ;;
    esac
    notes+=("$key: default ${scaled_from[$key]:-?} x scale $scale = $val refused by wanbatch ($msg); used ${cfg[$key]}")
  done
  echo "could not fit the config to wanbatch's validation" >&2
  exit 1
}

clk_tck=$(getconf CLK_TCK)
run_wanbatch() {  # dir workers
  local dir=$1 workers=$2
  mkdir -p "$dir"/{spool/incoming,spool/active,spool/done,spool/failed,state,out,media}
  start_sim "$dir" "$workers"
  fit_config "$dir"
  cp "$manifest" "$dir/media/bench.yaml"
  SEGMIND_API_KEY=bench "$BIN/wanbatch" --config "$dir/wanbatch.yaml" daemon 2>"$dir/daemon.log" &
  pids+=($!)
  local daemon=$! deadline=$((SECONDS + 3600))
  mv "$dir/media/bench.yaml" "$dir/spool/incoming/bench.yaml"
  while [ ! -f "$dir/out/bench/report.json" ]; do
    kill -0 "$daemon" 2>/dev/null || { echo "wanbatch stopped (log: $dir/daemon.log)" >&2; exit 1; }
    [ $SECONDS -lt $deadline ] || { echo "wanbatch did not finish (log: $dir/daemon.log)" >&2; exit 1; }
    sleep 0.2
  done
  local cpu rss
  cpu=$(awk -v t="$clk_tck" '{ printf "%.3f", ($14 + $15) / t }' "/proc/$daemon/stat")
  rss=$(awk '/VmHWM/ { print $2 }' "/proc/$daemon/status")
  sim_get "$dir" /sim/stats >"$dir/stats.json"
  sim_get "$dir" /sim/jobs >"$dir/jobs.json"
  jq -n --argjson cpu "$cpu" --argjson rss "$rss" --slurpfile r "$dir/out/bench/report.json" \
    '{cpu_seconds: $cpu, peak_rss_kib: $rss, report: $r[0]}' >"$dir/client.json"
  kill "$daemon" "$sim_pid" 2>/dev/null || true
}

run_pattern() {  # dir workers
  local dir=$1 workers=$2
  mkdir -p "$dir"
  start_sim "$dir" "$workers"
  SEGMIND_API_KEY=bench "$BIN/segmind-pattern" --base-url "http://127.0.0.1:$(cat "$dir/port")" \
    --manifest "$manifest" --in-flight "$in_flight" \
    --interval "$(awk -v p="$pattern_interval" -v s="$scale" 'BEGIN { print p * s }')" \
    --timeout "$(awk -v s="$scale" 'BEGIN { t = 60 * s; print t < 1 ? 1 : t }')" >"$dir/client.json"
  sim_get "$dir" /sim/stats >"$dir/stats.json"
  sim_get "$dir" /sim/jobs >"$dir/jobs.json"
  kill "$sim_pid" 2>/dev/null || true
}

# One run's figures as JSON, from the simulator's stats and jobs and the client's CPU and RSS.
figures() {
  jq -n --argjson n "$shots" --slurpfile s "$1/stats.json" --slurpfile j "$1/jobs.json" --slurpfile c "$1/client.json" '
    def p95: sort | .[((length * 0.95 | ceil) - 1)];
    ($j[0].jobs | map(select(.fails | not) | select(.first_completed != null)
                      | (.first_completed - .finish) / .render * 100)) as $d
    | {requests: (($s[0].endpoints | map_values(. / $n)) + {total: ($s[0].requests / $n)}),
       detected: ($d | length),
       delay_mean: ($d | add / length), delay_p95: ($d | p95),
       makespan: (($j[0].jobs | map(.last_download // 0) | max) - ($j[0].jobs | map(.submitted) | min)),
       cpu_ms_per_shot: ($c[0].cpu_seconds * 1000 / $n), peak_rss_mib: ($c[0].peak_rss_kib / 1024)}'
}

pass_count=0 fail_count=0
target() {  # name ok(0/1) detail
  if [ "$2" = 1 ]; then echo "PASS  $1 ($3)"; pass_count=$((pass_count + 1))
  else echo "FAIL  $1 ($3)"; fail_count=$((fail_count + 1)); fi
}

echo "polling benchmark: $shots shots (720P/1080P x 5/10 s), time scale $scale, seed $seed,"
echo "render mean 138 s x duration/5 (x2.25 at 1080P), lognormal sigma $spread, tail $tail,"
echo "max_in_flight $in_flight (both clients), pattern polls every $pattern_interval s; work dir $W"
for scenario in $scenarios; do
  if [ $scenario = a ]; then workers=$in_flight title="(a) no provider queue: $workers workers"
  else workers=$((in_flight / 2 > 0 ? in_flight / 2 : 1)) title="(b) provider queue: $workers workers for $in_flight in flight"; fi
  run_wanbatch "$W/$scenario-wanbatch" "$workers"
  run_pattern "$W/$scenario-pattern" "$workers"
  figures "$W/$scenario-wanbatch" >"$W/$scenario-wanbatch.fig"
  figures "$W/$scenario-pattern" >"$W/$scenario-pattern.fig"
  echo
  echo "$title"
  jq -rn --slurpfile w "$W/$scenario-wanbatch.fig" --slurpfile p "$W/$scenario-pattern.fig" '
    def f(x; d): x * pow(10; d) | round / pow(10; d) | tostring;
    def row(name; a; b): "  \(name)\t\(a)\t\(b)";
    $w[0] as $w | $p[0] as $p
    | ["  figure\twanbatch\tpattern",
       (["submit", "status", "result", "download", "upload", "credits", "other", "total"][]
        | row("requests/shot \(.)"; f($w.requests[.]; 2); f($p.requests[.]; 2))),
       row("delay mean % of render"; f($w.delay_mean; 2); f($p.delay_mean; 2)),
       row("delay p95 % of render"; f($w.delay_p95; 2); f($p.delay_p95; 2)),
       row("jobs seen COMPLETED"; $w.detected; $p.detected),
       row("makespan (sim s)"; f($w.makespan; 0); f($p.makespan; 0)),
       row("CPU ms/shot (compressed)"; f($w.cpu_ms_per_shot; 1); f($p.cpu_ms_per_shot; 1)),
       row("peak RSS MiB"; f($w.peak_rss_mib; 1); f($p.peak_rss_mib; 1))] | .[]' | column -t -s $'\t'
  jq -rn --slurpfile j "$W/$scenario-wanbatch/jobs.json" '
    $j[0].jobs[0] as $x
    | "  check, first wanbatch job (\($x.class)): first COMPLETED \($x.first_completed) - finish \($x.finish) = \($x.first_completed - $x.finish) s on a \($x.render) s render = \(($x.first_completed - $x.finish) / $x.render * 100) %"'
done

echo
for n in "${notes[@]}"; do echo "note: $n"; done
for scenario in $scenarios; do
  read -r req mean p95 mk pmk < <(jq -rn --slurpfile w "$W/$scenario-wanbatch.fig" --slurpfile p "$W/$scenario-pattern.fig" \
    '"\($w[0].requests.total) \($w[0].delay_mean) \($w[0].delay_p95) \($w[0].makespan) \($p[0].makespan)"')
  ok() { awk "BEGIN { print ($1) ? 1 : 0 }"; }
  target "($scenario) requests/shot <= 10" "$(ok "$req <= 10")" "$(printf '%.2f' "$req")"
  target "($scenario) mean delay <= 3% of render" "$(ok "$mean <= 3")" "$(printf '%.2f%%' "$mean")"
  target "($scenario) p95 delay <= 6% of render" "$(ok "$p95 <= 6")" "$(printf '%.2f%%' "$p95")"
  target "($scenario) makespan within 2% of the pattern's" "$(ok "$mk <= $pmk * 1.02")" \
    "$(awk -v a="$mk" -v b="$pmk" 'BEGIN { printf "%.0f s vs %.0f s: %+.2f%%", a, b, (a / b - 1) * 100 }')"
done
echo "targets met: $pass_count of $((pass_count + fail_count))"

if [ "$with_scale" = 1 ] && [ -x "$ROOT/scripts/bench-scale.sh" ]; then
  echo
  "$ROOT/scripts/bench-scale.sh" "$BUILD"
fi
exit 0

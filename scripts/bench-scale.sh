#!/usr/bin/env bash
# Scale benchmark (issue 8, section 3), measured from the outside: the wanbatch and
# segmind-sim binaries of BUILD_DIR (default build/) on loopback. Builds nothing but
# make_history, and that only when BUILD_DIR lacks it. Figures: docs/BENCHMARKS.md, "Scale".
#   scripts/bench-scale.sh [BUILD_DIR]
# Prints one table row per target with its figure and PASS/FAIL; exit 0 when all pass,
# 1 when one fails, 2 when the bench could not run. Needs perl (Debian: perl) and awk.
# BENCH_SCALE_TIME (0.2: real seconds per simulated second) compresses the run;
# BENCH_SCALE_TMP (default /dev/shm) holds state and outputs (tmpfs: the figures are
# the daemon's CPU and memory, not the disk's sync latency).
# BENCH_SCALE_PARTS (default ABC) picks the parts to run: A (10,000 shots: acceptance,
# RSS, CPU a shot), B (restart with 5,000 in flight), C (start on 100,000 finished shots).
# BENCH_SCALE_A_LIMIT (3600) is how long part A may take, in seconds.
# BENCH_SCALE_A_SHOTS (10000) is part A's manifest, half of it in flight at most: a smaller
# one is for a quick look while working on the CPU a shot; the targets are for 10,000.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BUILD="${1:-$ROOT/build}"
BUILD="$(cd "$BUILD" && pwd)" || { echo "no build dir $1" >&2; exit 2; }
SCALE="${BENCH_SCALE_TIME:-0.2}"
TMPBASE="${BENCH_SCALE_TMP:-/dev/shm}"
PARTS="${BENCH_SCALE_PARTS:-ABC}"
A_SHOTS="${BENCH_SCALE_A_SHOTS:-10000}"
[[ "$A_SHOTS" =~ ^[1-9][0-9]*$ ]] && [ "$A_SHOTS" -ge 2 ] && [ "$A_SHOTS" -le 10000 ] ||
  { echo "bench-scale: BENCH_SCALE_A_SHOTS is 2 to 10000, not '$A_SHOTS'" >&2; exit 2; }
A_FLIGHT=$((A_SHOTS / 2))
[[ "$PARTS" =~ ^[ABC]+$ ]] || { echo "bench-scale: BENCH_SCALE_PARTS is letters of ABC, not '$PARTS'" >&2; exit 2; }
part() { [[ "$PARTS" == *"$1"* ]]; }
[ -d "$TMPBASE" ] && [ -w "$TMPBASE" ] || TMPBASE=/tmp
for b in wanbatch segmind-sim; do
  [ -x "$BUILD/$b" ] || { echo "bench-scale: $BUILD/$b missing; build first" >&2; exit 2; }
done
if [ ! -x "$BUILD/make_history" ]; then
  cmake --build "$BUILD" --target make_history -j2 >/dev/null || { echo "bench-scale: cannot build make_history" >&2; exit 2; }
fi
command -v perl >/dev/null || { echo "bench-scale: needs perl" >&2; exit 2; }

W=$(mktemp -d "$TMPBASE/wanbatch-scale.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "${BENCH_SCALE_KEEP:-}" ] && echo "kept $W" || rm -rf "$W"
}
trap cleanup EXIT
note() { printf '[%6.1fs] %s\n' "$(awk -v s="$T0" -v n="$(date +%s.%N)" 'BEGIN { print n - s }')" "$*" >&2; }
T0=$(date +%s.%N)
fail_setup() { echo "bench-scale: $*" >&2; exit 2; }
calc() { awk "BEGIN { $1 }"; }
scaled() { calc "v = $1 * $SCALE; if (v < ${2:-0}) v = ${2:-0}; printf \"%g\", v"; }

# --- helpers in perl (core modules only): control-socket ping, /sim/stats sampler
cat >"$W/ping.pl" <<'PERL'
# ping.pl SOCKET TIMEOUT: prints the epoch time at which the daemon's control socket
# first answers {"command":"ping"} with ok; exit 1 after TIMEOUT seconds.
use strict; use IO::Socket::UNIX; use Time::HiRes qw(time sleep);
my ($path, $timeout) = @ARGV; my $end = time + $timeout;
while (time < $end) {
  if (my $s = IO::Socket::UNIX->new(Type => SOCK_STREAM(), Peer => $path)) {
    print $s "{\"command\":\"ping\"}\n"; my $l = <$s>;
    if (defined $l && $l =~ /"ok":\s*true/) { printf "%.6f\n", time; exit 0 }
  }
  sleep 0.002;
}
exit 1;
PERL
cat >"$W/stats.pl" <<'PERL'
# stats.pl PORT SECONDS INTERVAL: samples GET /sim/stats; one line "epoch requests" each.
use strict; use IO::Socket::INET; use Time::HiRes qw(time sleep);
$| = 1;
my ($port, $secs, $every) = @ARGV; my $end = time + $secs;
while (time < $end) {
  my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port", Proto => 'tcp') or do { sleep $every; next };
  print $s "GET /sim/stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
  local $/; my $a = <$s>; my $t = time;
  printf "%.6f %s\n", $t, $1 if defined $a && $a =~ /"requests":(\d+)/;
  sleep $every;
}
PERL
sim_stat() {  # FIELD: a number from GET /sim/stats
  perl -MIO::Socket::INET -e '
    my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$ARGV[0]", Proto => "tcp") or exit 1;
    print $s "GET /sim/stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"; local $/; my $a = <$s>;
    print $1 if $a =~ /"$ARGV[1]":([0-9.]+)/;' "$SIM_PORT" "$1"
}
log_epoch() {  # the epoch time of a daemon log line ("YYYY-MM-DD HH:MM:SS.mmm level ...")
  date -d "$(cut -d' ' -f1-2 <<<"$1")" +%s.%N
}

# --- the bench config: the shipped config/wanbatch.yaml with these keys changed
yaml_set() {  # FILE SECTION KEY VALUE (SECTION "" for a top-level key)
  awk -v sec="$2" -v key="$3" -v val="$4" '
    /^[^ #]/ { insec = (sec == "") || index($0, sec ":") == 1 }
    !done && insec && (sec == "" ? index($0, key ":") == 1 : index($0, "  " key ":") == 1) {
      printf "%s%s: %s\n", (sec == "" ? "" : "  "), key, val; done = 1; next }
    { print }
    END { exit done ? 0 : 3 }' "$1" >"$1.tmp" || fail_setup "config/wanbatch.yaml has no key ${2:+$2.}$3"
  mv "$1.tmp" "$1"
}
# Simulated durations (polls, retry delays, the balance check) are scaled with the
# simulator's time; the API timeouts are not: they guard against a hung peer, and the
# time a request waits in the daemon's own queue does not shrink with the simulation.
make_config() {  # DIR: a complete instance (spool, state, out, media) and DIR/wanbatch.yaml
  local d=$1 f=$1/wanbatch.yaml
  mkdir -p "$d"/{spool/incoming,spool/active,spool/done,spool/failed,state,out,media}
  awk '/^input_roots:/ { print "input_roots: [" dir "]"; skip = 1; next }
       skip && /^  - / { next } { skip = 0; print }' dir="$d/media" "$ROOT/config/wanbatch.yaml" >"$f"
  yaml_set "$f" api base_url "http://127.0.0.1:$SIM_PORT"
  yaml_set "$f" api storage_url "http://127.0.0.1:$SIM_PORT/upload-asset"
  yaml_set "$f" api allow_loopback_http true
  for k in incoming active done failed; do yaml_set "$f" spool $k "$d/spool/$k"; done
  yaml_set "$f" spool settle_seconds 0
  yaml_set "$f" "" state_dir "$d/state"
  yaml_set "$f" "" output_root "$d/out"
  yaml_set "$f" limits max_in_flight 5000
  yaml_set "$f" limits max_shots_per_manifest 10000
  yaml_set "$f" limits max_manifest_bytes 4194304
  yaml_set "$f" limits submits_per_minute 100000
  # The shipped values of config/wanbatch.yaml, times the time scale.
  local k
  for k in credits.check_interval_seconds poll.min_interval_seconds poll.max_interval_seconds \
           poll.prior_render_seconds retry.base_delay_seconds retry.max_delay_seconds; do
    yaml_set "$f" "${k%%.*}" "${k#*.}" "$(scaled "$(shipped "$k")" 0.001)"
  done
}
shipped() {  # SECTION.KEY: its value in the shipped config/wanbatch.yaml
  awk -v sec="${1%%.*}" -v key="${1#*.}" '
    /^[^ #]/ { insec = index($0, sec ":") == 1 }
    insec && index($0, "  " key ":") == 1 { v = $0; sub(/^[^:]*:[ \t]*/, "", v); sub(/[ \t]*#.*/, "", v); print v; exit }
  ' "$ROOT/config/wanbatch.yaml" | grep . || fail_setup "config/wanbatch.yaml has no $1"
}
write_manifest() {  # FILE BATCH SHOTS
  awk -v b="$2" -v n="$3" 'BEGIN {
    print "batch: " b; print "shots:"
    for (i = 1; i <= n; i++) printf "  - {id: s%05d, prompt: \"shot %d\", image: \"https://cdn.example/f.png\", duration: 5}\n", i, i }' >"$1"
}
start_sim() {  # LOGFILE RENDER_SECONDS: starts a simulator, sets SIM_PID, SIM_PORT
  rm -f "$W/sim.port"
  "$BUILD/segmind-sim" --port 0 --port-file "$W/sim.port" --time-scale "$SCALE" --workers 5000 \
    --render-seconds "$2" --credits 1000000 2>"$1" &
  SIM_PID=$!
  pids+=("$SIM_PID")
  for _ in $(seq 200); do [ -s "$W/sim.port" ] && break; sleep 0.05; done
  [ -s "$W/sim.port" ] || fail_setup "segmind-sim did not start ($1)"
  SIM_PORT=$(cat "$W/sim.port")
}
stop_pid() {  # PID [SIGNAL]
  kill -"${2:-TERM}" "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}
start_daemon() {  # DIR LOG: sets DAEMON_PID and DAEMON_START (epoch, just before the exec)
  DAEMON_START=$(date +%s.%N)
  SEGMIND_API_KEY=bench "$BUILD/wanbatch" --config "$1/wanbatch.yaml" daemon 2>>"$2" &
  DAEMON_PID=$!
  pids+=("$DAEMON_PID")
}
wait_ping() {  # DIR TIMEOUT: epoch of the first answered ping
  perl "$W/ping.pl" "$1/state/control.sock" "$2" || fail_setup "daemon not answering on $1/state/control.sock"
}
wait_log() {  # LOG PATTERN TIMEOUT: prints the first matching line
  local end line
  end=$(calc "print $(date +%s) + $3")
  while :; do
    line=$(grep -m1 -e "$2" "$1" || true)
    [ -n "$line" ] && { echo "$line"; return 0; }
    [ "$(date +%s)" -lt "$end" ] || return 1
    sleep 0.02
  done
}
cpu_seconds() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat"; }
child_cpu_seconds() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($16 + $17) / hz }' "/proc/$1/stat"; }
hwm_kib() { awk '/^VmHWM/ { print $2 }' "/proc/$1/status"; }

rows=()
row() { rows+=("$1|$2|$3|$4"); }  # target | figure | limit | PASS/FAIL
verdict() { calc "print ($1) ? \"PASS\" : \"FAIL\""; }

# ============ A: 10,000 shots: acceptance, then 5,000 in flight + 5,000 pending ============
if part A; then
render=138
start_sim "$W/sim-a.log" "$render"
A="$W/a"
make_config "$A"
yaml_set "$A/wanbatch.yaml" limits max_in_flight "$A_FLIGHT"
write_manifest "$A/media/big.yaml" big "$A_SHOTS"
start_daemon "$A" "$A/daemon.log"
wait_ping "$A" 30 >/dev/null
note "A: daemon up (pid $DAEMON_PID), simulator render $(scaled $render) s real, 5000 workers, $A_SHOTS shots"
t_rename=$(date +%s.%N)
mv "$A/media/big.yaml" "$A/spool/incoming/big.yaml"
line=$(wait_log "$A/daemon.log" "batch big: accepted" 30) || fail_setup "A: the $A_SHOTS-shot manifest was not accepted (log: $A/daemon.log)"
t_accept=$(log_epoch "$line")
# The same batch as `wanbatch status --json` shows it (the command reads the store itself).
while ! "$BUILD/wanbatch" --config "$A/wanbatch.yaml" status --json 2>/dev/null | grep -q '"batch":"big"'; do sleep 0.01; done
t_status=$(date +%s.%N)
accept_s=$(calc "printf \"%.3f\", $t_accept - $t_rename")
status_s=$(calc "printf \"%.3f\", $t_status - $t_rename")
note "A: accepted after ${accept_s} s (log line), visible in status after ${status_s} s"
row "$A_SHOTS-shot manifest accepted (rename into incoming/ to the 'accepted' log line)" "${accept_s} s (in status: ${status_s} s)" "< 0.5 s" "$(verdict "$accept_s < 0.5")"

full_flight=""
# Every download is decoded by ffprobe and gets a poster frame from ffmpeg (issue 9): about
# 0.24 s of child CPU a video, 10,000 videos on two worker threads: about 20 minutes on a
# quiet 2-core machine, so allow an hour (the figures are the daemon's own CPU and memory,
# which a busier machine stretches in time, not in amount).
a_limit=${BENCH_SCALE_A_LIMIT:-3600}
deadline=$(calc "print $(date +%s) + $a_limit")
while [ ! -f "$A/out/big/report.json" ]; do
  [ "$(date +%s)" -lt "$deadline" ] || break
  kill -0 "$DAEMON_PID" 2>/dev/null || break
  if [ -z "$full_flight" ] && [ "$(sim_stat submits_accepted || echo 0)" -ge "$A_FLIGHT" ]; then
    full_flight=$(( A_FLIGHT - $(grep -c ': DONE -> ' "$A/daemon.log" || true) ))
    note "A: $A_FLIGHT submitted, $full_flight of them in flight at once"
  fi
  sleep 1
done
A_PID=$DAEMON_PID
if [ -f "$A/out/big/report.json" ] && kill -0 "$A_PID" 2>/dev/null; then
  cpu=$(cpu_seconds "$A_PID")
  hwm=$(hwm_kib "$A_PID")
  done_n=$(grep -o '"DONE": *[0-9]*' "$A/out/big/report.json" | grep -o '[0-9]*$' || echo 0)
  makespan=$(calc "printf \"%.1f\", $(date +%s.%N) - $t_rename")
  note "A: finished in ${makespan} s: DONE ${done_n}, daemon cpu ${cpu} s (its ffprobe/ffmpeg children apart: $(child_cpu_seconds "$A_PID") s), VmHWM ${hwm} KiB, sim requests $(sim_stat requests), requests not sent (local errors, retried) $(grep -c 'not sent: ' "$A/daemon.log" || true)"
  row "$A_SHOTS shots, $A_FLIGHT in flight + $((A_SHOTS - A_FLIGHT)) pending: daemon peak RSS (VmHWM)" "$(calc "printf \"%.1f MiB\", $hwm / 1024")" "< 100 MB" \
    "$(verdict "$hwm * 1024 < 100e6")"
  per_shot=$(calc "printf \"%.2f\", $cpu * 1000 / $A_SHOTS")
  row "  daemon CPU per shot (utime+stime over its life / $A_SHOTS; DONE $done_n, makespan ${makespan} s)" "${per_shot} ms" "< 2 ms" \
    "$(verdict "$per_shot < 2 && $done_n == $A_SHOTS")"
else
  note "A: not finished within $a_limit s (log: $A/daemon.log)"
  row "$A_SHOTS shots, $A_FLIGHT in flight + $((A_SHOTS - A_FLIGHT)) pending: peak RSS" "unfinished" "< 100 MB" FAIL
  row "  daemon CPU per shot" "unfinished" "< 2 ms" FAIL
fi
stop_pid "$A_PID" KILL
stop_pid "$SIM_PID" KILL
fi

# ============ B: kill -9 with 5,000 in flight, restart, polls per 0.5 s ============
if part B; then
start_sim "$W/sim-b.log" 100000   # no job ends during this part
B="$W/b"
make_config "$B"
write_manifest "$B/media/flight.yaml" flight 5000
start_daemon "$B" "$B/daemon.log"
wait_ping "$B" 30 >/dev/null
mv "$B/media/flight.yaml" "$B/spool/incoming/flight.yaml"
deadline=$(calc "print $(date +%s) + 150")
while in_flight=$(grep -c ': submitted, request_id' "$B/daemon.log" || true); [ "$in_flight" -lt 5000 ]; do
  [ "$(date +%s)" -lt "$deadline" ] || break   # a few submits in retry backoff: go on with the rest
  sleep 0.2
done
sleep "$(scaled 15 1)"   # polls settle into their intervals
stop_pid "$DAEMON_PID" KILL
note "B: $in_flight in flight; daemon killed (-9)"
window=$(calc "printf \"%d\", 3 * $(scaled 15 0.01) + 1.5")   # 10 s at the default scale: 50 simulated s after the restart
perl "$W/stats.pl" "$SIM_PORT" "$((window + 2))" 0.02 >"$W/samples" &
sampler=$!
pids+=("$sampler")
sleep 0.5
start_daemon "$B" "$B/daemon-restart.log"
wait "$sampler" || true
stop_pid "$DAEMON_PID" KILL
grep -q "loaded 5000 unfinished shots" "$B/daemon-restart.log" ||
  note "B: the restarted daemon did not load 5,000 unfinished shots: $(grep -m1 'loaded' "$B/daemon-restart.log" || echo 'no load line')"
# Requests per 0.5 s bin after the start, from the sampled counter. The first request
# after a start is the balance reading (GET /v1/get-user-credits), so the first status
# poll is taken as the moment the counter is 2 past its value before the start.
hist=$(awk -v start="$DAEMON_START" -v win="$window" '
  NR == 1 || $1 < start { base = $2 }
  $1 >= start {
    if (first == "" && $2 >= base + 2) first = $1 - start
    b = int(($1 - start) / 0.5); if (b >= win * 2) next
    last[b] = $2; if (b > maxb) maxb = b
  }
  END {
    prev = base; peak = 0; sum = 0; n = 0; line = ""
    for (b = 0; b <= maxb; b++) {
      if (!(b in last)) last[b] = prev
      c = last[b] - prev; prev = last[b]
      line = line sprintf("%s%d", b ? " " : "", c)
      if (b >= 2) { sum += c; n++; if (c > peak) peak = c }   # after the first second
    }
    printf "%s|%s|%d|%.1f\n", (first == "" ? "none" : sprintf("%.3f", first)), line, peak, n ? sum / n : 0
  }' "$W/samples")
IFS='|' read -r first_poll bins peak mean <<<"$hist"
note "B: status requests per 0.5 s after the restart: $bins"
row "restart with $in_flight in flight: first status poll after the start" "${first_poll} s" "< 1 s" \
  "$(verdict "\"$first_poll\" != \"none\" && $first_poll < 1")"
row "  polls spread: largest 0.5 s bin after the first second vs the mean (${window} s)" "$peak vs $mean" "<= 2 x mean" \
  "$(verdict "$mean > 0 && $peak <= 2 * $mean")"
fi

# ============ C: start on an empty store and on 100,000 finished shots ============
if part C; then
[ -n "${SIM_PORT:-}" ] || start_sim "$W/sim-c.log" 100000
H="$W/hist"
make_config "$H"
E="$W/empty"
make_config "$E"
# The history is made once per make_history binary and kept in the build dir.
cache="$BUILD/bench-scale-history"
if [ ! -f "$cache/made" ] || [ "$BUILD/make_history" -nt "$cache/made" ]; then
  rm -rf "$cache" "$W/cache-state"
  mkdir -p "$W/cache-state"
  t=$(date +%s.%N)
  "$BUILD/make_history" "$W/cache-state" "$H/out" "$H/spool/active" 1000 100 >/dev/null
  note "C: 100,000 finished shots written in $(calc "printf \"%.1f\", $(date +%s.%N) - $t") s; kept in $cache"
  mkdir -p "$cache"
  cp -a "$W/cache-state/." "$cache/"
  touch "$cache/made"
fi
cp -a "$cache/db" "$cache/submits.journal" "$H/state/"
note "C: history store $(du -sh "$H/state" | cut -f1)"
measure_start() {  # DIR LOG: sets LOADED_S, PING_S (seconds from the exec)
  start_daemon "$1" "$2"
  local ping loaded
  ping=$(wait_ping "$1" 60)
  loaded=$(wait_log "$2" "loaded [0-9]* unfinished shots" 5) || fail_setup "no 'loaded' line in $2"
  loaded=$(log_epoch "$loaded")
  stop_pid "$DAEMON_PID" TERM
  : >"$2"
  LOADED_S=$(calc "printf \"%.3f\", $loaded - $DAEMON_START")
  PING_S=$(calc "printf \"%.3f\", $ping - $DAEMON_START")
}
e_loaded=() e_ping=() h_loaded=() h_ping=()
for i in 1 2 3 4 5; do
  measure_start "$E" "$E/daemon.log"; e_loaded+=("$LOADED_S"); e_ping+=("$PING_S")
  measure_start "$H" "$H/daemon.log"; h_loaded+=("$LOADED_S"); h_ping+=("$PING_S")
done
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
note "C: empty store: loaded ${e_loaded[*]}; answering ${e_ping[*]}"
note "C: 100k store:  loaded ${h_loaded[*]}; answering ${h_ping[*]}"
me=$(median "${e_ping[@]}") mh=$(median "${h_ping[@]}")
mel=$(median "${e_loaded[@]}") mhl=$(median "${h_loaded[@]}")
row "start to control socket answering, 100,000 finished shots vs empty (median of 5)" "$mh s vs $me s (loaded line: $mhl s vs $mel s)" \
  "<= empty + max(20%, 50 ms)" "$(verdict "$mh <= $me + ($me * 0.2 > 0.05 ? $me * 0.2 : 0.05)")"
fi

# ============ the table ============
echo
echo "wanbatch scale benchmark: $BUILD, time scale $SCALE, state on $TMPBASE, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
printf '| %s | %s | %s | %s |\n' target figure limit result
printf '|---|---|---|---|\n'
failed=0
for r in "${rows[@]}"; do
  IFS='|' read -r a b c d <<<"$r"
  printf '| %s | %s | %s | %s |\n' "$a" "$b" "$c" "$d"
  [ "$d" = PASS ] || failed=1
done
exit $failed

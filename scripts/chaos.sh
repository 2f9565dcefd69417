#!/usr/bin/env bash
# The chaos suite (ctest label chaos): random kills over a 200-shot batch with
# 5xx, dropped answers, FAILED jobs and expiry switched on in the simulator, and
# 20,000 manifests dropped at once onto a stopped daemon (inotify overflow),
# and random kills over a 200-shot batch behind segmind-faultproxy with every
# hostile answer shape switched on (WANBATCH_FAULT_RATE per kind, default 0.01;
# WANBATCH_FAULT_KINDS to pick some). Prints the tally of each round.
#   scripts/chaos.sh [SECONDS_OF_KILLING_PER_ROUND] [ROUNDS]     (default 60 and 1)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
. "$ROOT/scripts/lib.sh"
seconds=${1:-60}
rounds=${2:-1}
ensure_packages
build build
# Exit 1 when any round fails (the filtered output alone used to hide it).
status=0
log="$(log_dir)/chaos.log"
for r in $(seq "$rounds"); do
  WANBATCH_CHAOS_SECONDS=$seconds "$ROOT/build/tests/chaos_tests" --no-version=true >"$log" 2>&1 || status=1
  grep -E "chaos tally|flood:|ERROR|FAILED|Status" "$log" || true
done
exit $status

#!/usr/bin/env bash
# Installs what is missing, builds, and renders examples/lakeside.yaml end to end:
# starts the simulator (segmind-sim) and the daemon on a fresh spool, submits the
# manifest, shows progress until the batch ends, then drops a revision
# (examples/lakeside-rev2.yaml) that renders two of the six shots again (take 2),
# prints where the videos and the report are, and stops what it started.
#   scripts/demo.sh          against the local simulator: zero spend
#   scripts/demo.sh --real   against the real Segmind API (needs SEGMIND_API_KEY; costs credits)
# The demo's folders live in $WANBATCH_DEMO_DIR (default /tmp/wanbatch-demo), reset each run.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
. "$ROOT/scripts/lib.sh"

real=0
case "${1:-}" in
  --real) real=1 ;;
  "") ;;
  -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
  *) echo "unknown option $1" >&2; exit 2 ;;
esac
if [ $real -eq 1 ] && [ -z "${SEGMIND_API_KEY:-}" ]; then
  echo "--real needs SEGMIND_API_KEY in the environment" >&2
  exit 2
fi

ensure_packages
build build
BIN="$ROOT/build"
DEMO="${WANBATCH_DEMO_DIR:-/tmp/wanbatch-demo}"
rm -rf "$DEMO"
mkdir -p "$DEMO"/{spool/incoming,spool/done,spool/failed,state,output}

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

if [ $real -eq 1 ]; then
  api="api: {}"
  echo "rendering against the real Segmind API (this spends credits)"
else
  "$BIN/segmind-sim" --port 0 --port-file "$DEMO/sim.port" --time-scale 0.01 --workers 4 \
    --ledger "$DEMO/sim-ledger.jsonl" 2>"$DEMO/sim.log" &
  pids+=($!)
  for _ in $(seq 100); do [ -s "$DEMO/sim.port" ] && break; sleep 0.05; done
  port=$(cat "$DEMO/sim.port")
  api="api: {base_url: 'http://127.0.0.1:$port', storage_url: 'http://127.0.0.1:$port/upload-asset', allow_loopback_http: true}"
  export SEGMIND_API_KEY="${SEGMIND_API_KEY:-simulator-key}"
  [ "$SEGMIND_API_KEY" = simulator-key ] || echo "note: SEGMIND_API_KEY is set but the demo uses the simulator; pass --real to spend credits"
  echo "simulator on http://127.0.0.1:$port (a 138 s render takes 1.4 s)"
fi

cat >"$DEMO/wanbatch.yaml" <<YAML
$api
spool: {incoming: $DEMO/spool/incoming, done: $DEMO/spool/done, failed: $DEMO/spool/failed, settle_seconds: 0.5}
state_dir: $DEMO/state
output_root: $DEMO/output
input_roots: [$ROOT/examples]
poll: {min_interval_seconds: $([ $real -eq 1 ] && echo 2 || echo 0.1), max_interval_seconds: $([ $real -eq 1 ] && echo 15 || echo 0.5)}
limits: {submits_per_minute: $([ $real -eq 1 ] && echo 20 || echo 600)}
YAML

"$BIN/wanbatch" --config "$DEMO/wanbatch.yaml" daemon 2>"$DEMO/daemon.log" &
pids+=($!)
"$BIN/wanbatch" --config "$DEMO/wanbatch.yaml" submit "$ROOT/examples/lakeside.yaml"

batch=lakeside-night
report="$DEMO/output/$batch/report.json"
last=""
for _ in $(seq 3600); do
  line=$("$BIN/wanbatch" --config "$DEMO/wanbatch.yaml" status 2>/dev/null | head -n 1 || true)
  if [ -n "$line" ] && [ "$line" != "$last" ]; then
    echo "  $line"
    last=$line
  fi
  [ -f "$report" ] && [ -f "$DEMO/spool/done/lakeside.yaml" ] && break
  sleep 0.5
done
if [ ! -f "$report" ]; then
  echo "the batch did not finish; see $DEMO/daemon.log" >&2
  exit 1
fi
"$BIN/wanbatch" --config "$DEMO/wanbatch.yaml" status

# A revision: the same batch with two shots changed (sh020's prompt, sh040's seed).
# plan shows what would render and what it costs; then only those two render again.
echo
echo "revision: examples/lakeside-rev2.yaml changes two of six shots"
"$BIN/wanbatch" --config "$DEMO/wanbatch.yaml" plan "$ROOT/examples/lakeside-rev2.yaml" | sed 's/^/  /'
"$BIN/wanbatch" --config "$DEMO/wanbatch.yaml" submit "$ROOT/examples/lakeside-rev2.yaml"
revised=""
for _ in $(seq 3600); do
  revised=$(grep -o '"revision": 2' "$report" 2>/dev/null || true)
  [ -n "$revised" ] && [ -f "$DEMO/spool/done/lakeside-rev2.yaml" ] && break
  sleep 0.5
done
if [ -z "$revised" ]; then
  echo "the revision did not finish; see $DEMO/daemon.log" >&2
  exit 1
fi
"$BIN/wanbatch" --config "$DEMO/wanbatch.yaml" status "$batch"
echo
echo "videos:  $DEMO/output/$batch/"
ls "$DEMO/output/$batch" | sed 's/^/           /'
echo "report:  $report"
echo "logs:    $DEMO/daemon.log"

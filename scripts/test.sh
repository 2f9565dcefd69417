#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test with ctest.
#   scripts/test.sh              the default suite (unit, simulator, end to end)
#   scripts/test.sh --sanitize   the same under AddressSanitizer + UBSan (build-asan/)
# Extra arguments after -- go to ctest (e.g. -- -R manifest).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
. "$ROOT/scripts/lib.sh"

dir=build
cmake_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --sanitize) dir=build-asan; cmake_args+=(-DWANBATCH_SANITIZE=ON); shift ;;
    --) shift; break ;;
    -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

# The contact sheet's browser test needs Chromium (it skips, saying so, without it).
WANBATCH_PACKAGES+=(chromium)
ensure_packages
build "$dir" "${cmake_args[@]}"
log="$(log_dir)/ctest-$dir.log"
if ctest --test-dir "$ROOT/$dir" --output-on-failure -j 2 -LE chaos "$@" >"$log" 2>&1; then
  grep -E "tests passed|tests failed" "$log" | tail -n 1
  grep -E "^Total Test time" "$log" || true
else
  grep -vE "^ *[0-9]+/[0-9]+ Test +#[0-9]+: .* Passed" "$log" | tail -n 200
  exit 1
fi

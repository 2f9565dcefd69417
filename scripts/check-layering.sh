#!/bin/bash
# The layering, checked on every build (CMake target `layering`) and by ctest:
#   jobs/          the API, the store, the vocabulary: includes jobs/ only
#   jobs/engine/   the scheduler's parts: includes jobs/ and jobs/engine/
#   config/        reads the YAML into jobs/settings.h: includes jobs/ (not engine) and config/
#   daemon/        the process: anything but tests/
# A quoted include that breaks a rule is printed and the check fails.
set -u
root=${1:-$(cd "$(dirname "$0")/.." && pwd)}
cd "$root" || exit 2
bad=0
check() {  # check DIR-GLOB ALLOWED-REGEX
  local files=$1 allowed=$2 f line inc
  for f in $files; do
    [ -f "$f" ] || continue
    while IFS= read -r line; do
      inc=${line#*\"}; inc=${inc%%\"*}
      if ! [[ $inc =~ $allowed ]]; then
        echo "layering: $f includes \"$inc\" (not allowed: see scripts/check-layering.sh)" >&2
        bad=1
      fi
    done < <(grep -E '^[[:space:]]*#[[:space:]]*include[[:space:]]+"' "$f")
  done
}
check "jobs/*.h jobs/*.cpp" '^jobs/[a-z_0-9]+\.h$'
check "jobs/engine/*.h jobs/engine/*.cpp" '^jobs/(engine/)?[a-z_0-9]+\.h$'
check "config/*.h config/*.cpp" '^(config|jobs)/[a-z_0-9]+\.h$'
check "daemon/*.h daemon/*.cpp" '^(config|jobs|daemon)/([a-z_0-9]+/)?[a-z_0-9]+\.h$'
exit $bad

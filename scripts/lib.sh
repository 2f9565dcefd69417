# Shared by the scripts: install missing Debian packages, build quietly.
# Sourced, not run.

WANBATCH_PACKAGES=(cmake make g++ pkg-config libcurl4-openssl-dev libyaml-cpp-dev nlohmann-json3-dev
  libspdlog-dev librocksdb-dev doctest-dev libcli11-dev libsystemd-dev libssl-dev zlib1g-dev
  libfaketime ffmpeg
  prometheus-cpp-dev prometheus)  # the metrics endpoint; promtool for its tests
WANBATCH_PACKAGES+=(tmux)  # the test of `wanbatch status --watch` in a real terminal

log_dir() {
  mkdir -p "$ROOT/build-logs"
  echo "$ROOT/build-logs"
}

# Runs a command with its output in a log; shows the log only when it fails.
quietly() {
  local name=$1
  shift
  local log
  log="$(log_dir)/$name.log"
  if ! "$@" >"$log" 2>&1; then
    echo "FAILED: $* (log: $log)" >&2
    tail -n 60 "$log" >&2
    return 1
  fi
}

ensure_packages() {
  local missing=()
  for p in "${WANBATCH_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  quietly apt-update "${sudo[@]}" apt-get update -q
  quietly apt-install "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
}

# build DIR [cmake args...]
build() {
  local dir=$1
  shift
  quietly "cmake-$(basename "$dir")" cmake -S "$ROOT" -B "$ROOT/$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@"
  quietly "make-$(basename "$dir")" cmake --build "$ROOT/$dir" -j "$(nproc)"
}

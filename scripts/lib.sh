# Shared by scripts/test and scripts/demo: install missing Debian packages, configure, build.
# Idempotent: nothing is installed or rebuilt when nothing changed.

PIMGATE_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# Debian 12 packages pimgate builds and tests with.
PIMGATE_PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config git openssl curl ca-certificates
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libboost-dev libboost-system-dev librocksdb-dev libyaml-cpp-dev libssl-dev
  libgtest-dev libgmock-dev libsimdjson-dev libabsl-dev libspdlog-dev libfmt-dev libjemalloc-dev
  libcurl4-openssl-dev nlohmann-json3-dev libcli11-dev
  libnats-dev nats-server  # store.backend: jetstream (libnats), and the servers its tests start
  haproxy  # tests/e2e/cluster_test and scripts/demo --cluster: the balancer in front of pimgate nodes
  python3-grpcio python3-protobuf
  clang libclang-rt-14-dev  # scripts/fuzz: libFuzzer targets (scripts/test runs them briefly)
  prometheus  # for promtool: the metrics tests check pimgate's /metrics with `promtool check metrics`
  # tests/gateway/guzzle_sender_test: the PIM's own webhook sender stack, Guzzle 7 over libcurl
  # (without php-curl, which Guzzle only suggests, it falls back to PHP streams: not the PIM's)
  php-cli php-guzzlehttp-guzzle php-curl
  # scripts/package-test and scripts/docs-check: dpkg -i needs adduser; `ip` brings loopback up in
  # their private network namespace; systemd-analyze verifies the packaged unit.
  adduser iproute2 systemd
)
# Installed by scripts/test only (scripts/demo does not need them).
PIMGATE_TEST_PACKAGES=(
  # tests/console: the web console's browser test drives Debian's headless Chromium (puppeteer-core)
  chromium
)
# Node.js may come from Debian or from another source (whose nodejs already bundles npm and
# conflicts with Debian's npm): Debian's packages are installed only when the commands are missing.
NODE_PACKAGES=(nodejs npm)

# ccache keys on relative paths below the checkout, so a fresh clone in another folder (as CI
# uses) still hits the cache.
export CCACHE_BASEDIR="$PIMGATE_ROOT"
export CCACHE_NOHASHDIR=true

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# report_skip WHAT WHY: a part of a check that did not run. Printed, and under scripts/test
# recorded for its summary table (a CI=true run fails on it unless test-summary accepts it).
report_skip() {
  printf '  skip  %s: %s\n' "$1" "$2"
  if [ -n "${PIMGATE_TEST_REPORT:-}" ]; then
    printf '%s\t%s\t%s\n' "${PIMGATE_TEST_STAGE:-?}" "$1" "$2" >>"$PIMGATE_TEST_REPORT/skips.tsv"
  fi
}

ensure_packages() {
  local missing=()
  local pkg
  local wanted=("${PIMGATE_PACKAGES[@]}" "$@")
  if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    wanted+=("${NODE_PACKAGES[@]}")
  fi
  for pkg in "${wanted[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
      missing+=("$pkg")
    fi
  done
  if [ ${#missing[@]} -eq 0 ]; then
    return 0
  fi
  log "installing Debian packages: ${missing[*]}"
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# build DIR [cmake args...]: configure once, then build incrementally with 2 jobs.
build() {
  local dir="$1"; shift
  # Configure when the directory is new or its options changed since the last configure (an
  # existing build directory must not keep options a newer scripts/test no longer passes).
  local stamp="$dir/.pimgate-configure-args"
  if [ ! -f "$dir/build.ninja" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$*" ]; then
    log "configuring $dir"
    cmake -S "$PIMGATE_ROOT" -B "$dir" -G Ninja "$@" >/dev/null
    printf '%s' "$*" >"$stamp"
  fi
  log "building $dir"
  cmake --build "$dir" -j2
}

# Node packages of the Node SDK, the Node plugins, the web console (its libraries, which the build
# vendors into pimgate) and its browser test (puppeteer-core), from the npm registry, pinned by
# package-lock.json. Re-run only when the lock file changed since the last install.
ensure_node_modules() {
  local dir
  for dir in sdk/node plugins/http-relay console/web tests/console/browser; do
    dir="$PIMGATE_ROOT/$dir"
    [ -f "$dir/package-lock.json" ] || continue
    if [ ! -f "$dir/node_modules/.package-lock.json" ] ||
       [ "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]; then
      log "npm ci in ${dir#$PIMGATE_ROOT/}"
      (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
    fi
  done
}

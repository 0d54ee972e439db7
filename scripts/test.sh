#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, every test.
# On a fresh Debian machine it installs what the tests need (git, openssl, docker.io,
# docker-registry, apache2-utils, busybox-static, docker-compose, chromium, chromium-driver,
# postgresql), starts a Docker daemon and a registry on 127.0.0.1 when none
# answers, and stops what it started. It assumes nothing left running by an earlier session.
set -euo pipefail
cd "$(dirname "$0")/.."

need() { command -v "$1" >/dev/null 2>&1; }
apt_updated=
apt_install() {
  if [ -z "$apt_updated" ]; then apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

work=$(mktemp -d /tmp/kcideploy-test.XXXXXX)
started=()
cleanup() {
  for pidfile in "${started[@]}"; do
    if [ -f "$pidfile" ]; then kill "$(cat "$pidfile")" 2>/dev/null || true; fi
  done
  for pidfile in "${started[@]}"; do
    for _ in $(seq 50); do
      if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then sleep 0.2; else break; fi
    done
  done
  rm -rf "$work" 2>/dev/null || true
}
trap cleanup EXIT

need git || { echo "== installing git"; apt_install git; }
# tests/webhook.rs checks signatures against another HMAC implementation.
need openssl || { echo "== installing openssl"; apt_install openssl; }

# --- Docker daemon -------------------------------------------------------------------------
if ! docker info >/dev/null 2>&1; then
  if ! need dockerd; then echo "== installing docker.io"; apt_install docker.io; fi
  echo "== starting dockerd (vfs, no iptables, no bridge)"
  dockerd --storage-driver=vfs --iptables=false --bridge=none \
    --data-root "$work/docker" --exec-root "$work/exec" \
    -H "unix://$work/docker.sock" --pidfile "$work/dockerd.pid" >"$work/dockerd.log" 2>&1 &
  echo $! >"$work/dockerd.launcher.pid"
  started+=("$work/dockerd.pid")
  export DOCKER_HOST="unix://$work/docker.sock"
  for _ in $(seq 120); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  if ! docker info >/dev/null 2>&1; then
    echo "dockerd did not start:"; tail -20 "$work/dockerd.log"; exit 1
  fi
fi
docker version --format 'docker: client {{.Client.Version}}, server {{.Server.Version}}'

# --- What the Docker tests build from and with ---------------------------------------------
# tests/common/postgres.rs starts throwaway PostgreSQL clusters with initdb and pg_ctl.
pg_found() { need initdb || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; }
pg_found || { echo "== installing postgresql"; apt_install postgresql; }
dpkg -s busybox-static >/dev/null 2>&1 || { echo "== installing busybox-static"; apt_install busybox-static; }
export KCIDEPLOY_TEST_BUSYBOX=/bin/busybox
if ! docker compose version >/dev/null 2>&1 && ! need docker-compose; then
  echo "== installing docker-compose"; apt_install docker-compose
fi

# --- A registry on 127.0.0.1 ---------------------------------------------------------------
need docker-registry || { echo "== installing docker-registry"; apt_install docker-registry; }
# tests/docker.rs starts its own registry with htpasswd auth: bcrypt entries from htpasswd -B.
need htpasswd || { echo "== installing apache2-utils"; apt_install apache2-utils; }
port=
for p in 5055 5056 5057 5058 5059; do
  if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then port=$p; break; fi
done
[ -n "$port" ] || { echo "no free port for the registry"; exit 1; }
cat >"$work/registry.yml" <<YML
version: 0.1
log: { level: warn }
storage: { filesystem: { rootdirectory: $work/registry }, delete: { enabled: true } }
http: { addr: 127.0.0.1:$port }
YML
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
echo $! >"$work/registry.pid"
started+=("$work/registry.pid")
for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.2; done
export KCIDEPLOY_TEST_REGISTRY="127.0.0.1:$port"
echo "registry: $KCIDEPLOY_TEST_REGISTRY"
# The Docker tests fail, rather than skip, when the daemon is missing.
export KCIDEPLOY_REQUIRE_DOCKER=1

# --- A browser for tests/dashboard.rs (headless Chromium over WebDriver) -------------------
if ! need chromium || ! need chromedriver; then
  echo "== installing chromium chromium-driver"; apt_install chromium chromium-driver
fi
# The browser tests fail, rather than skip, without them.
export KCIDEPLOY_REQUIRE_BROWSER=1

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --locked --all-targets -- -D warnings
echo "== cargo test"
log="$work/test.log"
set +e
cargo test --locked 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
# The same tests of what touches state (apply, resume after kill -9, serve, the bot) once more
# with state in PostgreSQL: each fixture gets a new database of one throwaway cluster per
# test binary (tests/common/postgres.rs).
echo "== cargo test, state in PostgreSQL (KCIDEPLOY_TEST_BACKEND=postgres)"
KCIDEPLOY_TEST_BACKEND=postgres cargo test --locked \
  --test apply --test executor --test crash --test kill_steps --test staging_cycle \
  --test serve --test serve_faults --test bot --test rollback --test refresh --test target \
  --test stop_the_line --test pr_preview_serve --test rootfs --test blame --test blame_executor \
  --test adopt --test checks --test cli_behaviour 2>&1 | tee -a "$log"
pg_status=${PIPESTATUS[0]}
if [ "$status" -eq 0 ]; then status=$pg_status; fi
set -e
# One closing line for the whole suite: every test binary's counts added up.
# Ignored tests (tests/docker.rs without a daemon, say) count as skipped, not passed.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) s += $i } }
     END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
exit "$status"

#!/usr/bin/env bash
# How long a no-op `kcideploy apply` of a docker_build step takes (its content tag exists:
# "nothing to build"), against references measured in the same run on the same machine:
# `git status` in a checkout, and `docker image inspect` of the image (the one daemon call a
# no-op must make). This used to be a 5 s threshold in tests/docker.rs, which a loaded
# 2-core machine could miss; here it is a number to read, not a pass/fail.
#
#   bench/docker-noop.sh [RUNS]          (default 10; needs a Docker daemon: DOCKER_HOST)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-10}
BUSYBOX=${KCIDEPLOY_TEST_BUSYBOX:-/bin/busybox}
docker info >/dev/null 2>&1 || { echo "no Docker daemon answers (DOCKER_HOST=${DOCKER_HOST:-unset})"; exit 1; }
[ -x "$BUSYBOX" ] || { echo "a static busybox is needed at $BUSYBOX (busybox-static)"; exit 1; }
cargo build --release -q
BIN=$PWD/target/release/kcideploy
WORK=$(mktemp -d)
IMAGE=kcdbench/noop-$$
trap 'docker image ls -q "$IMAGE" | sort -u | xargs -r docker image rm -f >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT

git init -q -b main "$WORK/src"
mkdir -p "$WORK/src/docker"
cp "$BUSYBOX" "$WORK/src/docker/busybox"
printf 'FROM scratch\nCOPY busybox /bin/busybox\nCOPY app.txt /app.txt\n' >"$WORK/src/docker/Dockerfile"
echo v1 >"$WORK/src/docker/app.txt"
git -C "$WORK/src" add -A
git -C "$WORK/src" -c user.name=b -c user.email=b@example.org commit -qm init
git clone -q --bare "$WORK/src" "$WORK/pipe.git"
cat >"$WORK/plan.yaml" <<PLAN
version: 1
name: bench
notify: false
repos:
  pipe: { url: pipe.git }
components:
  image: { repo: pipe, paths: ["docker/**"] }
steps:
  build:
    kind: docker_build
    on: [image]
    always: true
    with: { image: $IMAGE, repo: pipe, context: docker, tags: [latest] }
PLAN
apply() { NO_COLOR=1 "$BIN" apply -auto-approve --cycle partial -f "$WORK/plan.yaml" >"$WORK/out" 2>&1 || { cat "$WORK/out"; exit 1; }; }
apply # the one real build

# Median wall time in ms of RUNS runs of "$@".
median_ms() {
    local times=()
    for _ in $(seq "$RUNS"); do
        local start end
        start=$(date +%s%N); "$@" >/dev/null 2>&1; end=$(date +%s%N)
        times+=($(( (end - start) / 1000 )))
    done
    printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {printf "%.1f", a[int((NR+1)/2)]/1000}'
}
NOOP=$(median_ms apply)
grep -q "nothing to build" "$WORK"/.kcideploy/runs/bench/*/build.log || { echo "the no-op apply built something"; exit 1; }
GIT=$(median_ms git -C "$WORK/src" status)
INSPECT=$(median_ms docker image inspect "$IMAGE:latest")
echo "no-op apply of a docker_build step: ${NOOP} ms (median of $RUNS)"
echo "git status: ${GIT} ms; docker image inspect: ${INSPECT} ms"
awk -v n="$NOOP" -v g="$GIT" -v i="$INSPECT" 'BEGIN {
    printf "ratio: %.1fx git status, %.1fx docker image inspect\n", n / g, n / i }'

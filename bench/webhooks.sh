#!/usr/bin/env bash
# Load benchmark of `kcideploy serve`'s webhook ingest (issue: >= 5,000 requests/s, p99 < 10 ms
# on 2 cores, no event lost). wrk (Debian's package, installed if missing) POSTs the real
# `pull_request.opened` payload, signed, with a unique delivery id per request, over loopback.
# Afterwards every delivery answered 202 must be in the durable queue.
#
#   bench/webhooks.sh [DURATION] [CONNECTIONS]     (default 10s, 16)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10s}
CONNECTIONS=${2:-16}

if ! command -v wrk >/dev/null; then
    if [ "$(id -u)" = 0 ]; then apt-get install -y wrk >/dev/null; else sudo apt-get install -y wrk >/dev/null; fi
fi
cargo build --release -q
BIN=$PWD/target/release/kcideploy
WORK=$(mktemp -d)
trap 'kill $SERVER 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"' EXIT

# A real repo and a plan whose settle is long: the benchmark measures ingest, not deploys.
git init -q -b main "$WORK/core"
echo "a: 1" > "$WORK/core/a.yaml"
git -C "$WORK/core" add a.yaml
git -C "$WORK/core" -c user.name=b -c user.email=b@example.org commit -qm init
git clone -q --bare "$WORK/core" "$WORK/core.git"
cat > "$WORK/plan.yaml" <<PLAN
version: 1
name: bench
# In the work directory: the default state directory (~/.local/state) outlives the run, and
# its seen deliveries made the next run's answer 200 (duplicate), not 202.
state: { path: .kcideploy/bench.state.json }
notify: false
policy: { settle: 1h, cooldown: 1h }
repos:
  core: { url: core.git, base: master, github_repo: Codertocat/Hello-World }
components:
  all: { repo: core, paths: ["**"] }
steps:
  noop: { kind: command, on: [all], with: { run: ["true"] } }
PLAN
BODY=$PWD/tests/fixtures/github-webhooks/pull_request.opened.json
SECRET=bench-secret
SIGNATURE="sha256=$(python3 -c 'import hmac,hashlib,sys; print(hmac.new(sys.argv[1].encode(), open(sys.argv[2],"rb").read(), hashlib.sha256).hexdigest())' "$SECRET" "$BODY")"

KCIDEPLOY_WEBHOOK_SECRET=$SECRET RUST_LOG=error "$BIN" serve -f "$WORK/plan.yaml" --listen 127.0.0.1:0 >"$WORK/serve.out" 2>"$WORK/serve.err" &
SERVER=$!
for _ in $(seq 100); do grep -q listening "$WORK/serve.out" 2>/dev/null && break; sleep 0.1; done
URL=$(awk '/listening/ {print $NF}' "$WORK/serve.out")
# The first full cycle (nothing to deploy) is over before the load starts.
for _ in $(seq 100); do curl -sf "$URL/status" | grep -q '"last": {' && break; sleep 0.1; done

OUT=$(BODY_FILE=$BODY SIGNATURE=$SIGNATURE wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency -s bench/webhook.lua "$URL/webhook")
echo "$OUT"
sleep 1
# Nothing is acknowledged during the run (the settle is 1h): every line of every segment waits.
QUEUED=$(cat "$WORK"/.kcideploy/bench.webhooks/pending/*.jsonl 2>/dev/null | wc -l)
SEGMENTS=$(find "$WORK/.kcideploy/bench.webhooks/pending" -name '*.jsonl' | wc -l)
BATCHES=$(curl -sf "$URL/metrics" | awk '/^kcideploy_queue_flushes/ {print $2}')
ACCEPTED=$(awk '/accepted\(202\)/ {print $2}' <<<"$OUT")
RPS=$(awk '/^rps:/ {print $2}' <<<"$OUT")
P99=$(awk '/^p99_ms:/ {print $2}' <<<"$OUT")
echo
echo "queued on disk: $QUEUED in $SEGMENTS segments, $BATCHES disk flushes; answered 202: $ACCEPTED"
python3 - "$RPS" "$P99" "$QUEUED" "$ACCEPTED" <<'PY'
import sys
rps, p99, queued, accepted = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
print(f"throughput: {rps:.0f} req/s = {rps/5000:.2f}x the goal (5,000)")
print(f"p99 latency: {p99:.2f} ms = {p99/10:.2f}x the limit (10 ms)")
lost = max(0, accepted - queued)
print(f"lost events: {lost} ({'none' if lost == 0 else 'LOST'})")
sys.exit(0 if rps >= 5000 and p99 < 10 and lost == 0 else 1)
PY

#!/usr/bin/env bash
# Load benchmark of `kcideploy serve`'s webhook ingest (issue: >= 5,000 requests/s, p99 < 10 ms
# on 2 cores, no event lost). wrk (Debian's package, installed if missing) POSTs the real
# `pull_request.opened` payload, signed, with a unique delivery id per request, over loopback.
# Afterwards every delivery answered 202 must be in the durable queue.
#
#   bench/webhooks.sh [DURATION] [CONNECTIONS]     (default 10s, 16; KCD_BENCH_BIN=<a build>)
#
# With KCD_BENCH_BACKEND=postgres the queue is the PostgreSQL table that `serve` replicas
# share (issue #18: >= 2,000 deliveries/s, p99 < 20 ms, none lost): a throwaway cluster
# (initdb + pg_ctl, on a free loopback port, as the postgres user when run as root) is
# started for the run, and every 202 must be a row.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10s}
CONNECTIONS=${2:-16}

if ! command -v wrk >/dev/null; then
    if [ "$(id -u)" = 0 ]; then apt-get install -y wrk >/dev/null; else sudo apt-get install -y wrk >/dev/null; fi
fi
# KCD_BENCH_BIN: another build to measure (an older commit's, for a before/after).
if [ -n "${KCD_BENCH_BIN:-}" ]; then BIN=$KCD_BENCH_BIN; else cargo build --release -q; BIN=$PWD/target/release/kcideploy; fi
WORK=$(mktemp -d)
PG_CTL=
stop_all() {
    kill $SERVER 2>/dev/null || true
    wait 2>/dev/null || true
    if [ -n "$PG_CTL" ]; then $PG_CTL stop -m immediate >/dev/null 2>&1 || true; fi
    rm -rf "$WORK"
}
trap stop_all EXIT
BACKEND=
if [ "${KCD_BENCH_BACKEND:-local}" = postgres ]; then
    PGBIN=$(dirname "$(readlink -f "$(command -v initdb || ls /usr/lib/postgresql/*/bin/initdb | tail -1)")")
    [ -x "$PGBIN/initdb" ] || { echo "no initdb: apt-get install postgresql"; exit 1; }
    PGPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    mkdir -p "$WORK/pg"
    AS=()
    if [ "$(id -u)" = 0 ]; then chown postgres "$WORK" "$WORK/pg"; AS=(runuser -u postgres --); fi
    "${AS[@]}" "$PGBIN/initdb" -D "$WORK/pg/data" -U postgres --auth=trust >/dev/null
    PG_CTL="${AS[*]} $PGBIN/pg_ctl -D $WORK/pg/data"
    $PG_CTL -o "-p $PGPORT -k $WORK/pg -c listen_addresses=127.0.0.1" -l "$WORK/pg/log" -w start >/dev/null
    BACKEND="postgres://postgres@127.0.0.1:$PGPORT/postgres"
    echo "queue: PostgreSQL table on 127.0.0.1:$PGPORT"
fi

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

env ${BACKEND:+KCIDEPLOY_BACKEND=$BACKEND} KCIDEPLOY_WEBHOOK_SECRET=$SECRET RUST_LOG=error "$BIN" serve -f "$WORK/plan.yaml" --listen 127.0.0.1:0 >"$WORK/serve.out" 2>"$WORK/serve.err" &
SERVER=$!
for _ in $(seq 100); do grep -q listening "$WORK/serve.out" 2>/dev/null && break; sleep 0.1; done
URL=$(awk '/listening/ {print $NF}' "$WORK/serve.out")
# The first full cycle (nothing to deploy) is over before the load starts.
for _ in $(seq 100); do curl -sf "$URL/status" | grep -q '"last": {' && break; sleep 0.1; done

OUT=$(BODY_FILE=$BODY SIGNATURE=$SIGNATURE wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency -s bench/webhook.lua "$URL/webhook")
echo "$OUT"
sleep 1
# Nothing is acknowledged during the run (the settle is 1h): every line of every segment waits.
if [ -n "$BACKEND" ]; then
    QUEUED=$("$PGBIN/psql" -X -t -A "$BACKEND" -c "SELECT count(*) FROM kcideploy_webhooks WHERE name = 'bench'")
else
    QUEUED=$(cat "$WORK"/.kcideploy/bench.webhooks/pending/*.jsonl 2>/dev/null | wc -l)
    SEGMENTS=$(find "$WORK/.kcideploy/bench.webhooks/pending" -name '*.jsonl' | wc -l)
fi
GOAL_RPS=5000 GOAL_P99=10
if [ -n "$BACKEND" ]; then GOAL_RPS=2000 GOAL_P99=20; fi
BATCHES=$(curl -sf "$URL/metrics" | awk '/^kcideploy_queue_flushes/ {print $2}')
ACCEPTED=$(awk '/accepted\(202\)/ {print $2}' <<<"$OUT")
RPS=$(awk '/^rps:/ {print $2}' <<<"$OUT")
P99=$(awk '/^p99_ms:/ {print $2}' <<<"$OUT")
echo
if [ -n "$BACKEND" ]; then
    echo "queued rows: $QUEUED, $BATCHES commits; answered 202: $ACCEPTED"
else
    echo "queued on disk: $QUEUED in $SEGMENTS segments, $BATCHES disk flushes; answered 202: $ACCEPTED"
fi
python3 - "$RPS" "$P99" "$QUEUED" "$ACCEPTED" "$GOAL_RPS" "$GOAL_P99" <<'PY'
import sys
rps, p99, queued, accepted = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
goal_rps, goal_p99 = int(sys.argv[5]), int(sys.argv[6])
print(f"throughput: {rps:.0f} req/s = {rps/goal_rps:.2f}x the goal ({goal_rps:,})")
print(f"p99 latency: {p99:.2f} ms = {p99/goal_p99:.2f}x the limit ({goal_p99} ms)")
lost = max(0, accepted - queued)
print(f"lost events: {lost} ({'none' if lost == 0 else 'LOST'})")
sys.exit(0 if rps >= goal_rps and p99 < goal_p99 and lost == 0 else 1)
PY

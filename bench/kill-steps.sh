#!/usr/bin/env bash
# kill -9 `kcideploy apply` at random moments while its command steps run, then apply again
# at once (tests/kill_steps.rs, which runs 20 trials in the suite; here 50 by default) and
# print how many trials left step processes running 100 ms after the kill, started a step
# while its killed copy still ran, ran a finished step again, lost a step, or could not read
# state. A number to read: the test's own assertions decide pass or fail.
#
#   bench/kill-steps.sh [TRIALS] [BINARY]   (default 50; BINARY: another kcideploy to measure,
#                                            e.g. one built from an older commit)
set -euo pipefail
cd "$(dirname "$0")/.."
TRIALS=${1:-50}
export KCD_KILL_TRIALS=$TRIALS
if [ -n "${2:-}" ]; then export KCD_KILL_BIN=$(realpath "$2"); fi
OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT
status=0
cargo test -q --test kill_steps -- --nocapture >"$OUT" 2>&1 || status=$?
grep -E '^(seed|trial [0-9]+ .*(repeated \{"|overlapping \{"|lost \["|[1-9][0-9]* orphans))' "$OUT" || true
grep -E '^kill -9 trials' "$OUT" || { tail -30 "$OUT"; exit 1; }
[ "$status" -eq 0 ] && echo "acceptance: passed" || echo "acceptance: FAILED (see above)"

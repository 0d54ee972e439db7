#!/usr/bin/env bash
# Issue #20's figures, each side by side with its reference in the same run, as tables of
# ratios (Markdown, as the README's Performance section shows them):
#   - apply of a binary-tree DAG of `true` steps at 200, 1,000 and 5,000 steps, against
#     Terraform (200) and `xargs -P10` running as many `true` processes; per-step time from
#     the smallest to the largest size; bytes written to state and the journal during an
#     apply, and syncs (strace); the no-op plan against `terraform plan` (200 and 1,000
#     steps; at 1,000 Terraform applies once, untimed, for its plan's state); sleep steps against
#     their critical path (benches/apply.rs);
#   - staging assembly (`kcideploy plan`) at 10, 40 and 160 pending branches against
#     `git merge --no-ff` of each branch in a work tree (benches/plan.rs);
#   - webhook ingest of `kcideploy serve` at 16 and 64 connections (bench/webhooks.sh, wrk):
#     requests/s, p99 latency, deliveries answered 202 but not in the queue on disk; and the
#     serve process's RSS when idle, after its first cycle;
#   - peak RSS of `kcideploy plan` at each branch count (benches/plan.rs).
# About 11 minutes on 2 cores once built (the build is not counted).
#
#   bench/run.sh [quick]     quick: 200 and 1,000 steps, 10 and 40 branches, 3 runs, 64
#                            connections for 5 s
#
# Environment: KCD_BENCH_STEPS, KCD_BENCH_BRANCHES, KCD_BENCH_RUNS, KCD_BENCH_TERRAFORM_MAX
# override the sizes (see the two benches); KCD_BENCH_CONNECTIONS ("16 64") and
# KCD_BENCH_WEBHOOK_SECONDS (10) the webhook load. Needs git; terraform, strace, xargs and wrk
# for their figures (each missing one is said, and its figures left out).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = quick ]; then
    : "${KCD_BENCH_STEPS:=200 1000}" "${KCD_BENCH_BRANCHES:=10 40}" "${KCD_BENCH_RUNS:=3}"
    : "${KCD_BENCH_CONNECTIONS:=64}" "${KCD_BENCH_WEBHOOK_SECONDS:=5}"
fi
export KCD_BENCH_STEPS=${KCD_BENCH_STEPS:-200 1000 5000}
export KCD_BENCH_BRANCHES=${KCD_BENCH_BRANCHES:-10 40 160}
export KCD_BENCH_RUNS=${KCD_BENCH_RUNS:-5}
export KCD_BENCH_TERRAFORM_MAX=${KCD_BENCH_TERRAFORM_MAX:-200}

cargo bench --no-run -q --bench apply --bench plan 2>&1 | grep -v '^ *Executable' || true
start=$(date +%s)
echo "kcideploy $(git rev-parse --short HEAD), $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo
cargo bench -q --bench apply
echo
cargo bench -q --bench plan
echo
if command -v wrk >/dev/null; then
    echo "webhook ingest, wrk -t2 for ${KCD_BENCH_WEBHOOK_SECONDS:-10} s per row, on the same 2 cores as the server"
    echo
    echo "| connections | requests/s | p99 | lost | goal |"
    echo "|---|---|---|---|---|"
    idle=
    for c in ${KCD_BENCH_CONNECTIONS:-16 64}; do
        # Its exit status says whether the goals were met; the row says it too.
        out=$(bash bench/webhooks.sh "${KCD_BENCH_WEBHOOK_SECONDS:-10}s" "$c" || true)
        idle=${idle:-$(awk '/^serve idle RSS:/ {print $4}' <<<"$out")}
        rps=$(awk '/^throughput:/ {print $2}' <<<"$out")
        p99=$(awk '/^p99 latency:/ {print $3}' <<<"$out")
        lost=$(awk '/^lost events:/ {print $3}' <<<"$out")
        echo "| $c | ${rps:-?} | ${p99:-?} ms | ${lost:-?} | p99 < 10 ms, none lost |"
    done
    echo
    echo "serve idle (after its first cycle, before the load): RSS ${idle:-?} MB (goal <= 30 MB)"
else
    echo "no \`wrk\` on PATH (apt-get install wrk): webhook ingest left out"
fi
echo
echo "took $(( $(date +%s) - start )) s"

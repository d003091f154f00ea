#!/usr/bin/env bash
# bench-checkout.sh — checkout saga figures against the fleet that `make up` runs
# (release builds), by mp-load's checkout mode (crates/load/src/checkout.rs):
# checkouts at rising rates (BENCH_RATES, default 50,100,150,300 per second,
# BENCH_SECONDS each, default 10), for each the checkouts accepted, shed and confirmed,
# completed checkouts per second, p50/p99 from the 202 to `confirmed`, and what one
# checkout costs (CPU by process, PostgreSQL commits, events published, deliveries
# handled); then `pgbench -N` TPS on the same PostgreSQL in the same run, as the
# yardstick of what the machine does at that moment. Results as JSON in
# $FLEET_STATE_DIR/checkout-results.json. DESIGN's targets: 300 completed/s; p99 <
# 250 ms at 150/s. Exit status 1 when an accepted checkout did not confirm.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
STATE_DIR=${FLEET_STATE_DIR:-$ROOT/.local}
say() { printf 'bench-checkout: %s\n' "$*"; }

for port in $(awk '!/^#/ && NF {print $2}' "$ROOT/deploy/services.txt"); do
    curl -sf "http://127.0.0.1:$port/health/ready" >/dev/null || {
        say "ERROR: service on :$port is not ready: run 'make up'" >&2
        exit 1
    }
done

LOAD_OUT=$STATE_DIR/checkout-results.json bash scripts/load.sh \
    --checkout-rates "${BENCH_RATES:-50,100,150,300}" --seconds "${BENCH_SECONDS:-10}"

# Where the order service's time goes, from its own histograms.
metrics=$(curl -sf http://127.0.0.1:5001/metrics)
say "charge (test gateway): $(awk '/^order_charge_duration_seconds_sum/ {s=$2} /^order_charge_duration_seconds_count/ {c=$2}
    END {if (c) printf "%.2f ms mean over %d charges", 1000 * s / c, c}' <<<"$metrics")"
say "stuck sagas by step: $(grep '^order_saga_stuck' <<<"$metrics" | tr '\n' ' ')"

#!/usr/bin/env bash
# bench-checkout.sh — checkout saga figures against the fleet that `make up` runs
# (release builds): checkouts at rising rates (BENCH_RATES, default 50,100,150,300 per
# second, BENCH_SECONDS each, default 10), completed checkouts per second and p50/p99
# from the 202 to `confirmed`; then `pgbench -N` TPS on the same PostgreSQL in the same
# run, as the yardstick of what the machine does at that moment. Prints figures;
# asserts nothing. DESIGN's targets: 300 completed/s; p99 < 250 ms at 150/s.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source-path=SCRIPTDIR source=infra.sh
. "$ROOT/scripts/infra.sh"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/marketplace/target}
case $CARGO_TARGET_DIR in /*) ;; *) CARGO_TARGET_DIR=$ROOT/$CARGO_TARGET_DIR ;; esac
PROFILE=${FLEET_PROFILE:-release}
STATE_DIR=${FLEET_STATE_DIR:-$ROOT/.local}
SECONDS_PER_RUN=${BENCH_SECONDS:-10}
say() { printf 'bench-checkout: %s\n' "$*"; }
die() {
    printf 'bench-checkout: ERROR: %s\n' "$*" >&2
    exit 1
}

infra_need_cmd pgbench postgresql-client
infra_need_cmd jq jq
[[ -f $STATE_DIR/admin.env ]] || die "no $STATE_DIR/admin.env: run 'make up' first"
set -a
# shellcheck source=/dev/null
. "$STATE_DIR/admin.env"
set +a
for port in $(awk '!/^#/ && NF {print $2}' "$(dirname "${BASH_SOURCE[0]}")/../deploy/services.txt"); do
    curl -sf "http://127.0.0.1:$port/health/ready" >/dev/null || die "service on :$port is not ready: run 'make up'"
done

cargo build --profile "$PROFILE" -q -p mp-integration-tests --bin checkout-bench
JWT_SIGNING_KEY=$(<"$STATE_DIR/keys/user.pem") "$CARGO_TARGET_DIR/$PROFILE/checkout-bench"

# pgbench on a scratch database of the same server, right after the load, as the
# project role (scripts/infra.sh gives it CREATEDB).
PGURL=${DATABASE_URL:-$(infra_database_url)}
psql "$PGURL" -qtAc "drop database if exists mp_pgbench" >/dev/null
psql "$PGURL" -qtAc "create database mp_pgbench" >/dev/null
bench_url=${PGURL%/*}/mp_pgbench
pgbench -q -i -s 10 "$bench_url" >/dev/null 2>&1
tps=$(pgbench -N -c 8 -j 2 -T "$SECONDS_PER_RUN" "$bench_url" 2>/dev/null | awk '/^tps/ {printf "%d", $3; exit}')
psql "$PGURL" -qtAc "drop database if exists mp_pgbench" >/dev/null
say "pgbench -N (8 clients, ${SECONDS_PER_RUN}s) on the same PostgreSQL: $tps TPS"

# Where the time goes: the order service's own histograms.
metrics=$(curl -sf http://127.0.0.1:5001/metrics)
say "charge (test gateway): $(awk '/^order_charge_duration_seconds_sum/ {s=$2} /^order_charge_duration_seconds_count/ {c=$2}
    END {if (c) printf "%.2f ms mean over %d charges", 1000 * s / c, c}' <<<"$metrics")"
say "stuck sagas by step: $(grep '^order_saga_stuck' <<<"$metrics" | tr '\n' ' ')"

#!/usr/bin/env bash
# load.sh — the load generator (crates/load, `mp-load`) against the fleet `make up` runs:
# a shop mix at an open-loop rate, figures per operation, the business invariants
# checked through the public APIs, the catalog read beside a bare axum endpoint,
# `pgbench -N` TPS and each process's memory; results as JSON in
# $FLEET_STATE_DIR/load-results.json (LOAD_OUT names another file). Arguments go to mp-load (`--help` lists them);
# REPLICAS is read from the fleet's state (what the last 'up' ran) unless set.
# Exit status 1 when an invariant fails.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source-path=SCRIPTDIR source=infra.sh
. "$ROOT/scripts/infra.sh"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/marketplace/target}
case $CARGO_TARGET_DIR in /*) ;; *) CARGO_TARGET_DIR=$ROOT/$CARGO_TARGET_DIR ;; esac
PROFILE=${FLEET_PROFILE:-release}
export FLEET_STATE_DIR=${FLEET_STATE_DIR:-$ROOT/.local}
die() {
    printf 'load: ERROR: %s\n' "$*" >&2
    exit 1
}

infra_need_cmd pgbench postgresql-client
[[ -f $FLEET_STATE_DIR/admin.env ]] || die "no $FLEET_STATE_DIR/admin.env: run 'make up' first"
set -a
# shellcheck source=/dev/null
. "$FLEET_STATE_DIR/admin.env"
set +a
export REPLICAS=${REPLICAS:-$(cat "$FLEET_STATE_DIR/run/replicas" 2>/dev/null || echo 1)}
export DATABASE_URL=${DATABASE_URL:-$(infra_database_url)}
# With the services in one invocation: cargo resolves the shared dependencies' features
# as for the fleet and reuses its build (alone, mp-load would compile some again).
cargo build --profile "$PROFILE" -q -p mp-load -p cart -p customer -p inventory -p notification -p order -p vendor --bins
JWT_SIGNING_KEY=$(<"$FLEET_STATE_DIR/keys/user.pem") \
    "$CARGO_TARGET_DIR/$PROFILE/mp-load" --out "${LOAD_OUT:-$FLEET_STATE_DIR/load-results.json}" "$@"

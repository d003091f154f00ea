#!/usr/bin/env bash
# check-service-roles.sh BIN_DIR — deploy/postgres/service-roles.sql against the
# local PostgreSQL (scripts/test-deploy.sh, live step), in a throw-away database
# and with throw-away role names (t_dep<id>_mp_<service>: roles belong to the
# whole server, so the real mp_<service> names are left alone), as a
# non-superuser administrator with CREATEROLE and CREATEDB (the project role of
# `make infra`, as at a managed provider):
#   1. an older deployment: two services migrated as the administrator (the
#      shared role of before), so their schemas and tables belong to it;
#   2. the script, twice: roles made, those schemas handed over, the others
#      created for their roles;
#   3. each service migrates its schema as its own role (BIN_DIR/<service> migrate);
#   4. the script again: its own proof that every role owns its schema and all
#      in it and may not use another's passes after the migrations;
#   5. the order service's role is refused the customer tables and a schema of
#      its own making; grafana-role.sql (as the administrator) lets Grafana's
#      role read orders.orders, now mp_order's.
# Everything it made is dropped at the end. ADMIN_DATABASE_URL overrides the
# administrator's URL (default: `scripts/infra.sh database-url`).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=${1:?usage: check-service-roles.sh BIN_DIR}
# The services (deploy/services.txt, generated from the event catalog).
mapfile -t SERVICES < <(awk '!/^#/ && NF {print $1}' "$ROOT/deploy/services.txt")
ADMIN_URL=${ADMIN_DATABASE_URL:-$(bash "$ROOT/scripts/infra.sh" database-url)}
ID=t_dep$$_$((RANDOM % 1000))
DB=${ID}_db
TMP=$(mktemp -d "${TMPDIR:-/tmp}/service-roles.XXXXXX")
DB_URL=${ADMIN_URL%/*}/$DB
HOSTPART=${ADMIN_URL#*@}
HOSTPART=${HOSTPART%%/*}

die() {
    printf 'service-roles: FAIL: %s\n' "$*" >&2
    exit 1
}
admin() { psql -X -q -v ON_ERROR_STOP=1 "$@"; }
cleanup() {
    local rc=$? s
    admin "$ADMIN_URL" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
    for s in "${SERVICES[@]}"; do
        admin "$ADMIN_URL" -c "DROP ROLE IF EXISTS ${ID}_mp_$s" >/dev/null 2>&1 || true
    done
    admin "$ADMIN_URL" -c "DROP ROLE IF EXISTS ${ID}_grafana" >/dev/null 2>&1 || true
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT

for s in "${SERVICES[@]}"; do
    [[ -x $BIN/$s ]] || die "no $BIN/$s (build the services first)"
    export "POSTGRES_${s^^}_PASSWORD=pw$RANDOM$RANDOM$s"
done
export GRAFANA_DB_PASSWORD=gpw$RANDOM$RANDOM
# The scripts as they are, with throw-away role names.
sed "s/'mp_\([a-z]*\)'/'${ID}_mp_\1'/g" "$ROOT/deploy/postgres/service-roles.sql" >"$TMP/service-roles.sql"
sed "s/mp_grafana/${ID}_grafana/g" "$ROOT/deploy/postgres/grafana-role.sql" >"$TMP/grafana-role.sql"
grep -q "'${ID}_mp_order'" "$TMP/service-roles.sql" || die "service-roles.sql names no role 'mp_order'"

admin "$ADMIN_URL" -c "CREATE DATABASE $DB"
# 1. An older deployment: every service as one shared role (here the administrator).
for s in customer order; do
    DATABASE_URL=$DB_URL "$BIN/$s" migrate >"$TMP/old-$s.log" 2>&1 || { cat "$TMP/old-$s.log" >&2; die "$s migrate (old layout)"; }
done
# 2. Roles and schemas, twice (idempotent).
for run in 1 2; do
    admin "$DB_URL" -f "$TMP/service-roles.sql" >"$TMP/roles-$run.log" 2>&1 ||
        { cat "$TMP/roles-$run.log" >&2; die "service-roles.sql (run $run)"; }
done
grep -q "schema orders handed over" "$TMP/roles-1.log" || { cat "$TMP/roles-1.log" >&2; die "orders was not handed over"; }
grep -q "schema cart created" "$TMP/roles-1.log" || { cat "$TMP/roles-1.log" >&2; die "cart was not created"; }
if grep -qE "handed over|created for" "$TMP/roles-2.log"; then
    cat "$TMP/roles-2.log" >&2
    die "the second run changed schemas again"
fi
# 3. Each service migrates as its own role.
for s in "${SERVICES[@]}"; do
    pw_var=POSTGRES_${s^^}_PASSWORD
    DATABASE_URL="postgres://${ID}_mp_$s:${!pw_var}@$HOSTPART/$DB" "$BIN/$s" migrate >"$TMP/mig-$s.log" 2>&1 ||
        { cat "$TMP/mig-$s.log" >&2; die "$s migrate as ${ID}_mp_$s"; }
done
# 4. The script's own proof, over the migrated tables.
admin "$DB_URL" -f "$TMP/service-roles.sql" >"$TMP/roles-3.log" 2>&1 ||
    { cat "$TMP/roles-3.log" >&2; die "service-roles.sql after the migrations"; }
# 5. What the order service's role may not do, and Grafana's grant.
order_url="postgres://${ID}_mp_order:$POSTGRES_ORDER_PASSWORD@$HOSTPART/$DB"
for sql in "SELECT count(*) FROM customer.customers" "CREATE SCHEMA ${ID}_x" "CREATE TABLE public.${ID}_x (i int)" \
    "SELECT count(*) FROM cart.outbox"; do
    if psql -X -q -v ON_ERROR_STOP=1 "$order_url" -c "$sql" >/dev/null 2>&1; then
        die "the order service's role may: $sql"
    fi
done
psql -X -q -v ON_ERROR_STOP=1 "$order_url" -Atc "SELECT count(*) FROM orders.orders" >/dev/null ||
    die "the order service's role cannot read its own orders.orders"
admin "$DB_URL" -f "$TMP/grafana-role.sql" >"$TMP/grafana.log" 2>&1 || { cat "$TMP/grafana.log" >&2; die "grafana-role.sql"; }
psql -X -q -v ON_ERROR_STOP=1 "postgres://${ID}_grafana:$GRAFANA_DB_PASSWORD@$HOSTPART/$DB" \
    -Atc "SELECT count(*) FROM orders.orders" >/dev/null || die "Grafana's role cannot read orders.orders"
echo "service-roles: six roles own their schemas (two handed over from an older deployment), each service" \
    "migrated as its role, mp_order refused the others' tables, mp_grafana reads orders.orders"

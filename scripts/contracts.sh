#!/usr/bin/env bash
# contracts.sh — Schemathesis against the running services' OpenAPI documents, with
# every check on (`--checks all`), a fixed seed and a bounded number of examples:
# every response must be documented (status, content type, body schema, headers),
# valid requests must be accepted and invalid ones refused, no 5xx. `make test` runs
# it against the fleet it starts; alone, against `make up`:
#
#   bash scripts/contracts.sh               all six services
#   bash scripts/contracts.sh vendor cart   some of them
#
# Settings: tests/contracts/schemathesis.toml; the pinned version:
# tests/contracts/requirements.txt; how each operation is authenticated:
# tests/contracts/hooks.py. Reports (JUnit, and a pytest file reproducing each failure)
# go to $FLEET_STATE_DIR/contracts (default .local/contracts).
#
#   CONTRACTS_MAX_EXAMPLES   examples per operation and phase (default: the toml's)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=scripts/infra.sh
. scripts/infra.sh

STATE_DIR=${FLEET_STATE_DIR:-$ROOT/.local}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/marketplace/target}
case $CARGO_TARGET_DIR in /*) ;; *) CARGO_TARGET_DIR=$ROOT/$CARGO_TARGET_DIR ;; esac
BIN_DIR=$CARGO_TARGET_DIR/${FLEET_PROFILE:-release}
REQUIREMENTS=tests/contracts/requirements.txt
VENV=$HOME/.cache/marketplace/schemathesis-$(sha256sum "$REQUIREMENTS" | cut -c1-12)
REPORT_DIR=$STATE_DIR/contracts

# name:port (deploy/services.txt, generated from the event catalog).
mapfile -t ALL < <(awk '!/^#/ && NF {print $1 ":" $2}' deploy/services.txt)

say() { printf 'contracts: %s\n' "$*"; }
die() {
    printf 'contracts: FAIL: %s\n' "$*" >&2
    exit 1
}

# The tool, in a virtualenv of its own keyed by the pinned requirements: installed once,
# reinstalled only when the pin changes.
ensure_schemathesis() {
    [[ -f $VENV/.installed ]] && return
    python3 -m venv --help >/dev/null 2>&1 && python3 -c 'import ensurepip' 2>/dev/null ||
        infra_apt_install python3-venv
    say "installing $(grep -v '^#' "$REQUIREMENTS" | xargs) into $VENV"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-input -r "$REQUIREMENTS"
    touch "$VENV/.installed"
}

selected=()
if (($# == 0)); then
    selected=("${ALL[@]}")
else
    for name in "$@"; do
        match=
        for entry in "${ALL[@]}"; do [[ ${entry%%:*} == "$name" ]] && match=$entry; done
        [[ -n $match ]] || die "no service named '$name' (one of: ${ALL[*]%%:*})"
        selected+=("$match")
    done
fi

for entry in "${ALL[@]}"; do
    curl -fsS -o /dev/null --max-time 5 "http://127.0.0.1:${entry##*:}/health/ready" ||
        die "${entry%%:*} is not ready on :${entry##*:}; start the fleet first (make up)"
done
[[ -s $STATE_DIR/admin.env && -s $STATE_DIR/keys/cart.pem ]] ||
    die "no $STATE_DIR/admin.env or signing keys; start the fleet with make up"
[[ -x $BIN_DIR/cart ]] || die "no $BIN_DIR/cart; build with make build"

ensure_schemathesis

set -a
# shellcheck source=/dev/null
. "$STATE_DIR/admin.env"
set +a
export MP_CUSTOMER_URL=http://127.0.0.1:5000 MP_VENDOR_URL=http://127.0.0.1:5004
export MP_ADMIN_EMAIL=$ADMIN_EMAIL MP_ADMIN_PASSWORD=$ADMIN_PASSWORD
export MP_SERVICE_BIN=$BIN_DIR/cart MP_SERVICE_KEY_FILE=$STATE_DIR/keys/cart.pem
export PYTHONPATH=$ROOT/tests/contracts${PYTHONPATH:+:$PYTHONPATH} SCHEMATHESIS_HOOKS=hooks

args=(--checks all)
[[ -n ${CONTRACTS_MAX_EXAMPLES:-} ]] && args+=(--max-examples "$CONTRACTS_MAX_EXAMPLES")

mkdir -p "$REPORT_DIR"
failed=()
for entry in "${selected[@]}"; do
    svc=${entry%%:*}
    say "== $svc (http://127.0.0.1:${entry##*:}/openapi.json)"
    # Service tokens name the service they are for: the hooks mint them for this one.
    if ! MP_SERVICE_TARGET=$svc "$VENV/bin/schemathesis" --config-file tests/contracts/schemathesis.toml run \
        "http://127.0.0.1:${entry##*:}/openapi.json" "${args[@]}" \
        --report junit,pytest --report-dir "$REPORT_DIR/$svc"; then
        failed+=("$svc")
    fi
done

if ((${#failed[@]})); then
    die "contract failures in: ${failed[*]} (reports in $REPORT_DIR/<service>)"
fi
say "all contracts hold: ${selected[*]%%:*}"

#!/usr/bin/env bash
# test-proof.sh — the small sizes of the proof under load and faults, as `make test`
# runs them after scripts/test-deploy.sh (the full sizes: `make chaos`, `make bench`):
#
#   - replicas: two processes of every service (REPLICAS=2) on the same PostgreSQL,
#     RabbitMQ and Redis, requests spread over both;
#   - concurrency: mp-load's shoppers race for a scarce product with good, declined and
#     transiently failing cards;
#   - bad messages: malformed and unauthentic ones published straight to the exchange
#     beside the load, each of which must reach a DLQ with its reason;
#   - faults: the combined scenario of scripts/chaos.sh while that load runs (kill -9 of
#     one replica of each service and its restart, Redis flushed, RabbitMQ stopped and
#     started, PostgreSQL restarted).
#
# Afterwards mp-load checks every invariant through the public APIs and prints each with
# its figure; the exit status is 1 when one fails. PROOF_TEST=0 skips this step.
# PROOF_RATE (default 4 shoppers/s), PROOF_SECONDS (default 12) and
# PROOF_BAD_MESSAGES (default 40) size it. The fleet is stopped again at the end
# unless it was running before.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
say() { printf 'test-proof: %s\n' "$*"; }

if [[ ${PROOF_TEST:-1} == 0 ]]; then
    say "skipped (PROOF_TEST=0)"
    exit 0
fi

STATE_DIR=${FLEET_STATE_DIR:-$ROOT/.local}
was_running=0 replicas_before=1
if bash scripts/fleet.sh status 2>/dev/null | grep -q ' ready$'; then
    was_running=1
    replicas_before=$(cat "$STATE_DIR/run/replicas" 2>/dev/null || echo 1)
fi
# A fleet that ran before runs again with its own replica count.
cleanup() {
    local rc=$?
    if ((was_running == 0)); then
        bash scripts/fleet.sh down >/dev/null 2>&1 || true
    else
        REPLICAS=$replicas_before FLEET_SKIP_BUILD=1 FLEET_SKIP_SEED=1 \
            bash scripts/fleet.sh up >/dev/null 2>&1 || true
    fi
    exit "$rc"
}
trap cleanup EXIT

say "two replicas of each service, ${PROOF_RATE:-4} shoppers/s for ${PROOF_SECONDS:-12}s," \
    "${PROOF_BAD_MESSAGES:-40} bad messages, every fault combined"
REPLICAS=2 CHAOS_SCENARIOS=combined CHAOS_RATE=${PROOF_RATE:-4} \
    CHAOS_SECONDS=${PROOF_SECONDS:-12} CHAOS_BAD_MESSAGES=${PROOF_BAD_MESSAGES:-40} \
    bash scripts/chaos.sh

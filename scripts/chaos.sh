#!/usr/bin/env bash
# chaos.sh — faults while the shop load runs, against REPLICAS (default 2) processes
# of each service: one scenario at a time, then all combined; after each, mp-load
# checks every invariant (scripts/load.sh) and prints it with its figure.
#
#   kill      kill -9 of one replica of each service, restarted 5 s later
#   rabbitmq  RabbitMQ's application stopped for 5 s and started again
#   redis     Redis flushed (reservations, sessions, caches: soft state)
#   postgres  PostgreSQL restarted (fast shutdown: every connection dropped)
#   combined  all of the above in one run
#
# CHAOS_SCENARIOS (default all five), CHAOS_RATE shoppers/s (default 15),
# CHAOS_SECONDS per scenario (default 30), CHAOS_BAD_MESSAGES published beside each
# (default 100). Exit status 1 when an invariant fails.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export REPLICAS=${REPLICAS:-2}
RATE=${CHAOS_RATE:-15}
DURATION=${CHAOS_SECONDS:-30}
BAD=${CHAOS_BAD_MESSAGES:-100}
SCENARIOS=${CHAOS_SCENARIOS:-kill rabbitmq redis postgres combined}
STATE_DIR=${FLEET_STATE_DIR:-$ROOT/.local}
say() { printf 'chaos: %s %s\n' "$(date -u +%H:%M:%S)" "$*"; }

inject_kill() {
    local svc pid
    for svc in $(awk '!/^#/ && NF {print $1}' deploy/services.txt); do
        pid=$(cat "$STATE_DIR/run/$svc-2.pid" 2>/dev/null || cat "$STATE_DIR/run/$svc.pid")
        say "injected: kill -9 $svc replica (pid $pid)"
        kill -9 "$pid" 2>/dev/null || true
    done
    sleep 5
    say "restarting the killed replicas"
    FLEET_SKIP_BUILD=1 FLEET_SKIP_SEED=1 bash scripts/fleet.sh up >"$STATE_DIR/logs/chaos-up.log" 2>&1 ||
        say "fleet up after the kill failed (see $STATE_DIR/logs/chaos-up.log)"
    say "replicas back: $(bash scripts/fleet.sh status | grep -c ' ready$') processes ready;" \
        "restarted ones ready in: $(sed -n 's/^\([a-z][a-z0-9-]*\) .* ready (in \([0-9]*\) ms)$/\1 \2 ms/p' \
            "$STATE_DIR/logs/chaos-up.log" | paste -sd, -)"
}
inject_rabbitmq() {
    say "injected: RabbitMQ stopped"
    rabbitmqctl -q stop_app >/dev/null
    sleep 5
    rabbitmqctl -q start_app >/dev/null
    rabbitmqctl -q await_startup >/dev/null
    say "RabbitMQ started again"
}
inject_redis() {
    say "injected: Redis FLUSHALL"
    redis-cli -h 127.0.0.1 -p 6379 FLUSHALL >/dev/null
}
inject_postgres() {
    say "injected: PostgreSQL restart"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main restart -m fast
    say "PostgreSQL back"
}

bash scripts/fleet.sh up >/dev/null
say "$(bash scripts/fleet.sh status | grep -c ' ready$') processes ready ($REPLICAS replicas of each service)"
failed=()
for scenario in $SCENARIOS; do
    say "---- scenario $scenario: $RATE shoppers/s for ${DURATION}s"
    log=$STATE_DIR/logs/chaos-$scenario.log
    bash scripts/load.sh --no-probes --rate "$RATE" --seconds "$DURATION" --bad-messages "$BAD" >"$log" 2>&1 &
    load=$!
    # Faults only once the shoppers arrive (registering them comes first).
    for _ in $(seq 600); do
        grep -q 'shoppers/s for' "$log" 2>/dev/null && break
        kill -0 "$load" 2>/dev/null || break
        sleep 0.2
    done
    sleep $((DURATION / 4))
    case $scenario in
    combined)
        inject_kill
        inject_redis
        inject_rabbitmq
        inject_postgres
        ;;
    *) "inject_$scenario" ;;
    esac
    if wait "$load"; then status=held; else status=FAILED; failed+=("$scenario"); fi
    sed -n '/^mp-load: [0-9]* checkouts/p; /^mp-load: invariants/,/^mp-load: results/p' "$log" |
        grep -v '^mp-load: results' | sed 's/^/  /'
    say "scenario $scenario: invariants $status (full output: $log)"
    # The next scenario starts with every process up.
    FLEET_SKIP_BUILD=1 FLEET_SKIP_SEED=1 bash scripts/fleet.sh up >/dev/null 2>&1 || true
done
if ((${#failed[@]} > 0)); then
    say "FAILED: ${failed[*]}"
    exit 1
fi
say "every invariant held in: $SCENARIOS"

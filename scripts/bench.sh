#!/usr/bin/env bash
# bench.sh — load figures for DESIGN's performance targets, against the fleet that
# `make up` runs (release builds). Prints figures; asserts nothing (they drift on a
# shared machine, so ratios are measured in the same run).
#
#   1. catalog read GET /api/products/{id} against a bare axum endpoint (same run, same
#      load generator), the same endpoint behind the common layers alone, then p99 at
#      half the catalog's rate;
#   2. reservations POST /api/reservations (the inventory half of add-to-cart);
#   3. the event hop (outbox commit to consumer commit) on an idle fleet, from the
#      services' histograms after 100 product updates;
#   4. peak memory of the services under that load.
#
# The reservation run uses a product of its own, under a vendor of its own ("Bench",
# made once, its id kept in the state dir's bench.env): the product is active only while
# the benchmark runs, so the demo catalog never shows it.
#
# BENCH_SECONDS (default 10) sets each run's length (a third of it for each run of the catalog
# comparison's rounds), BENCH_ROUNDS (default 5) how many interleaved rounds it takes. FLEET_STATE_DIR and FLEET_PROFILE
# as for scripts/fleet.sh (the bare endpoint is built with the fleet's profile, so the
# ratio compares like with like).
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
ROUNDS=${BENCH_ROUNDS:-5}
ROUND_SECONDS=$(((SECONDS_PER_RUN + 2) / 3))
BARE_ADDR=127.0.0.1:5999
LAYERED_ADDR=127.0.0.1:5998
SUBSCRIBER_ADDR=127.0.0.1:5997
say() { printf 'bench: %s\n' "$*"; }
die() {
    printf 'bench: ERROR: %s\n' "$*" >&2
    exit 1
}

for tool in wrk hey jq curl; do infra_need_cmd "$tool" "$tool"; done
[[ -f $STATE_DIR/admin.env ]] || die "no $STATE_DIR/admin.env: run 'make up' first"
set -a
# shellcheck source=/dev/null
. "$STATE_DIR/admin.env"
set +a
for port in 5000 5003 5004; do
    curl -sf "http://127.0.0.1:$port/health/ready" >/dev/null || die "service on :$port is not ready: run 'make up'"
done

# With the services in one invocation: cargo then resolves the dependencies' features as
# for the fleet and reuses its build (alone, mp-bench would compile some crates again).
cargo build --profile "$PROFILE" -q -p mp-bench -p cart -p customer -p inventory -p notification -p order -p vendor --bins
BENCH=$CARGO_TARGET_DIR/$PROFILE/mp-bench
"$BENCH" bare "$BARE_ADDR" &
bare_pid=$!
trap 'kill $bare_pid 2>/dev/null || true' EXIT
until curl -sf "http://$BARE_ADDR/" >/dev/null; do sleep 0.05; done

rps() { awk '/Requests\/sec/ {printf "%d", $2}'; }
p99_wrk() { awk '$1 == "99%" {print $2}'; }

# ---------------------------------------------------------------- 1. catalog read
product=$(curl -sf 'http://127.0.0.1:5004/api/products?limit=1' | jq -r '.items[0].id // empty')
[[ -n $product ]] || die "the catalog is empty: run 'make up' (it seeds a demo catalog)"
catalog_url=http://127.0.0.1:5004/api/products/$product

# What the layers every service runs cost alone: the bare endpoint behind them (context,
# metrics, access log written to a file like a service's, time-out, panics, body limit).
layered_log=$(mktemp)
"$BENCH" layered "$LAYERED_ADDR" >"$layered_log" &
layered_pid=$!
# The same layers logging through tracing-subscriber's JSON and tracing-appender
# (lossless) instead of ours: what the hand-written log writer buys.
subscriber_log=$(mktemp)
"$BENCH" layered-subscriber "$SUBSCRIBER_ADDR" >"$subscriber_log" &
subscriber_pid=$!
trap 'kill $bare_pid $layered_pid $subscriber_pid 2>/dev/null || true; rm -f "$layered_log" "$subscriber_log"' EXIT
until curl -sf "http://$LAYERED_ADDR/" >/dev/null; do sleep 0.05; done
until curl -sf "http://$SUBSCRIBER_ADDR/" >/dev/null; do sleep 0.05; done

# Interleaved rounds (bare, layers alone, catalog), each ratio taken within its round and
# the median reported: on a shared two-core machine the throughput swings by a third from
# one run to the next, and a single pair of runs can land on either side of the target.
median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
percent() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f", 100 * a / b }'; }
# CPU time the serving process spent (clock ticks, user and system).
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
# One wrk run against a server: sets `run_rps`, `p99` and `us`, the microseconds of the
# server's CPU per request (what it costs whatever share of the cores wrk took; it still
# moves with the machine's load).
run_wrk() { # run_wrk <server pid> <url>
    local before out
    before=$(cpu_ticks "$1")
    out=$(wrk -t2 -c64 -d"${ROUND_SECONDS}s" --latency "$2")
    run_rps=$(rps <<<"$out") p99=$(p99_wrk <<<"$out")
    us=$(awk -v t=$(($(cpu_ticks "$1") - before)) -v hz="$(getconf CLK_TCK)" \
        -v n="$(awk '/requests in/ { print $1 }' <<<"$out")" 'BEGIN { printf "%.1f", t * 1000000 / hz / n }')
}
vendor_pid=$(cat "$STATE_DIR/run/vendor.pid")
say "catalog read vs bare axum: $ROUNDS interleaved rounds of wrk -t2 -c64 -d${ROUND_SECONDS}s"
bare_all=() layered_all=() catalog_all=() ratios=() layered_ratios=()
bare_us_all=() layered_us_all=() catalog_us_all=() subscriber_all=() subscriber_us_all=() subscriber_ratios=()
for round in $(seq "$ROUNDS"); do
    run_wrk "$bare_pid" "http://$BARE_ADDR/"
    b=$run_rps bare_all+=("$run_rps") bare_us_all+=("$us")
    run_wrk "$layered_pid" "http://$LAYERED_ADDR/"
    l=$run_rps layered_all+=("$run_rps") layered_us_all+=("$us")
    run_wrk "$subscriber_pid" "http://$SUBSCRIBER_ADDR/"
    subscriber_all+=("$run_rps") subscriber_us_all+=("$us") subscriber_ratios+=("$(percent "$run_rps" "$l")")
    run_wrk "$vendor_pid" "$catalog_url"
    c=$run_rps catalog_all+=("$run_rps") catalog_us_all+=("$us")
    say "  round $round: bare $b req/s, layers alone $l, catalog $c (p99 $p99): $(percent "$c" "$b")%"
    ratios+=("$(percent "$c" "$b")") layered_ratios+=("$(percent "$l" "$b")")
done
kill "$layered_pid" "$subscriber_pid" 2>/dev/null || true
wait "$layered_pid" "$subscriber_pid" 2>/dev/null || true
rm -f "$layered_log" "$subscriber_log"
trap 'kill $bare_pid 2>/dev/null || true' EXIT
catalog_rps=$(median "${catalog_all[@]}")
bare_us=$(median "${bare_us_all[@]}")
catalog_us=$(median "${catalog_us_all[@]}")
say "  bare axum:     $(median "${bare_all[@]}") req/s (median)"
say "  catalog read:  $catalog_rps req/s (median)"
say "  ratio:         $(median "${ratios[@]}")% of bare axum, the median of the rounds' ratios (target >= 60%)"
say "  layers alone:  $(median "${layered_all[@]}") req/s, $(median "${layered_ratios[@]}")% of bare axum (the bare endpoint behind the common layers)"
say "  server CPU per request (median): bare $bare_us us, layers alone $(median "${layered_us_all[@]}") us, catalog $catalog_us us;"
say "    bare/catalog $(percent "$bare_us" "$catalog_us")% (the ratio if each server had the cores to itself)"
say "  layers logging through tracing-subscriber's JSON + tracing-appender: $(median "${subscriber_all[@]}") req/s,"
say "    $(median "${subscriber_ratios[@]}")% of the layers with ours, $(median "${subscriber_us_all[@]}") us of CPU per request"

half=$((catalog_rps / 2))
workers=16
say "catalog read at half that rate ($half req/s) for ${SECONDS_PER_RUN}s: hey"
hey_out=$(hey -z "${SECONDS_PER_RUN}s" -c "$workers" -q $((half / workers)) "$catalog_url")
say "  p99 $(awk '/99% in/ {printf "%.2f ms", $3 * 1000}' <<<"$hey_out") (target < 5 ms), $(awk '/Requests\/sec/ {printf "%d req/s", $2}' <<<"$hey_out")"

# ---------------------------------------------------------------- 2. reservations
admin_token=$(curl -sf http://127.0.0.1:5000/api/auth/login -H 'content-type: application/json' \
    -d "$(jq -n --arg e "$ADMIN_EMAIL" --arg p "$ADMIN_PASSWORD" '{email: $e, password: $p}')" | jq -r .access_token)
auth=(-H "authorization: Bearer $admin_token" -H 'content-type: application/json')
# The bench vendor and product, made once and remembered.
bench_env=$STATE_DIR/bench.env
bench_vendor="" bench_product=""
if [[ -f $bench_env ]]; then
    bench_vendor=$(sed -n 's/^BENCH_VENDOR=//p' "$bench_env")
    bench_product=$(sed -n 's/^BENCH_PRODUCT=//p' "$bench_env")
fi
if [[ -z $bench_product ]] || ! curl -sf "http://127.0.0.1:5004/api/products/$bench_product" >/dev/null; then
    bench_vendor=$(curl -sf http://127.0.0.1:5004/api/vendors "${auth[@]}" \
        -d '{"name": "Bench", "email": "bench@bench.marketplace.local"}' | jq -r .id)
    bench_product=$(curl -sf "http://127.0.0.1:5004/api/vendors/$bench_vendor/products" "${auth[@]}" \
        -d '{"sku": "BENCH-STOCK", "name": "Bench stock", "description": "for scripts/bench.sh",
             "price": {"amount": 100, "currency": "EUR"}, "initial_stock": 100000000,
             "low_stock_threshold": 0}' | jq -r .id)
    [[ $bench_product =~ ^[0-9a-f-]{36}$ ]] || die "could not create the bench product"
    printf 'BENCH_VENDOR=%s\nBENCH_PRODUCT=%s\n' "$bench_vendor" "$bench_product" >"$bench_env"
    say "bench vendor $bench_vendor, product $bench_product (kept in $bench_env)"
fi
set_bench_active() {
    curl -sf -o /dev/null -X PATCH "http://127.0.0.1:5004/api/products/$bench_product" "${auth[@]}" \
        -d "{\"active\": $1}"
}
set_bench_active true
trap 'kill $bare_pid 2>/dev/null || true; set_bench_active false || true' EXIT
until curl -sf "http://127.0.0.1:5003/api/inventory/$bench_product" -H "authorization: Bearer $admin_token" >/dev/null; do
    sleep 0.05
done
service_token=$(SERVICE_KEY=$(<"$STATE_DIR/keys/cart.pem") "$CARGO_TARGET_DIR/$PROFILE/cart" service-token --to inventory)
lua=$(mktemp --suffix=.lua)
trap 'kill $bare_pid 2>/dev/null || true; rm -f "$lua"; set_bench_active false || true' EXIT
cat >"$lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $service_token"
-- Each wrk thread has its own Lua state: seeded alike, they would send the same cart ids.
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("thread_no", threads)
end
function init(args)
  math.randomseed(os.time() * 100 + thread_no)
end
local function hex(n) return string.format("%0" .. n .. "x", math.random(0, 16 ^ n - 1)) end
request = function()
  local cart = hex(8) .. "-" .. hex(4) .. "-4" .. hex(3) .. "-8" .. hex(3) .. "-" .. hex(6) .. hex(6)
  return wrk.format(nil, nil, nil,
    '{"cart_id":"' .. cart .. '","product_id":"$bench_product","quantity":1}')
end
LUA
say "reservations (new cart each, 1 unit): wrk -t2 -c32 -d${SECONDS_PER_RUN}s"
# Redis's share of a reservation (its scripts run on one thread, for every product): the
# ceiling of one Redis on one hot product, for SCALING.md.
redis_pid=$(pgrep -x redis-server | head -n 1 || true)
inventory_pid=$(cat "$STATE_DIR/run/inventory.pid")
redis_before=$( [[ -n $redis_pid ]] && cpu_ticks "$redis_pid" || echo 0)
inventory_before=$(cpu_ticks "$inventory_pid")
res_out=$(wrk -t2 -c32 -d"${SECONDS_PER_RUN}s" --latency -s "$lua" http://127.0.0.1:5003/api/reservations)
say "  $(rps <<<"$res_out") req/s (target >= 2000), p99 $(p99_wrk <<<"$res_out") (target < 20 ms)"
res_n=$(awk '/requests in/ { print $1 }' <<<"$res_out")
per_request_us() { awk -v t="$1" -v hz="$(getconf CLK_TCK)" -v n="$res_n" 'BEGIN { printf "%.0f", t * 1000000 / hz / n }'; }
if [[ -n $redis_pid ]]; then
    redis_us=$(per_request_us $(($(cpu_ticks "$redis_pid") - redis_before)))
    say "  CPU per reservation: inventory $(per_request_us $(($(cpu_ticks "$inventory_pid") - inventory_before))) us," \
        "Redis $redis_us us (one Redis thread: at most $(awk -v u="$redis_us" 'BEGIN { if (u > 0) printf "%d", 1000000 / u; else print "?" }')/s on one hot product)"
fi
grep -q 'Non-2xx' <<<"$res_out" && say "  $(grep 'Non-2xx' <<<"$res_out" | sed 's/^ *//')"
stock=$(curl -sf "http://127.0.0.1:5003/api/inventory/$bench_product" -H "authorization: Bearer $admin_token")
say "  stock after: on_hand $(jq .on_hand <<<"$stock"), reserved $(jq .reserved <<<"$stock"), available $(jq .available <<<"$stock")"

# ---------------------------------------------------------------- 3. event hop
# p99 from the cumulative histogram: the first bucket holding 99% of observations.
hop_p99() {
    curl -sf "http://127.0.0.1:$1/metrics" | awk -v type="$2" '
        index($0, "event_hop_seconds_bucket{") == 1 && index($0, "event_type=\"" type "\"") {
            match($0, /le="[^"]+"/); le = substr($0, RSTART + 4, RLENGTH - 5)
            n++; les[n] = le; counts[n] = $NF
        }
        END {
            if (n == 0) { print "no events yet"; exit }
            total = counts[n]
            for (i = 1; i <= n; i++) if (counts[i] >= 0.99 * total) { printf "p99 <= %s s over %d events", les[i], total; exit }
        }'
}
# DESIGN's target is for an idle fleet: 100 changes of the bench product's name, 10 a
# second, each a vendor.product.updated that inventory and cart handle.
say "event hop (outbox commit to consumer commit), idle: 100 product updates at 10/s"
for i in $(seq 100); do
    curl -sf -o /dev/null -X PATCH "http://127.0.0.1:5004/api/products/$bench_product" "${auth[@]}" \
        -d "{\"name\": \"Bench stock $i\"}" || true
    sleep 0.1
done
sleep 1
say "  vendor.product.updated -> inventory: $(hop_p99 5003 vendor.product.updated) (target < 20 ms)"
say "  vendor.product.updated -> cart:      $(hop_p99 5005 vendor.product.updated)"
say "  inventory.created -> vendor:         $(hop_p99 5004 inventory.created)"

# ---------------------------------------------------------------- 4. memory
say "peak memory (VmHWM) after the runs:"
for svc in customer vendor inventory; do
    pid=$(cat "$STATE_DIR/run/$svc.pid" 2>/dev/null || true)
    [[ -n $pid && -r /proc/$pid/status ]] && say "  $svc: $(awk '/VmHWM/ {printf "%d MB", $2 / 1024}' "/proc/$pid/status") (target < 100 MB)"
done

#!/usr/bin/env bash
# bench.sh — load figures for DESIGN's performance targets, against the fleet that
# `make up` runs (release builds). Prints figures; asserts nothing (they drift on a
# shared machine, so ratios are measured in the same run).
#
#   1. catalog read GET /api/products/{id} against a bare axum endpoint (same run, same
#      load generator), then p99 at half the catalog's rate;
#   2. reservations POST /api/reservations (the inventory half of add-to-cart);
#   3. the event hop (outbox commit to consumer commit), from the services' histograms;
#   4. peak memory of the services under that load.
#
# BENCH_SECONDS (default 10) sets each run's length.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/marketplace/target}
SECONDS_PER_RUN=${BENCH_SECONDS:-10}
BARE_ADDR=127.0.0.1:5999
say() { printf 'bench: %s\n' "$*"; }
die() {
    printf 'bench: ERROR: %s\n' "$*" >&2
    exit 1
}

for tool in wrk hey jq curl; do
    command -v "$tool" >/dev/null || {
        say "installing $tool"
        apt-get install -y -qq "$tool" >/dev/null || die "could not install $tool"
    }
done
[[ -f .local/admin.env ]] || die "no .local/admin.env: run 'make up' first"
set -a
# shellcheck source=/dev/null
. .local/admin.env
set +a
for port in 5000 5003 5004; do
    curl -sf "http://127.0.0.1:$port/health/ready" >/dev/null || die "service on :$port is not ready: run 'make up'"
done

cargo build --release -q -p mp-integration-tests --bin mp-bench
BENCH=$CARGO_TARGET_DIR/release/mp-bench
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

say "catalog read vs bare axum: wrk -t2 -c64 -d${SECONDS_PER_RUN}s each"
bare_out=$(wrk -t2 -c64 -d"${SECONDS_PER_RUN}s" --latency "http://$BARE_ADDR/")
catalog_out=$(wrk -t2 -c64 -d"${SECONDS_PER_RUN}s" --latency "$catalog_url")
bare_rps=$(rps <<<"$bare_out")
catalog_rps=$(rps <<<"$catalog_out")
say "  bare axum:     $bare_rps req/s (p99 $(p99_wrk <<<"$bare_out"))"
say "  catalog read:  $catalog_rps req/s (p99 $(p99_wrk <<<"$catalog_out"))"
say "  ratio:         $(awk -v a="$catalog_rps" -v b="$bare_rps" 'BEGIN {printf "%.0f%%", 100 * a / b}') of bare axum (target >= 60%)"

half=$((catalog_rps / 2))
workers=16
say "catalog read at half that rate ($half req/s) for ${SECONDS_PER_RUN}s: hey"
hey_out=$(hey -z "${SECONDS_PER_RUN}s" -c "$workers" -q $((half / workers)) "$catalog_url")
say "  p99 $(awk '/99% in/ {printf "%.2f ms", $3 * 1000}' <<<"$hey_out") (target < 5 ms), $(awk '/Requests\/sec/ {printf "%d req/s", $2}' <<<"$hey_out")"

# ---------------------------------------------------------------- 2. reservations
admin_token=$(curl -sf http://127.0.0.1:5000/api/auth/login -H 'content-type: application/json' \
    -d "$(jq -n --arg e "$ADMIN_EMAIL" --arg p "$ADMIN_PASSWORD" '{email: $e, password: $p}')" | jq -r .access_token)
vendor_id=$(curl -sf "$catalog_url" | jq -r .vendor_id)
bench_product=$(curl -sf "http://127.0.0.1:5004/api/vendors/$vendor_id/products" -H "authorization: Bearer $admin_token" \
    -H 'content-type: application/json' -d "$(jq -n --arg sku "BENCH-$(date +%s%N)" \
        '{sku: $sku, name: "Bench stock", description: "for scripts/bench.sh", price: {amount: 100, currency: "EUR"},
          initial_stock: 100000000, low_stock_threshold: 0}')" | jq -r .id)
until curl -sf "http://127.0.0.1:5003/api/inventory/$bench_product" -H "authorization: Bearer $admin_token" >/dev/null; do
    sleep 0.05
done
service_token=$(JWT_SECRET=$JWT_SECRET "$BENCH" service-token cart)
lua=$(mktemp --suffix=.lua)
trap 'kill $bare_pid 2>/dev/null || true; rm -f "$lua"' EXIT
cat >"$lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $service_token"
math.randomseed(os.time())
local function hex(n) return string.format("%0" .. n .. "x", math.random(0, 16 ^ n - 1)) end
request = function()
  local cart = hex(8) .. "-" .. hex(4) .. "-4" .. hex(3) .. "-8" .. hex(3) .. "-" .. hex(6) .. hex(6)
  return wrk.format(nil, nil, nil,
    '{"cart_id":"' .. cart .. '","product_id":"$bench_product","quantity":1}')
end
LUA
say "reservations (new cart each, 1 unit): wrk -t2 -c32 -d${SECONDS_PER_RUN}s"
res_out=$(wrk -t2 -c32 -d"${SECONDS_PER_RUN}s" --latency -s "$lua" http://127.0.0.1:5003/api/reservations)
say "  $(rps <<<"$res_out") req/s (target >= 2000), p99 $(p99_wrk <<<"$res_out") (target < 20 ms)"
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
say "event hop (outbox commit to consumer commit):"
say "  vendor.product.created -> inventory: $(hop_p99 5003 vendor.product.created)"
say "  inventory.created -> vendor:        $(hop_p99 5004 inventory.created)"

# ---------------------------------------------------------------- 4. memory
say "peak memory (VmHWM) after the runs:"
for svc in customer vendor inventory; do
    pid=$(cat ".local/run/$svc.pid" 2>/dev/null || true)
    [[ -n $pid && -r /proc/$pid/status ]] && say "  $svc: $(awk '/VmHWM/ {printf "%d MB", $2 / 1024}' "/proc/$pid/status") (target < 100 MB)"
done

#!/usr/bin/env bash
# checkout-traffic.sh — a little real traffic through the running fleet so
# that the labelled metrics exist before the live scrape: a new customer logs
# in, fills a cart from the demo catalog and checks out twice, once paid
# (tok_visa, waits for `confirmed`) and once declined (tok_declined, waits for
# `payment_failed`). Uses the public API only, as a client would.
set -euo pipefail

CUSTOMER=${CUSTOMER_URL:-http://127.0.0.1:5000}
ORDER=${ORDER_URL:-http://127.0.0.1:5001}
VENDOR=${VENDOR_URL:-http://127.0.0.1:5004}
CART=${CART_URL:-http://127.0.0.1:5005}
WAIT=${TRAFFIC_WAIT_SECS:-60}

die() { printf 'traffic: FAIL: %s\n' "$*" >&2; exit 1; }

# call METHOD URL [JSON] [extra curl args...] -> body on stdout; fails on non-2xx
call() {
    local method=$1 url=$2 body=${3:-} out status
    shift 3 || shift $#
    out=$(curl -sS --max-time 15 -X "$method" -w '\n%{http_code}' -H 'Content-Type: application/json' \
        ${TOKEN:+-H "Authorization: Bearer $TOKEN"} ${body:+--data "$body"} "$@" "$url") || die "$method $url: no answer"
    status=${out##*$'\n'}
    out=${out%$'\n'*}
    [[ $status == 2* ]] || die "$method $url -> $status: $out"
    printf '%s' "$out"
}

email="deploy-check-$(date +%s)-$RANDOM@example.org"
password="deploy check $RANDOM$RANDOM"
TOKEN=
call POST "$CUSTOMER/api/customers" "$(jq -nc --arg e "$email" --arg p "$password" '{email: $e, password: $p, name: "Deploy Check"}')" >/dev/null
TOKEN=$(call POST "$CUSTOMER/api/auth/login" "$(jq -nc --arg e "$email" --arg p "$password" '{email: $e, password: $p}')" | jq -r .access_token)
[[ -n $TOKEN && $TOKEN != null ]] || die "login gave no token"

mapfile -t products < <(call GET "$VENDOR/api/products?limit=50" "" | jq -r '.items[] | select(.active != false) | .id')
((${#products[@]} > 0)) || die "the catalog is empty (make up seeds a demo catalog)"

checkout() { # TOKEN_NAME EXPECTED_STATUS
    local payment=$1 expected=$2 cart order status deadline added=0 p
    cart=$(call POST "$CART/api/carts" "" | jq -r .id)
    for p in "${products[@]}"; do
        if call POST "$CART/api/carts/$cart/items" "{\"product_id\": \"$p\", \"quantity\": 1}" >/dev/null 2>&1; then
            added=1
            break
        fi
    done
    ((added)) || die "no product of the catalog could be added to a cart (out of stock?)"
    order=$(call POST "$CART/api/carts/$cart/checkout" \
        "{\"payment_token\": \"$payment\", \"shipping_address\": {\"name\": \"Deploy Check\", \"line1\": \"1 Main St\", \"city\": \"Berlin\", \"postal_code\": \"10115\", \"country\": \"DE\"}}" \
        -H "Idempotency-Key: $(cat /proc/sys/kernel/random/uuid)" | jq -r .order_id)
    deadline=$((SECONDS + WAIT))
    while :; do
        status=$(call GET "$ORDER/api/orders/$order" "" 2>/dev/null | jq -r .status) || status=pending
        [[ $status == "$expected" ]] && break
        ((SECONDS < deadline)) || die "order $order is $status after ${WAIT}s, expected $expected"
        sleep 0.5
    done
    echo "traffic: order $order ($payment) reached $expected"
}

checkout tok_visa confirmed
checkout tok_declined payment_failed

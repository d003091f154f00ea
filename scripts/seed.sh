#!/usr/bin/env bash
# seed.sh — put a small demo catalog into a running fleet (run by `make up`).
#
# Logs in as the administrator from .local/admin.env (ADMIN_EMAIL/ADMIN_PASSWORD in the
# environment), creates the vendor "Demo Goods" and a few products through the public
# API, exactly as a user would. Idempotent: a catalog that already has the demo vendor's
# products is left alone.
set -euo pipefail

CUSTOMER_URL=${CUSTOMER_URL:-http://127.0.0.1:5000}
VENDOR_URL=${VENDOR_URL:-http://127.0.0.1:5004}
: "${ADMIN_EMAIL:?ADMIN_EMAIL is not set (make up reads it from .local/admin.env)}"
: "${ADMIN_PASSWORD:?ADMIN_PASSWORD is not set}"

say() { printf '%s\n' "$*"; }
die() {
    printf 'seed: ERROR: %s\n' "$*" >&2
    exit 1
}

# Installs go through infra.sh's one helper (apt-get update once, non-interactive, sudo -n).
# shellcheck source-path=SCRIPTDIR source=infra.sh
. "$(dirname "${BASH_SOURCE[0]}")/infra.sh"
infra_need_cmd jq jq
infra_need_cmd curl curl

# post URL TOKEN JSON -> prints the body; fails on a non-2xx status with the problem.
post() {
    local url=$1 token=$2 body=$3 out status
    out=$(mktemp)
    status=$(curl -sS -o "$out" -w '%{http_code}' -X POST "$url" \
        -H 'content-type: application/json' ${token:+-H "authorization: Bearer $token"} -d "$body")
    if [[ $status != 2* ]]; then
        cat "$out" >&2
        rm -f "$out"
        die "POST $url answered $status"
    fi
    cat "$out"
    rm -f "$out"
}

token=$(post "$CUSTOMER_URL/api/auth/login" "" \
    "$(jq -n --arg e "$ADMIN_EMAIL" --arg p "$ADMIN_PASSWORD" '{email: $e, password: $p}')" | jq -r .access_token)

existing=$(curl -sS "$VENDOR_URL/api/products?q=DEMO-&limit=1" | jq '.items | length')
if [[ $existing -gt 0 ]]; then
    say "catalog already seeded"
    exit 0
fi

vendor=$(post "$VENDOR_URL/api/vendors" "$token" \
    '{"name": "Demo Goods", "email": "shop@demo.marketplace.local", "phone": "+4930123456"}' | jq -r .id)
say "vendor Demo Goods: $vendor"

while IFS='|' read -r sku name description amount stock threshold; do
    body=$(jq -n --arg sku "$sku" --arg name "$name" --arg d "$description" \
        --argjson amount "$amount" --argjson stock "$stock" --argjson threshold "$threshold" \
        '{sku: $sku, name: $name, description: $d, price: {amount: $amount, currency: "EUR"},
          initial_stock: $stock, low_stock_threshold: $threshold}')
    id=$(post "$VENDOR_URL/api/vendors/$vendor/products" "$token" "$body" | jq -r .id)
    say "product $sku $name: $id"
done <<'PRODUCTS'
DEMO-MUG|Enamel mug|A camp mug that survives the campfire.|1299|120|10
DEMO-TEE|Organic tee|Heavy cotton T-shirt, unisex cut.|2499|80|8
DEMO-CAP|Canvas cap|Six-panel cap with a brass buckle.|1999|40|5
DEMO-BAG|Tote bag|Sturdy canvas tote for the market.|1499|200|20
DEMO-PEN|Fountain pen|Steel nib, refillable converter.|3499|15|5
PRODUCTS
say "demo catalog ready: $VENDOR_URL/api/products"

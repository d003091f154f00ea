#!/usr/bin/env bash
# rotate-user-key.sh — rotate the user signing key (the customer service's
# JWT_SIGNING_KEY) of a Kubernetes overlay without refusing a single token.
#
#   scripts/rotate-user-key.sh [--dry-run] [--namespace NS] [--token-ttl SECS] STEP OVERLAY_DIR
#
# Kong takes its copy of the user keys once, when it starts (its init container
# renders the customer service's JWKS into its config: deploy/kong/kong-jwt-key.sh).
# A token signed with a key Kong has not seen is refused at the edge, so the new
# key must reach Kong before anything signs with it. Three steps, run in order:
#
#   publish  make the new key (secrets/keys/user.next.pem) and add its public half
#            to TRUSTED_KEYS (secrets/keys/trusted.jwks.json); apply the overlay and
#            wait for the services (the customer service now publishes both keys in
#            its JWKS, still signing with the old one); restart Kong, wait, and check
#            that every Kong pod rendered the new key id.
#   switch   check Kong has the new key, then make it the signing key (user.pem; the
#            old private key is kept as user.previous.pem, its public half stays in
#            TRUSTED_KEYS so tokens it signed stay valid); apply, wait. Prints when
#            the old key may be retired: after the longest access token it signed has
#            expired (--token-ttl, default 900 = ACCESS_TOKEN_TTL_SECS, plus 60 s).
#   retire   (not before that time) drop the old public key from TRUSTED_KEYS and
#            user.previous.pem; apply, wait; restart Kong and check the old key id is
#            gone from every Kong pod.
#
# Helpers: `status OVERLAY_DIR` shows the keys; `jwks OVERLAY_DIR` prints the JWKS the
# customer service publishes with the overlay's keys (its signing key and the user
# keys of TRUSTED_KEYS); `kid PEM_FILE` prints a private key's key id.
#
# The keys are the overlay's generated Secret material (scripts/deploy-secrets.sh
# k8s OVERLAY_DIR; the secretGenerator makes marketplace-keys from them, and a
# changed Secret rolls the Deployments). --dry-run changes no file and runs no
# kubectl: it prints what the step would change and the commands it would run.
# KUBECTL (default "kubectl") may carry flags, e.g. KUBECTL="kubectl --context prod".
# Needs bash, python3, openssl. deploy/README.md "Key rotation" has the same
# order by hand, for Secrets you manage yourself and for docker compose.
set -euo pipefail

# The services (deploy/services.txt, generated from the event catalog).
mapfile -t SERVICES < <(awk '!/^#/ && NF {print $1}' "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/deploy/services.txt")
DRY_RUN=0
NS=marketplace
TOKEN_TTL=900
MARGIN=60
read -r -a KUBECTL_CMD <<<"${KUBECTL:-kubectl}"

say() { printf 'rotate-user-key: %s\n' "$*"; }
die() { printf 'rotate-user-key: ERROR: %s\n' "$*" >&2; exit 1; }
usage() { sed -n '2,38p' "${BASH_SOURCE[0]}" >&2; exit 2; }

# kid PEM: the key id the services give a user key (crates/common/src/keys.rs):
# user-<first 6 bytes of SHA-256(x || y) in hex>, x and y base64url unpadded.
jwk_of() { # PEM -> the public JWK (JSON)
    openssl pkey -in "$1" -pubout -outform DER 2>/dev/null | python3 -c '
import base64, hashlib, json, sys
der = sys.stdin.buffer.read()
if len(der) != 91:
    sys.exit("rotate-user-key: not a P-256 key")
u = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
x, y = u(der[-64:-32]), u(der[-32:])
kid = "user-" + hashlib.sha256((x + y).encode()).digest()[:6].hex()
print(json.dumps({"kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": kid, "use": "sig", "alg": "ES256"}))'
}
kid_of() { jwk_of "$1" | python3 -c 'import json, sys; print(json.load(sys.stdin)["kid"])'; }

# jwks_edit FILE OP [JWK|KID]: add a JWK / drop every user key but KID; prints the result.
jwks_edit() {
    python3 - "$@" <<'PY'
import json, sys
path, op, arg = sys.argv[1], sys.argv[2], sys.argv[3]
doc = json.load(open(path))
keys = doc["keys"]
if op == "add":
    jwk = json.loads(arg)
    if jwk["kid"] not in {k["kid"] for k in keys}:
        keys.append(jwk)
elif op == "keep-user":
    keys = [k for k in keys if not k["kid"].startswith("user-") or k["kid"] == arg]
doc["keys"] = keys
print(json.dumps(doc, indent=2))
PY
}
user_kids() { python3 -c 'import json, sys; print(" ".join(k["kid"] for k in json.load(open(sys.argv[1]))["keys"] if k["kid"].startswith("user-")))' "$1"; }

# write FILE CONTENT-FILE: replace FILE (or, dry run, show the change).
write() {
    if ((DRY_RUN)); then
        say "would change $1:"
        diff -u "$1" "$2" | sed 's/^/    /' || true
    else
        cat "$2" >"$1"
    fi
}

kube() {
    if ((DRY_RUN)); then
        printf '    would run: %s\n' "${KUBECTL_CMD[*]} $*"
    else
        say "${KUBECTL_CMD[*]} $*"
        "${KUBECTL_CMD[@]}" "$@"
    fi
}

apply_and_wait() { # apply the overlay; wait until every service runs with the new Secret
    kube apply -k "$OVERLAY"
    local s
    for s in "${SERVICES[@]}"; do
        kube -n "$NS" rollout status "deployment/$s" --timeout=10m
    done
}

# kong_has KID [ABSENT_KID]: every live Kong pod's render step wrote KID (and not
# ABSENT_KID). Retries for a while: pods of the old ReplicaSet may still be going.
kong_has() {
    local want=$1 gone=${2:-} _ pods pod log ok
    if ((DRY_RUN)); then
        printf '    would check: every Kong pod'"'"'s render-config log names %s%s\n' "$want" "${gone:+ and not $gone}"
        return 0
    fi
    for _ in $(seq 1 30); do
        pods=$("${KUBECTL_CMD[@]}" -n "$NS" get pods -l app.kubernetes.io/name=kong -o json | python3 -c '
import json, sys
print(" ".join(p["metadata"]["name"] for p in json.load(sys.stdin)["items"] if not p["metadata"].get("deletionTimestamp")))')
        ok=1
        [[ -n $pods ]] || ok=0
        for pod in $pods; do
            log=$("${KUBECTL_CMD[@]}" -n "$NS" logs "$pod" -c render-config 2>/dev/null | grep 'key(s) written' | tail -1) || true
            [[ $log == *"$want"* ]] || ok=0
            [[ -z $gone || $log != *"$gone"* ]] || ok=0
        done
        if ((ok)); then
            say "Kong pods ($pods) have $want${gone:+, not $gone}"
            return 0
        fi
        sleep 2
    done
    die "Kong's pods did not render $want${gone:+ without $gone}; see: ${KUBECTL_CMD[*]} -n $NS logs -l app.kubernetes.io/name=kong -c render-config"
}

restart_kong() {
    kube -n "$NS" rollout restart deployment/kong
    kube -n "$NS" rollout status deployment/kong --timeout=10m
}

while (($#)); do
    case $1 in
    --dry-run) DRY_RUN=1; shift ;;
    --namespace | -n) NS=$2; shift 2 ;;
    --token-ttl) TOKEN_TTL=$2; MARGIN=0; shift 2 ;;
    -h | --help) usage ;;
    -*) die "unknown option $1" ;;
    *) break ;;
    esac
done
STEP=${1:-}
[[ -n $STEP ]] || usage
if [[ $STEP == kid ]]; then
    [[ -r ${2:-} ]] || die "usage: rotate-user-key.sh kid PEM_FILE"
    kid_of "$2"
    exit 0
fi
OVERLAY=${2:-}
[[ -f $OVERLAY/kustomization.yaml ]] || die "${OVERLAY:-OVERLAY_DIR}: no kustomize overlay"
KEYS=$OVERLAY/secrets/keys
[[ -s $KEYS/user.pem && -s $KEYS/trusted.jwks.json ]] ||
    die "$KEYS has no user.pem and trusted.jwks.json (scripts/deploy-secrets.sh k8s $OVERLAY)"
grep -q 'secrets/keys/user.pem' "$OVERLAY/kustomization.yaml" ||
    die "$OVERLAY does not generate marketplace-keys from secrets/keys; rotate your own Secret by hand (deploy/README.md)"
STATE=$KEYS/rotation.json
TMPF=$(mktemp)
trap 'rm -f "$TMPF"' EXIT

current=$(kid_of "$KEYS/user.pem")
case $STEP in
jwks)
    # What the customer service serves: its signing key first, then the other
    # user keys it trusts (crates/common/src/auth/tokens.rs, user_jwks).
    python3 - "$(jwk_of "$KEYS/user.pem")" "$KEYS/trusted.jwks.json" <<'PY'
import json, sys
own = json.loads(sys.argv[1])
rest = sorted((k for k in json.load(open(sys.argv[2]))["keys"] if k["kid"].startswith("user-") and k["kid"] != own["kid"]),
              key=lambda k: k["kid"])
print(json.dumps({"keys": [own] + rest}, indent=2))
PY
    ;;
status)
    say "signing key (user.pem): $current"
    say "trusted user keys:      $(user_kids "$KEYS/trusted.jwks.json")"
    [[ -s $KEYS/user.next.pem ]] && say "published, not yet signing (user.next.pem): $(kid_of "$KEYS/user.next.pem")"
    [[ -s $STATE ]] && say "last switch: $(cat "$STATE")"
    ;;
publish)
    if [[ -s $KEYS/user.next.pem ]]; then
        next=$(kid_of "$KEYS/user.next.pem")
        say "user.next.pem ($next) exists already: publishing it again"
    elif ((DRY_RUN)); then
        next="user-<new>"
        say "would make a new P-256 key: $KEYS/user.next.pem"
    else
        (umask 077 && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$KEYS/user.next.pem" 2>/dev/null) ||
            die "openssl could not make a key"
        next=$(kid_of "$KEYS/user.next.pem")
        say "new key $next in $KEYS/user.next.pem"
    fi
    if ((DRY_RUN)) && [[ ! -s $KEYS/user.next.pem ]]; then
        say "would add the public half of $next to $KEYS/trusted.jwks.json"
    else
        jwks_edit "$KEYS/trusted.jwks.json" add "$(jwk_of "$KEYS/user.next.pem")" >"$TMPF"
        write "$KEYS/trusted.jwks.json" "$TMPF"
    fi
    say "1/2 apply: the customer service publishes $current (signing) and $next; the services trust both"
    apply_and_wait
    say "2/2 restart Kong, so that it renders both keys"
    restart_kong
    kong_has "$next"
    say "published. Next: scripts/rotate-user-key.sh switch $OVERLAY"
    ;;
switch)
    [[ -s $KEYS/user.next.pem ]] || die "no user.next.pem: run the publish step first"
    next=$(kid_of "$KEYS/user.next.pem")
    [[ " $(user_kids "$KEYS/trusted.jwks.json") " == *" $next "* ]] || die "$next is not in TRUSTED_KEYS: run publish first"
    say "checking that Kong knows $next before anything signs with it"
    kong_has "$next"
    if ((DRY_RUN)); then
        say "would move user.pem ($current) to user.previous.pem and user.next.pem ($next) to user.pem"
    else
        cp -p "$KEYS/user.pem" "$KEYS/user.previous.pem"
        mv "$KEYS/user.next.pem" "$KEYS/user.pem"
        printf '{"switched_at": %s, "previous": "%s", "current": "%s"}\n' "$(date +%s)" "$current" "$next" >"$STATE"
    fi
    say "apply: the customer service signs with $next; $current stays trusted for its tokens"
    apply_and_wait
    say "switched. Retire $current after $((TOKEN_TTL + MARGIN)) s (the longest access token's life), not before" \
        "$(date -d "@$(($(date +%s) + TOKEN_TTL + MARGIN))" '+%F %T' 2>/dev/null || true):"
    say "    scripts/rotate-user-key.sh retire $OVERLAY"
    ;;
retire)
    [[ ! -s $KEYS/user.next.pem ]] || die "user.next.pem exists: a key is published but not switched to; run switch first"
    old=$(user_kids "$KEYS/trusted.jwks.json" | tr ' ' '\n' | grep -vx "$current" | paste -sd' ' || true)
    [[ -n $old ]] || { say "TRUSTED_KEYS holds no user key but $current: nothing to retire"; exit 0; }
    if [[ -s $STATE ]]; then
        switched=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["switched_at"])' "$STATE")
        wait_left=$((switched + TOKEN_TTL + MARGIN - $(date +%s)))
        ((wait_left <= 0)) || die "tokens signed with $old may live $wait_left s more; retire after that (or --token-ttl)"
    fi
    say "retiring $old (the signing key is $current)"
    jwks_edit "$KEYS/trusted.jwks.json" keep-user "$current" >"$TMPF"
    write "$KEYS/trusted.jwks.json" "$TMPF"
    if ((DRY_RUN)); then
        say "would delete $KEYS/user.previous.pem"
    else
        rm -f "$KEYS/user.previous.pem" "$STATE"
    fi
    say "1/2 apply: nobody trusts $old any more"
    apply_and_wait
    say "2/2 restart Kong, so that it drops $old"
    restart_kong
    for k in $old; do kong_has "$current" "$k"; done
    say "retired. The user key is $current alone."
    ;;
*) usage ;;
esac

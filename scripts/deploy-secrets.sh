#!/usr/bin/env bash
# deploy-secrets.sh — generate the secrets a deployment needs, outside git.
#
#   scripts/deploy-secrets.sh compose [DIR]   default DIR: .local/deploy-secrets
#   scripts/deploy-secrets.sh k8s OVERLAY_DIR e.g. deploy/k8s/overlays/prod
#
# compose: DIR/secrets.env (passwords, for `docker compose --env-file`) and
#          DIR/keys/ (the signing keys, mounted as compose secrets).
# k8s:     OVERLAY_DIR/secrets/secrets.env and OVERLAY_DIR/secrets/keys/, which
#          the overlay's secretGenerator turns into the Secrets `marketplace-secrets`
#          and `marketplace-keys` (deploy/k8s/.gitignore keeps them out of git);
#          for an overlay whose Kong terminates TLS (prod: secrets/tls/), a
#          self-signed placeholder certificate OVERLAY_DIR/secrets/tls/tls.{crt,key}
#          for MP_TLS_HOST (default shop.example-cloud.com), the Secret `kong-tls`,
#          so the first apply starts; replace it with your certificate.
#          In production you may instead create those two Secrets yourself
#          (sealed-secrets, an external secret store); see deploy/README.md.
#
# Passwords (32 letters and digits, safe inside URLs): POSTGRES_PASSWORD (the
# administrator), POSTGRES_<SERVICE>_PASSWORD (each service's role mp_<service>),
# REDIS_<SERVICE>_PASSWORD (its Redis user mp-<service>), REDIS_KONG_PASSWORD
# (Kong's Redis user kong), RabbitMQ's, the admin's, Grafana's. A password added
# since a file was written is appended to it when missing; none is ever printed.
#
# Nothing is overwritten: existing files are kept, so running it again is safe
# and never rotates a key by accident. Keys (ES256, P-256, PKCS#8 PEM):
#   keys/user.pem          JWT_SIGNING_KEY of the customer service (signs user tokens)
#   keys/<service>.pem     SERVICE_KEY of each service (signs its service tokens)
#   keys/trusted.jwks.json TRUSTED_KEYS of every service (all public halves)
# They come from the services' own `<service> keys --out DIR` when a binary is
# found (MP_BIN, else the release or debug build), else from openssl with the
# same key ids (user-<thumbprint>, svc-<service>-<thumbprint>).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# The services (deploy/services.txt, generated from the event catalog).
mapfile -t SERVICES < <(awk '!/^#/ && NF {print $1}' "$ROOT/deploy/services.txt")

say() { printf 'deploy-secrets: %s\n' "$*" >&2; }
die() { printf 'deploy-secrets: ERROR: %s\n' "$*" >&2; exit 1; }

random_alnum() { # N random letters and digits: safe in URLs, env files and YAML
    local s=""
    while ((${#s} < $1)); do s+=$(head -c 96 /dev/urandom | base64 | tr -dc 'A-Za-z0-9'); done
    printf '%s' "${s:0:$1}"
}

find_bin() {
    local target=${CARGO_TARGET_DIR:-$HOME/.cache/marketplace/target} b
    for b in "${MP_BIN:-}" "$target/release/customer" "$target/debug/customer"; do
        [[ -n $b && -x $b ]] && "$b" keys --help >/dev/null 2>&1 && { printf '%s' "$b"; return 0; }
    done
    return 1
}

# openssl fallback, mirroring crates/common/src/keys.rs: kid = <prefix>-<first 6
# bytes of SHA-256(x || y), hex>, x and y base64url without padding.
openssl_keys() {
    local dir=$1 name
    command -v openssl >/dev/null || die "neither a service binary nor openssl found"
    for name in user "${SERVICES[@]}"; do
        [[ -s $dir/$name.pem ]] || (umask 077 && openssl genpkey -algorithm EC \
            -pkeyopt ec_paramgen_curve:P-256 -out "$dir/$name.pem" 2>/dev/null)
    done
    [[ -s $dir/trusted.jwks.json ]] && return 0
    python3 - "$dir" "${SERVICES[@]}" >"$dir/trusted.jwks.json" <<'PY'
import base64, hashlib, json, subprocess, sys
d, services = sys.argv[1], sys.argv[2:]
u = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
keys = []
for name in ["user"] + services:
    der = subprocess.run(["openssl", "pkey", "-in", f"{d}/{name}.pem", "-pubout", "-outform", "DER"],
                         check=True, capture_output=True).stdout
    x, y = u(der[-64:-32]), u(der[-32:])
    prefix = "user" if name == "user" else f"svc-{name}"
    kid = f"{prefix}-{hashlib.sha256((x + y).encode()).digest()[:6].hex()}"
    keys.append({"kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": kid, "use": "sig", "alg": "ES256"})
print(json.dumps({"keys": keys}, indent=2))
PY
}

make_keys() {
    local dir=$1 bin
    mkdir -p "$dir" && chmod 700 "$dir"
    if [[ -s $dir/trusted.jwks.json && -s $dir/user.pem ]]; then
        say "keys already in $dir (kept)"
        return 0
    fi
    if bin=$(find_bin); then
        "$bin" keys --out "$dir" >/dev/null
        say "keys written to $dir by '$(basename "$bin") keys'"
    else
        openssl_keys "$dir"
        say "keys written to $dir (openssl)"
    fi
    chmod 600 "$dir"/*
}

make_tls() { # DIR HOST: a self-signed placeholder for Kong's HTTPS listener
    local dir=$1 host=$2
    if [[ -s $dir/tls.crt && -s $dir/tls.key ]]; then
        say "TLS certificate in $dir (kept)"
        return 0
    fi
    command -v openssl >/dev/null || die "openssl is needed for the placeholder TLS certificate"
    mkdir -p "$dir" && chmod 700 "$dir"
    (umask 077 && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 90 \
        -subj "/CN=$host" -addext "subjectAltName=DNS:$host" \
        -keyout "$dir/tls.key" -out "$dir/tls.crt" 2>/dev/null) || die "openssl could not make a certificate"
    say "SELF-SIGNED placeholder certificate for $host in $dir: replace tls.crt and tls.key with your own (deploy/README.md)"
}

# Settings added since an env file was first written: appended to an existing
# file when missing (nothing in it is changed).
LATER_KEYS=(GRAFANA_DB_PASSWORD)
for s in "${SERVICES[@]}"; do LATER_KEYS+=("POSTGRES_${s^^}_PASSWORD"); done
for s in "${SERVICES[@]}" kong; do LATER_KEYS+=("REDIS_${s^^}_PASSWORD"); done

make_env() {
    local file=$1 tmp s key
    if [[ -s $file ]]; then
        for key in "${LATER_KEYS[@]}"; do
            if ! grep -q "^$key=" "$file"; then
                [[ -z $(tail -c1 "$file") ]] || echo >>"$file"   # end the last line first
                echo "$key=$(random_alnum 32)" >>"$file"
                say "$key added to $file"   # its name only, never the value
            fi
        done
        say "$file exists (kept)"
        return 0
    fi
    tmp=$(umask 077 && mktemp "$file.XXXXXX")
    {
        echo "# Generated by scripts/deploy-secrets.sh on $(date -u +%Y-%m-%dT%H:%M:%SZ). Keep out of git."
        echo "# The PostgreSQL administrator (compose, dev: the superuser; it runs the deploy steps only):"
        echo "POSTGRES_PASSWORD=$(random_alnum 32)"
        echo "# Each service's own PostgreSQL role mp_<service> and Redis user mp-<service>, and Kong's Redis user kong:"
        for s in "${SERVICES[@]}"; do echo "POSTGRES_${s^^}_PASSWORD=$(random_alnum 32)"; done
        for s in "${SERVICES[@]}" kong; do echo "REDIS_${s^^}_PASSWORD=$(random_alnum 32)"; done
        echo "RABBITMQ_ADMIN_PASSWORD=$(random_alnum 32)"
        for s in "${SERVICES[@]}"; do echo "RABBITMQ_${s^^}_PASSWORD=$(random_alnum 32)"; done
        echo "ADMIN_EMAIL=admin@marketplace.local"
        echo "ADMIN_PASSWORD=$(random_alnum 24)"
        echo "GRAFANA_ADMIN_PASSWORD=$(random_alnum 24)"
        echo "# mp_grafana, the read-only role of Grafana's PostgreSQL data source:"
        echo "GRAFANA_DB_PASSWORD=$(random_alnum 32)"
        echo "# Real providers (empty: the test gateway / the file SMS sink):"
        echo "STRIPE_SECRET_KEY="
        echo "SMS_AUTH_TOKEN="
    } >"$tmp"
    mv "$tmp" "$file"
    say "passwords written to $file"
}

case ${1:-} in
compose)
    dir=${2:-$ROOT/.local/deploy-secrets}
    mkdir -p "$dir" && chmod 700 "$dir"
    make_env "$dir/secrets.env"
    make_keys "$dir/keys"
    say "use: MP_SECRETS_DIR=$dir docker compose --env-file $dir/secrets.env up -d"
    ;;
k8s)
    overlay=${2:?usage: deploy-secrets.sh k8s OVERLAY_DIR}
    [[ -f $overlay/kustomization.yaml ]] || die "$overlay is no kustomize overlay"
    mkdir -p "$overlay/secrets" && chmod 700 "$overlay/secrets"
    make_env "$overlay/secrets/secrets.env"
    make_keys "$overlay/secrets/keys"
    if grep -q 'secrets/tls/' "$overlay/kustomization.yaml"; then
        make_tls "$overlay/secrets/tls" "${MP_TLS_HOST:-shop.example-cloud.com}"
    fi
    say "now: kubectl apply -k $overlay"
    ;;
*)
    sed -n '2,32p' "${BASH_SOURCE[0]}" >&2
    exit 2
    ;;
esac

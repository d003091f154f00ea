#!/usr/bin/env bash
# test-deploy.sh — validates the edge and operations files (issue 9); `make test`
# runs it. Offline checks first, then a live check against the running fleet:
#
#   1. tools (scripts/install-deploy-tools.sh) and yamllint
#   2. generated files are up to date (k8s services, Grafana dashboards, and
#      deploy/redis/acl.json against `<service> redis-user --json` when the
#      service binaries are built); the Redis ACL file rendered from acl.json,
#      loaded into a throw-away redis-server when one is installed: the default
#      user is off and each user reaches only its keys
#   3. Prometheus: promtool check config / check rules / test rules; every
#      required alert exists and every alert has a unit test
#      (deploy/tests/check_rules.py); every dashboard query parses
#   4. docker-compose config (with and without the logging profile; Kong trusts
#      no proxy); Kong's config as rendered for dev and for the prod edge, its
#      Redis user kong (deploy/tests/check_kong_render.py)
#   5. Kubernetes: every kustomization reads files inside its own root only;
#      each overlay and deploy/k8s/monitoring rendered with plain
#      `kubectl kustomize` (no load-restrictor flag), validated strictly against
#      the schemas (kubernetes-validate --strict) and against our own rules
#      (deploy/tests/check_k8s.py: with every service's own PostgreSQL role and
#      Redis user); files that must agree (Grafana and its read-only role,
#      Fluent Bit, image tags, compose's per-service credentials:
#      deploy/tests/check_files.py); the user key rotation
#      (scripts/rotate-user-key.sh) with a stand-in kubectl
#   6. live: the fleet up (`make up` unless it already runs; stopped again if we
#      started it), the Kong routes against the six /openapi.json, the RabbitMQ
#      permissions against `<service> rabbitmq-user`, the Redis users against
#      `<service> redis-user`, deploy/postgres/service-roles.sql in a throw-away
#      database (roles made, an older deployment's schemas handed over, each
#      service migrated as its role, mp_grafana's grant), a checkout through the
#      services, every metric of the rules and dashboards in the live scrape,
#      and a real Prometheus scraping the fleet: every target up, every rule
#      loaded, every dashboard query accepted. Then the contract tests
#      (scripts/contracts.sh): Schemathesis against every service.
#
# DEPLOY_TEST_LIVE=0 skips step 6 (offline only).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/marketplace/target}
case $CARGO_TARGET_DIR in /*) ;; *) CARGO_TARGET_DIR=$ROOT/$CARGO_TARGET_DIR ;; esac

# name:port (deploy/services.txt, generated from the event catalog).
mapfile -t SERVICES < <(awk '!/^#/ && NF {print $1 ":" $2}' "$ROOT/deploy/services.txt")
TMP=$(mktemp -d "${TMPDIR:-/tmp}/test-deploy.XXXXXX")
PROM_PID=
STARTED_FLEET=0

cleanup() {
    local rc=$?
    if [[ -n $PROM_PID ]]; then
        kill "$PROM_PID" 2>/dev/null || true
        wait "$PROM_PID" 2>/dev/null || true
    fi
    if [[ -s $TMP/redis.pid ]]; then   # the throw-away redis-server of the ACL check
        kill "$(cat "$TMP/redis.pid")" 2>/dev/null || true
    fi
    if ((STARTED_FLEET)); then
        echo "test-deploy: stopping the fleet this test started"
        bash scripts/fleet.sh down >/dev/null 2>&1 || true
    fi
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT

step() { printf '\n== test-deploy: %s\n' "$*"; }
die() {
    printf 'test-deploy: FAIL: %s\n' "$*" >&2
    exit 1
}

# ------------------------------------------------------------------ 1. tools
step "tools"
bash scripts/install-deploy-tools.sh
PY=${PYTHON:-python3}

step "yamllint"
yamllint -f parsable -s -c deploy/tests/yamllint.yml deploy docker-compose.yml
echo "yamllint: ok"

# ------------------------------------------------------- 2. generated files
step "generated files are up to date"
"$PY" deploy/k8s/generate.py "$TMP/k8s-services"
diff -r "$TMP/k8s-services" deploy/k8s/base/services ||
    die "deploy/k8s/base/services is stale: run python3 deploy/k8s/generate.py"
"$PY" deploy/grafana/generate.py "$TMP/dashboards"
diff -r "$TMP/dashboards" deploy/grafana/dashboards ||
    die "deploy/grafana/dashboards is stale: run python3 deploy/grafana/generate.py"
# deploy/redis/acl.json: what the service binaries say (`redis-user --json`),
# from the newest build (release or debug) whose six binaries all answer it;
# the live step checks the fleet's own build in any case.
acl_bins=
for dir in "$CARGO_TARGET_DIR/release" "$CARGO_TARGET_DIR/debug"; do
    for s in "${SERVICES[@]%%:*}"; do "$dir/$s" redis-user --json >/dev/null 2>&1 || continue 2; done
    [[ -z $acl_bins || $dir/customer -nt $acl_bins/customer ]] && acl_bins=$dir
done
if [[ -n $acl_bins ]]; then
    "$PY" deploy/redis/redis_acl.py check "$acl_bins" deploy/redis/acl.json
else
    echo "redis-acl: no build of the six services answers redis-user: deploy/redis/acl.json is checked in the live step"
fi
echo "generated: ok"

step "Redis users (deploy/redis/acl.json rendered as an ACL file)"
redis_pw=()
for name in "${SERVICES[@]%%:*}" kong; do redis_pw+=("REDIS_${name^^}_PASSWORD=test-$name-pw"); done
env "${redis_pw[@]}" "$PY" deploy/redis/redis_acl.py acl-file deploy/redis/acl.json --out "$TMP/users.acl"
if command -v redis-server >/dev/null; then
    REDIS_TEST_PORT=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    cp "$TMP/users.acl" "$TMP/users.admin.acl"   # a user for this test to stop the server with
    echo "user test-admin on >test-admin-pw ~* &* +@all" >>"$TMP/users.admin.acl"
    redis-server --port "$REDIS_TEST_PORT" --bind 127.0.0.1 --aclfile "$TMP/users.admin.acl" --save "" \
        --appendonly no --dir "$TMP" --daemonize yes --pidfile "$TMP/redis.pid" --logfile "$TMP/redis.log" ||
        die "redis-server refuses the ACL file rendered from deploy/redis/acl.json: $(tail -3 "$TMP/redis.log")"
    "$PY" deploy/tests/check_redis_users.py "$REDIS_TEST_PORT" deploy/redis/acl.json || rc=$?
    redis-cli -p "$REDIS_TEST_PORT" --user test-admin --pass test-admin-pw --no-auth-warning shutdown nosave >/dev/null 2>&1 || true
    rm -f "$TMP/redis.pid"
    ((${rc:-0} == 0)) || die "the Redis users do not behave as acl.json says"
else
    head -1 "$TMP/users.acl" | grep -qx 'user default off' || die "the Redis ACL file does not disable the default user"
    echo "redis-acl: no redis-server here; the ACL file's lines are checked by deploy/tests/check_files.py"
fi

# ------------------------------------------------------------- 3. Prometheus
step "promtool"
promtool check config deploy/prometheus/prometheus.yml
# Debian's promtool is built without Kubernetes service discovery (the official
# image, deploy/k8s/monitoring, has it): check the in-cluster config with each
# kubernetes_sd_configs block swapped for a static target; check_k8s.py checks
# those blocks' fields itself.
"$PY" deploy/tests/prometheus_k8s_static.py deploy/prometheus/prometheus-k8s.yml "$ROOT/deploy/prometheus" >"$TMP/prometheus-k8s.promtool.yml"
promtool check config "$TMP/prometheus-k8s.promtool.yml"
promtool check rules deploy/prometheus/rules/*.yml
promtool test rules deploy/prometheus/tests/*.test.yml
"$PY" deploy/tests/check_rules.py deploy/prometheus/rules/*.yml -- deploy/prometheus/tests/*.test.yml
# Dashboard queries, with Grafana's variables replaced, as recording rules.
"$PY" deploy/grafana/generate.py --exprs >"$TMP/exprs.json"
"$PY" deploy/tests/dashboard_rules.py "$TMP/exprs.json" >"$TMP/dashboard-rules.yml"
promtool check rules "$TMP/dashboard-rules.yml" >/dev/null || {
    promtool check rules "$TMP/dashboard-rules.yml"
    die "a dashboard query does not parse"
}
echo "dashboards: $(jq length "$TMP/exprs.json") queries parse"

# ------------------------------------------------------------- Dockerfile
step "Dockerfile"
"$PY" deploy/tests/check_dockerfile.py

# --------------------------------------------------------- 4. docker-compose
step "docker-compose config"
MP_BIN=/nonexistent bash scripts/deploy-secrets.sh compose "$TMP/compose-secrets" 2>/dev/null
for profile in "" logging; do
    MP_SECRETS_DIR=$TMP/compose-secrets docker-compose --env-file "$TMP/compose-secrets/secrets.env" \
        -f docker-compose.yml ${profile:+--profile "$profile"} config >"$TMP/compose${profile:+-$profile}.yml"
done
"$PY" deploy/tests/check_compose_rendered.py "$TMP/compose.yml" "$TMP/compose-logging.yml"

# ------------------------------------------------------ Kong config rendering
step "Kong config as rendered (dev/compose, and the prod edge)"
"$PY" deploy/tests/user_jwks.py "$TMP/compose-secrets/keys/trusted.jwks.json" >"$TMP/user.jwks.json"
user_kid=$(jq -r '.keys[0].kid' "$TMP/user.jwks.json")
KONG_REDIS_URL=redis://redis:6379 bash scripts/kong-jwt-key.sh --jwks-file "$TMP/user.jwks.json" \
    --out "$TMP/kong.dev.yml" 2>/dev/null
"$PY" deploy/tests/check_kong_render.py "$TMP/kong.dev.yml" --kids "$user_kid" --redis redis:6379 --redis-user kong
# As the prod overlay's Kong init container runs it (env from the rendered overlay).
KONG_REDIS_URL=rediss://cache.example-cloud.com:6380 KONG_HTTPS_REDIRECT=308 \
    bash scripts/kong-jwt-key.sh --jwks-file "$TMP/user.jwks.json" --out "$TMP/kong.prod.yml" 2>/dev/null
"$PY" deploy/tests/check_kong_render.py "$TMP/kong.prod.yml" --kids "$user_kid" --https-redirect 308 \
    --redis cache.example-cloud.com:6380:tls --redis-user kong

# ------------------------------------------------------------- 5. Kubernetes
step "Kubernetes overlays"
# Every kustomization reads files inside its own root only, so `kubectl apply -k`,
# Argo CD and Flux render it with kustomize's default load restrictor.
"$PY" deploy/tests/check_k8s.py --sources deploy
for overlay in dev prod; do
    work=$TMP/k8s-$overlay
    mkdir -p "$work/scripts"
    cp -r deploy "$work/"
    cp scripts/deploy-secrets.sh "$work/scripts/"
    MP_BIN=/nonexistent bash "$work/scripts/deploy-secrets.sh" k8s "$work/deploy/k8s/overlays/$overlay" 2>/dev/null
    # The default load restrictor (LoadRestrictionsRootOnly), as `kubectl apply -k` uses.
    kubectl kustomize "$work/deploy/k8s/overlays/$overlay" >"$TMP/$overlay.yaml" ||
        die "$overlay overlay does not render with kubectl kustomize (no load-restrictor flag)"
    kubernetes-validate --strict --quiet "$TMP/$overlay.yaml" >"$TMP/$overlay.validate" 2>&1 || {
        cat "$TMP/$overlay.validate"
        die "$overlay overlay does not validate against the Kubernetes schemas"
    }
    if grep -q . "$TMP/$overlay.validate"; then
        cat "$TMP/$overlay.validate"
        die "$overlay overlay: kubernetes-validate reported problems"
    fi
    echo "k8s $overlay: $(grep -c '^kind:' "$TMP/$overlay.yaml") objects valid against the schemas (strict)"
    "$PY" deploy/tests/check_k8s.py "$TMP/$overlay.yaml" "$overlay"
done

# Prometheus inside the cluster (namespace monitoring), its own kustomization.
kubectl kustomize deploy/k8s/monitoring >"$TMP/monitoring.yaml" ||
    die "deploy/k8s/monitoring does not render with kubectl kustomize"
kubernetes-validate --strict --quiet "$TMP/monitoring.yaml" >"$TMP/monitoring.validate" 2>&1 || {
    cat "$TMP/monitoring.validate"
    die "deploy/k8s/monitoring does not validate against the Kubernetes schemas"
}
if grep -q . "$TMP/monitoring.validate"; then
    cat "$TMP/monitoring.validate"
    die "deploy/k8s/monitoring: kubernetes-validate reported problems"
fi
echo "k8s monitoring: $(grep -c '^kind:' "$TMP/monitoring.yaml") objects valid against the schemas (strict)"
"$PY" deploy/tests/check_k8s.py "$TMP/monitoring.yaml" monitoring "$TMP/dev.yaml"

# Files that must agree: Grafana and its read-only role, Fluent Bit, image tags.
"$PY" deploy/tests/check_files.py "$TMP/compose-logging.yml" "$TMP/dev.yaml" "$TMP/prod.yaml" "$TMP/monitoring.yaml"

# ------------------------------------------------------ user key rotation
step "user key rotation, offline (scripts/rotate-user-key.sh with a stand-in kubectl)"
rot=$TMP/rotation
ov=$TMP/k8s-dev/deploy/k8s/overlays/dev   # rendered above, with generated keys
mkdir -p "$rot"
# The stand-in logs every call; Kong's render log (kubectl logs) is what
# kong-jwt-key.sh prints for the JWKS the customer service would publish with
# the overlay's keys as they are at that moment.
cat >"$rot/kubectl" <<STUB
#!/usr/bin/env bash
echo "\$*" >>"$rot/calls"
case " \$* " in
*" get pods "*) echo '{"items": [{"metadata": {"name": "kong-0"}}]}' ;;
*" logs "*)
    bash "$ROOT/scripts/rotate-user-key.sh" jwks "$ov" >"$rot/served.jwks.json"
    bash "$ROOT/scripts/kong-jwt-key.sh" --jwks-file "$rot/served.jwks.json" --out "$rot/kong.yml" 2>&1 ;;
esac
STUB
chmod +x "$rot/kubectl"
user_kids() { jq -r '[.keys[].kid | select(startswith("user-"))] | sort | join(",")' "$ov/secrets/keys/trusted.jwks.json"; }
old_kid=$(user_kids)
sums() { (cd "$ov/secrets/keys" && sha256sum -- * | sort); }
before=$(sums)
bash scripts/rotate-user-key.sh --dry-run publish "$ov" >"$rot/dry-run.out"
[[ $(sums) == "$before" ]] || die "rotate-user-key.sh --dry-run changed the keys"
if ! grep -q 'kubectl .*apply -k' "$rot/dry-run.out" || ! grep -q 'rollout restart deployment/kong' "$rot/dry-run.out"; then
    die "rotate-user-key.sh --dry-run publish does not show the apply and Kong's restart"
fi
# 1. publish: the new public key is trusted (and served), Kong rolled with both keys.
KUBECTL=$rot/kubectl bash scripts/rotate-user-key.sh publish "$ov" >"$rot/publish.out"
new_kid=$(bash scripts/rotate-user-key.sh kid "$ov/secrets/keys/user.next.pem")
[[ $(user_kids) == "$(printf '%s\n' "$old_kid" "$new_kid" | sort | paste -sd,)" ]] ||
    die "after publish TRUSTED_KEYS holds $(user_kids), expected $old_kid and $new_kid"
"$PY" deploy/tests/check_rotation_calls.py "$rot/calls" || die "publish: kubectl steps out of order"
# Kong's render step fed the JWKS with both keys renders both.
bash scripts/rotate-user-key.sh jwks "$ov" >"$rot/two.jwks.json"
[[ $(jq '.keys | length' "$rot/two.jwks.json") == 2 ]] || die "the published JWKS does not hold two keys"
bash scripts/kong-jwt-key.sh --jwks-file "$rot/two.jwks.json" --out "$rot/kong.two.yml" 2>/dev/null
"$PY" deploy/tests/check_kong_render.py "$rot/kong.two.yml" --kids "$old_kid,$new_kid"
# 2. switch: the customer service signs with the new key; the old one stays trusted.
KUBECTL=$rot/kubectl bash scripts/rotate-user-key.sh switch "$ov" >"$rot/switch.out"
[[ $(bash scripts/rotate-user-key.sh kid "$ov/secrets/keys/user.pem") == "$new_kid" ]] ||
    die "after switch JWT_SIGNING_KEY (user.pem) is not the new key"
[[ $(user_kids) == *"$old_kid"* ]] || die "switch dropped the old key from TRUSTED_KEYS before the tokens expired"
# 3. retire (token lifetime 0 here): the old key goes; Kong rolled with the new one only.
KUBECTL=$rot/kubectl bash scripts/rotate-user-key.sh --token-ttl 0 retire "$ov" >"$rot/retire.out"
[[ $(user_kids) == "$new_kid" ]] || die "after retire TRUSTED_KEYS holds $(user_kids), expected $new_kid"
bash scripts/rotate-user-key.sh jwks "$ov" >"$rot/one.jwks.json"
bash scripts/kong-jwt-key.sh --jwks-file "$rot/one.jwks.json" --out "$rot/kong.one.yml" 2>/dev/null
"$PY" deploy/tests/check_kong_render.py "$rot/kong.one.yml" --kids "$new_kid"
kubectl kustomize "$ov" >"$rot/rendered.yaml" || die "the overlay does not render after the rotation"
echo "rotation: $old_kid -> $new_kid: published (Kong rolled with both), switched, retired"

if [[ ${DEPLOY_TEST_LIVE:-1} == 0 ]]; then
    step "live checks skipped (DEPLOY_TEST_LIVE=0)"
    exit 0
fi

# ------------------------------------------------------------------- 6. live
step "the fleet"
fleet_ready() {
    local entry
    for entry in "${SERVICES[@]}"; do
        curl -fs -o /dev/null --max-time 3 "http://127.0.0.1:${entry##*:}/health/ready" || return 1
    done
}
if fleet_ready; then
    echo "test-deploy: the fleet is running; using it"
else
    echo "test-deploy: starting the fleet (make up)"
    STARTED_FLEET=1
    bash scripts/fleet.sh up
    fleet_ready || die "the fleet is not ready"
fi

step "Kong routes against the services' OpenAPI documents"
mkdir -p "$TMP/openapi"
for entry in "${SERVICES[@]}"; do
    curl -fsS --max-time 10 "http://127.0.0.1:${entry##*:}/openapi.json" >"$TMP/openapi/${entry%%:*}.json"
done
"$PY" deploy/tests/check_kong.py deploy/kong/kong.yml "$TMP/openapi"
curl -fsS --max-time 5 http://127.0.0.1:5000/.well-known/jwks.json >"$TMP/jwks.json" ||
    die "the customer service does not serve /.well-known/jwks.json"
bash scripts/kong-jwt-key.sh --jwks-file "$TMP/jwks.json" --out "$TMP/kong.rendered.yml"
"$PY" deploy/tests/check_kong.py "$TMP/kong.rendered.yml" "$TMP/openapi" >/dev/null
echo "kong: the live JWKS renders into a config that still passes"

step "RabbitMQ users"
"$PY" deploy/rabbitmq/rabbitmq_permissions.py check "$CARGO_TARGET_DIR/${FLEET_PROFILE:-release}" deploy/rabbitmq/permissions.json

step "Redis users"
"$PY" deploy/redis/redis_acl.py check "$CARGO_TARGET_DIR/${FLEET_PROFILE:-release}" deploy/redis/acl.json

step "PostgreSQL roles (deploy/postgres/service-roles.sql in a throw-away database)"
bash deploy/tests/check-service-roles.sh "$CARGO_TARGET_DIR/${FLEET_PROFILE:-release}"

step "traffic: a paid and a declined checkout"
bash deploy/tests/checkout-traffic.sh

step "metrics of the rules and dashboards against the live scrape"
mkdir -p "$TMP/scrape"
for entry in "${SERVICES[@]}"; do
    curl -fsS --max-time 10 "http://127.0.0.1:${entry##*:}/metrics" >"$TMP/scrape/${entry%%:*}.metrics"
done
"$PY" deploy/tests/check_metrics.py "$TMP/scrape" deploy/prometheus/rules/*.yml -- "$TMP/exprs.json"

step "a real Prometheus scraping the fleet"
PROM_PORT=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$TMP/prometheus/data"
{
    echo "global: {scrape_interval: 1s, evaluation_interval: 1s}"
    echo "rule_files: [\"$ROOT/deploy/prometheus/rules/*.yml\", \"$TMP/dashboard-rules.yml\"]"
    echo "scrape_configs:"
    echo "  - job_name: marketplace"
    echo "    static_configs:"
    for entry in "${SERVICES[@]}"; do
        echo "      - {targets: [\"127.0.0.1:${entry##*:}\"], labels: {service: ${entry%%:*}}}"
    done
} >"$TMP/prometheus/prometheus.yml"
promtool check config "$TMP/prometheus/prometheus.yml" >/dev/null
prometheus --config.file="$TMP/prometheus/prometheus.yml" --storage.tsdb.path="$TMP/prometheus/data" \
    --web.listen-address="127.0.0.1:$PROM_PORT" >"$TMP/prometheus/log" 2>&1 &
PROM_PID=$!
"$PY" deploy/tests/check_prometheus_live.py "http://127.0.0.1:$PROM_PORT" deploy/prometheus/rules/*.yml || { tail -20 "$TMP/prometheus/log" >&2; die "Prometheus check"; }

step "contracts: Schemathesis against the six services' OpenAPI documents"
bash scripts/contracts.sh

step "all deploy checks passed"

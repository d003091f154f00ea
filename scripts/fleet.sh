#!/usr/bin/env bash
# fleet.sh — run the six Marketplace services locally, in the background.
#
#   bash scripts/fleet.sh up       dependencies + build + start what is
#                                  not running + wait until ready + seed
#   bash scripts/fleet.sh down     stop the services (dependencies keep running)
#   bash scripts/fleet.sh status   services and dependencies at a glance
#   bash scripts/fleet.sh restart  down, then up
#
# State lives in .local/ (gitignored): logs/<svc>.log, run/<svc>.pid,
# admin.env (generated admin credentials and JWT secret, mode 600), db.env
# (the PostgreSQL role's generated password and DATABASE_URL, mode 600, made by
# scripts/infra.sh), sms.log
# (every SMS the notification service sends, one JSON object a line) and
# maildev/ (the mail catcher: MailDev from npm, whose web page shows every
# email: http://localhost:1080).
#
# Environment knobs (all optional):
#   CARGO_TARGET_DIR     where the binaries are (same default as the Makefile)
#   FLEET_PROFILE        cargo profile to build and run (default release: fast
#                        to build; 'dist' is the thin-LTO one of the images)
#   FLEET_SKIP_BUILD=1   don't run cargo build (use the binaries already built)
#   FLEET_SKIP_MIGRATE=1 don't run '<svc> migrate' before starting a service
#   FLEET_BIND_HOST      interface the services listen on (default 0.0.0.0)
#   FLEET_STATE_DIR      instead of .local/ (e.g. for a throwaway run)
#   FLEET_READY_TIMEOUT  seconds to wait for readiness (default 60)
#   FLEET_MAIL_SMTP_PORT SMTP port of the mail catcher (default 1025)
#   FLEET_MAIL_WEB_PORT  web page of the mail catcher (default 1080)
#   FLEET_NO_MAIL=1      don't start the mail catcher (SMTP_HOST/SMTP_PORT
#                        then name a server of your own)
#   REPLICAS             processes of each service (1 to 9, default: what the last
#                        'up' ran, else 1; FLEET_REPLICAS is the same). Replica 1 is
#                        <svc> on the service's port, replica n is <svc>-<n> on that
#                        port + 100 * (n - 1): with REPLICAS=2, order-2 on 5101.
#                        All share PostgreSQL, RabbitMQ and Redis; replica n of cart
#                        calls replica n of inventory, vendor and order.
#   FLEET_SKIP_SEED=1    don't run scripts/seed.sh after the services are ready
# Anything else the services read (DATABASE_URL, RUST_LOG, LOG_FORMAT, ...)
# is passed through from the caller's environment; DATABASE_URL defaults to
# the project role's URL in db.env.

set -euo pipefail

FLEET_SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
FLEET_ROOT=$(cd "$FLEET_SCRIPT_DIR/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=infra.sh
. "$FLEET_SCRIPT_DIR/infra.sh"

# name:port, in start order (deploy/services.txt, generated from the event catalog).
mapfile -t SERVICES < <(awk '!/^#/ && NF {print $1 ":" $2}' "$FLEET_ROOT/deploy/services.txt")

STATE_DIR=${FLEET_STATE_DIR:-$FLEET_ROOT/.local}
LOG_DIR=$STATE_DIR/logs
RUN_DIR=$STATE_DIR/run
ADMIN_ENV=$STATE_DIR/admin.env
ADMIN_EMAIL_DEFAULT=admin@marketplace.local
READY_TIMEOUT=${FLEET_READY_TIMEOUT:-60} # seconds, for all services together
STOP_TIMEOUT=20  # seconds between SIGTERM and SIGKILL
BIND_HOST=${FLEET_BIND_HOST:-0.0.0.0}
MAILDEV_VERSION=2.2.1
MAILDEV_DIR=$STATE_DIR/maildev
MAIL_SMTP_PORT=${FLEET_MAIL_SMTP_PORT:-1025}
MAIL_WEB_PORT=${FLEET_MAIL_WEB_PORT:-1080}
SMS_LOG=$STATE_DIR/sms.log

# Same default as the Makefile, so 'make up' and 'bash scripts/fleet.sh up'
# find the same binaries. A relative value is taken from the repo root, as
# cargo (run from there) would.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/marketplace/target}
FLEET_PROFILE=${FLEET_PROFILE:-release}
case $CARGO_TARGET_DIR in
/*) BIN_DIR=$CARGO_TARGET_DIR/$FLEET_PROFILE ;;
*) BIN_DIR=$FLEET_ROOT/$CARGO_TARGET_DIR/$FLEET_PROFILE ;;
esac

say() { printf 'fleet: %s\n' "$*"; }
warn() { printf 'fleet: WARNING: %s\n' "$*" >&2; }
die() {
    printf 'fleet: ERROR: %s\n' "$*" >&2
    exit 1
}

svc_name() { printf '%s' "${1%%:*}"; }
svc_port() { printf '%s' "${1##*:}"; }

# How many processes of each service: REPLICAS, else what the last 'up' ran
# ($RUN_DIR/replicas), else 1.
REPLICAS_MAX=9
replica_count() {
    local n=${FLEET_REPLICAS:-${REPLICAS:-}}
    [[ -n $n ]] || n=$(cat "$RUN_DIR/replicas" 2>/dev/null || echo 1)
    [[ $n =~ ^[1-9]$ ]] || die "REPLICAS must be 1 to $REPLICAS_MAX (got '$n')"
    printf '%s' "$n"
}

# One line per process, "instance service port replica": replica by replica, each in
# the services' start order.
instances() {
    local n=$1 i entry svc port
    for ((i = 1; i <= n; i++)); do
        for entry in "${SERVICES[@]}"; do
            svc=$(svc_name "$entry")
            port=$(($(svc_port "$entry") + 100 * (i - 1)))
            if ((i == 1)); then echo "$svc $svc $port $i"; else echo "$svc-$i $svc $port $i"; fi
        done
    done
}
pid_file() { printf '%s/%s.pid' "$RUN_DIR" "$1"; }
log_file() { printf '%s/%s.log' "$LOG_DIR" "$1"; }

# --------------------------------------------------------------- processes

# Alive and not a zombie: in containers PID 1 may never reap orphans, and a
# zombie still answers kill -0.
pid_alive() {
    local pid=$1 stat state
    kill -0 "$pid" 2>/dev/null || return 1
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
    state=${stat##*) }
    [[ ${state%% *} != Z ]]
}

# Alive and running our binary, so a recycled pid from a stale pidfile is not
# mistaken for (or killed as) a service. argv[1] is checked too because a
# program run through an interpreter shows the interpreter as argv[0].
pid_is_ours() {
    local pid=$1 svc=$2 args=()
    pid_alive "$pid" || return 1
    mapfile -d '' -t args <"/proc/$pid/cmdline" 2>/dev/null || return 1
    [[ ${args[0]:-} == */"$svc" || ${args[0]:-} == "$svc" || ${args[1]:-} == */"$svc" ]]
}

# Pid recorded for a service, if the pidfile holds a number.
read_pid() {
    local f pid
    f=$(pid_file "$1")
    [[ -f $f ]] || return 0
    pid=$(<"$f")
    [[ $pid =~ ^[0-9]+$ ]] && printf '%s' "$pid"
    return 0
}

port_listening() { infra_port_open 127.0.0.1 "$1"; }

ready() {
    curl -fs -o /dev/null --max-time 2 "http://127.0.0.1:$1/health/ready" 2>/dev/null
}

# Prints "<state> <pid or ->" where state is one of:
#   running   our process is alive and its port listens
#   starting  our process is alive but its port does not listen (yet)
#   external  the port listens but not for a process we started
#   stopped   none of the above
svc_state() { # svc_state <instance> <service> <port>
    local inst=$1 svc=$2 port=$3 pid
    pid=$(read_pid "$inst")
    if [[ -n $pid ]] && pid_is_ours "$pid" "$svc"; then
        if port_listening "$port"; then echo "running $pid"; else echo "starting $pid"; fi
    elif port_listening "$port"; then
        echo "external -"
    else
        echo "stopped -"
    fi
}

# SIGTERM the given pids, SIGKILL whatever is left after STOP_TIMEOUT.
stop_pids() {
    local pid deadline left
    (($# > 0)) || return 0
    kill -TERM "$@" 2>/dev/null || true
    deadline=$((SECONDS + STOP_TIMEOUT))
    while :; do
        left=()
        for pid in "$@"; do pid_alive "$pid" && left+=("$pid"); done
        ((${#left[@]} == 0)) && return 0
        ((SECONDS >= deadline)) && break
        sleep 0.5
    done
    warn "still running after ${STOP_TIMEOUT}s, sending SIGKILL to pid ${left[*]}"
    kill -KILL "${left[@]}" 2>/dev/null || true
}

# -------------------------------------------------------------------- setup

ensure_cargo() {
    # A non-login shell (CI, make) may not have rustup's PATH yet.
    if ! command -v cargo >/dev/null 2>&1 && [[ -f $HOME/.cargo/env ]]; then
        # shellcheck source=/dev/null
        . "$HOME/.cargo/env"
    fi
    command -v cargo >/dev/null 2>&1 || die "cargo not found; install Rust (rustup) first"
}

build() {
    if [[ ${FLEET_SKIP_BUILD:-0} == 1 ]]; then
        say "FLEET_SKIP_BUILD=1: not building, using $BIN_DIR"
    else
        ensure_cargo
        local pkgs=() entry
        for entry in "${SERVICES[@]}"; do pkgs+=(-p "$(svc_name "$entry")"); done
        say "building the services, profile $FLEET_PROFILE (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
        (cd "$FLEET_ROOT" && cargo build --profile "$FLEET_PROFILE" "${pkgs[@]}" --bins)
    fi
    local entry missing=()
    for entry in "${SERVICES[@]}"; do
        [[ -x $BIN_DIR/$(svc_name "$entry") ]] || missing+=("$(svc_name "$entry")")
    done
    ((${#missing[@]} == 0)) || die "no binary for: ${missing[*]} (looked in $BIN_DIR)"
}

prepare_state_dir() {
    mkdir -p "$LOG_DIR" "$RUN_DIR"
    # Belt and braces next to the repo's .gitignore: admin.env holds secrets.
    [[ -f $STATE_DIR/.gitignore ]] || printf '*\n' >"$STATE_DIR/.gitignore"
}

# N random letters and digits: safe unquoted in env files, URLs and shells.
random_alnum() {
    local n=$1 s=""
    while ((${#s} < n)); do
        if command -v openssl >/dev/null 2>&1; then
            s+=$(openssl rand -base64 96 | tr -dc 'A-Za-z0-9')
        else
            s+=$(head -c 96 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')
        fi
    done
    printf '%s' "${s:0:n}"
}

# Generated once, then reused: a new JWT secret on every 'up' would log
# everyone out, and a new password would break saved demo logins.
ensure_admin_env() {
    if [[ ! -s $ADMIN_ENV ]]; then
        local tmp
        tmp=$(umask 077 && mktemp "$STATE_DIR/admin.env.XXXXXX")
        {
            echo "# Generated by scripts/fleet.sh on $(date -u +%Y-%m-%dT%H:%M:%SZ). Delete to regenerate."
            echo "ADMIN_EMAIL=$ADMIN_EMAIL_DEFAULT"
            echo "ADMIN_PASSWORD=$(random_alnum 24)"
        } >"$tmp"
        mv "$tmp" "$ADMIN_ENV"
        say "generated admin credentials in $ADMIN_ENV"
    fi
    chmod 600 "$ADMIN_ENV"
    local key
    for key in ADMIN_EMAIL ADMIN_PASSWORD; do
        grep -q "^$key=." "$ADMIN_ENV" || die "$ADMIN_ENV has no $key; delete the file to regenerate it"
    done
}

# The signing keys: the customer service's user key, one key per service, and the JWKS
# of their public halves. Generated once (by the services' own `keys` command), then
# reused: new keys on every 'up' would log everyone out.
KEYS_DIR=$STATE_DIR/keys

ensure_keys() {
    if [[ ! -s $KEYS_DIR/trusted.jwks.json ]]; then
        rm -rf "$KEYS_DIR"
        (umask 077 && mkdir -p "$KEYS_DIR")
        "$BIN_DIR/customer" keys --out "$KEYS_DIR" >/dev/null ||
            die "could not generate the signing keys into $KEYS_DIR"
        say "generated signing keys in $KEYS_DIR"
    fi
    chmod 700 "$KEYS_DIR"
}

load_admin_env() {
    set -a
    # shellcheck source=/dev/null
    . "$ADMIN_ENV"
    set +a
}

# The services log in as the project role (scripts/infra.sh made it and its
# password), unless the caller's environment names another DATABASE_URL.
export_database_url() {
    if [[ -z ${DATABASE_URL:-} ]]; then
        DATABASE_URL=$(sed -n 's/^DATABASE_URL=//p' "$INFRA_DB_ENV")
        [[ -n $DATABASE_URL ]] || die "$INFRA_DB_ENV has no DATABASE_URL; run 'make infra'"
    fi
    export DATABASE_URL
}

# ------------------------------------------------- per-service credentials

# Each service logs in as a PostgreSQL role of its own (mp_<service>) that owns its
# schema and nothing else, and as a Redis user of its own (mp-<service>) whose ACL
# rules come from `<service> redis-user`: least privilege, as in production. The
# passwords are generated once into $STATE_DIR/services/<service>.env (mode 600). The
# project role is made a member of each role, so tests and tools that log in as it
# still read the services' tables.
CREDS_DIR=$STATE_DIR/services

svc_schema() {
    case $1 in
    order) printf 'orders' ;;
    *) printf '%s' "$1" ;;
    esac
}

# The role and schema, idempotently; a schema made by an older version (owned by the
# project role) is handed over with everything in it.
ensure_service_role() {
    local svc=$1 pw=$2 role schema
    role=mp_$svc
    schema=$(svc_schema "$svc")
    infra_pg_sql "DO \$\$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$role') THEN
    CREATE ROLE $role LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD '$pw';
  ELSE
    ALTER ROLE $role LOGIN NOSUPERUSER PASSWORD '$pw';
  END IF;
END \$\$;
GRANT $role TO $INFRA_DB_USER;" "$INFRA_DB_NAME" >/dev/null
    infra_pg_sql "CREATE SCHEMA IF NOT EXISTS $schema AUTHORIZATION $role;
DO \$\$
DECLARE r record;
BEGIN
  EXECUTE format('ALTER SCHEMA %I OWNER TO %I', '$schema', '$role');
  FOR r IN SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = '$schema' AND c.relkind IN ('r', 'p', 'v', 'm')
             AND pg_get_userbyid(c.relowner) <> '$role' LOOP
    EXECUTE format('ALTER TABLE %I.%I OWNER TO %I', '$schema', r.relname, '$role');
  END LOOP;
  FOR r IN SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = '$schema' AND c.relkind = 'S'
             AND pg_get_userbyid(c.relowner) <> '$role' LOOP
    EXECUTE format('ALTER SEQUENCE %I.%I OWNER TO %I', '$schema', r.relname, '$role');
  END LOOP;
  FOR r IN SELECT p.oid::regprocedure AS f FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
           WHERE n.nspname = '$schema' AND pg_get_userbyid(p.proowner) <> '$role' LOOP
    EXECUTE format('ALTER FUNCTION %s OWNER TO %I', r.f, '$role');
  END LOOP;
END \$\$;" "$INFRA_DB_NAME" >/dev/null
}

ensure_service_redis_user() {
    local svc=$1 pw=$2 bin rules
    bin=$BIN_DIR/$svc
    read -r -a rules < <("$bin" redis-user)
    redis-cli -h "$INFRA_HOST" -p "$INFRA_REDIS_PORT" ACL SETUSER "mp-$svc" reset on ">$pw" "${rules[@]}" >/dev/null ||
        die "could not make the Redis user mp-$svc"
}

# Sets DATABASE_URL and REDIS_URL for one service (its own role and user).
service_credentials() {
    local svc=$1 file db_pw redis_pw
    file=$CREDS_DIR/$svc.env
    if [[ ! -s $file ]]; then
        (umask 077 && mkdir -p "$CREDS_DIR" && {
            echo "# $svc's PostgreSQL role mp_$svc and Redis user mp-$svc (generated by fleet.sh)"
            echo "DB_PASSWORD=$(random_alnum 32)"
            echo "REDIS_PASSWORD=$(random_alnum 32)"
        } >"$file")
    fi
    db_pw=$(sed -n 's/^DB_PASSWORD=//p' "$file")
    redis_pw=$(sed -n 's/^REDIS_PASSWORD=//p' "$file")
    ensure_service_role "$svc" "$db_pw"
    ensure_service_redis_user "$svc" "$redis_pw"
    # Loopback: no TLS (see infra_pg_ensure_tls).
    SVC_DATABASE_URL="postgres://mp_$svc:$db_pw@$INFRA_HOST:$INFRA_PG_PORT/$INFRA_DB_NAME?sslmode=disable"
    SVC_REDIS_URL="redis://mp-$svc:$redis_pw@$INFRA_HOST:$INFRA_REDIS_PORT"
}

# ------------------------------------------------------------ mail catcher

# MailDev, pinned, installed once into the state dir with npm (node >= 18).
ensure_maildev_installed() {
    local pkg=$MAILDEV_DIR/node_modules/maildev/package.json
    if [[ -f $pkg ]] && grep -q "\"version\": \"$MAILDEV_VERSION\"" "$pkg"; then
        return 0
    fi
    if ! command -v npm >/dev/null 2>&1; then
        infra_apt_install nodejs npm
    fi
    say "installing MailDev $MAILDEV_VERSION (npm) into $MAILDEV_DIR"
    mkdir -p "$MAILDEV_DIR"
    [[ -f $MAILDEV_DIR/package.json ]] || printf '{"private": true}\n' >"$MAILDEV_DIR/package.json"
    # Non-interactive and bounded: no audit/fund chatter, no prompts.
    CI=true npm_config_yes=true timeout 600 npm install --prefix "$MAILDEV_DIR" \
        --no-audit --no-fund --loglevel=error --save-exact "maildev@$MAILDEV_VERSION" \
        >>"$LOG_DIR/maildev.log" 2>&1 </dev/null
}

# Starts the mail catcher unless it (or another SMTP server) already listens.
# Its failure is a warning: the services still run, emails wait in the
# notification service until an SMTP server answers.
start_mail_catcher() {
    local pidf pid bin tries=60
    [[ ${FLEET_NO_MAIL:-0} == 1 ]] && return 0
    pidf=$(pid_file maildev)
    pid=$(read_pid maildev)
    if [[ -n $pid ]] && pid_is_ours "$pid" maildev; then
        say "mail catcher already running (pid $pid): http://localhost:$MAIL_WEB_PORT"
        return 0
    fi
    if port_listening "$MAIL_SMTP_PORT"; then
        warn "port $MAIL_SMTP_PORT already listens (not started by fleet); using it as the SMTP server"
        return 0
    fi
    if ! ensure_maildev_installed; then
        warn "could not install MailDev (see $LOG_DIR/maildev.log); emails stay pending until an SMTP server listens on $MAIL_SMTP_PORT"
        return 0
    fi
    bin=$MAILDEV_DIR/node_modules/.bin/maildev
    mkdir -p "$STATE_DIR/mail"
    rm -f "$pidf"
    printf '\n==== %s fleet: starting maildev smtp :%s web :%s ====\n' \
        "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$MAIL_SMTP_PORT" "$MAIL_WEB_PORT" >>"$LOG_DIR/maildev.log"
    # shellcheck disable=SC2016 # $$ and $1.. are for the inner bash
    setsid nohup bash -c 'echo $$ >"$1" && exec "$2" --smtp "$3" --web "$4" --ip 127.0.0.1 --mail-directory "$5"' \
        fleet-launch "$pidf" "$bin" "$MAIL_SMTP_PORT" "$MAIL_WEB_PORT" "$STATE_DIR/mail" \
        >>"$LOG_DIR/maildev.log" 2>&1 </dev/null &
    until port_listening "$MAIL_WEB_PORT" && port_listening "$MAIL_SMTP_PORT"; do
        if ((tries-- <= 0)); then
            warn "MailDev did not start (see $LOG_DIR/maildev.log)"
            return 0
        fi
        sleep 0.5
    done
    say "mail catcher: SMTP 127.0.0.1:$MAIL_SMTP_PORT, mail at http://localhost:$MAIL_WEB_PORT"
}

stop_mail_catcher() {
    local pid
    pid=$(read_pid maildev)
    if [[ -n $pid ]] && pid_is_ours "$pid" maildev; then
        say "stopping the mail catcher (pid $pid)"
        stop_pids "$pid"
    fi
    rm -f "$(pid_file maildev)"
}

# Where the notification service sends: the mail catcher and the SMS file,
# unless the caller's environment says otherwise.
export_notification_settings() {
    export SMTP_HOST=${SMTP_HOST:-127.0.0.1}
    export SMTP_PORT=${SMTP_PORT:-$MAIL_SMTP_PORT}
    export SMS_PROVIDER=${SMS_PROVIDER:-file}
    export SMS_FILE=${SMS_FILE:-$SMS_LOG}
}

# ------------------------------------------------------------- start / wait

print_log_tail() {
    local log
    log=$(log_file "$1")
    echo "---- last 20 lines of $log ----" >&2
    tail -n 20 "$log" >&2 2>/dev/null || echo "(no log)" >&2
    echo "----" >&2
}

# Start one process detached; the pidfile is written by the launched process
# itself. setsid: own session, so the service is not in our process group or
# terminal and survives this shell and Ctrl-C; nohup: ignores SIGHUP too.
start_svc() { # start_svc <instance> <service> <port> <replica>
    local inst=$1 svc=$2 port=$3 replica=$4 bin log pidf tries=50 entry peer
    bin=$BIN_DIR/$svc
    log=$(log_file "$inst")
    pidf=$(pid_file "$inst")
    printf '\n==== %s fleet: starting %s on %s:%s ====\n' \
        "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$inst" "$BIND_HOST" "$port" >>"$log"

    service_credentials "$svc"
    # Idempotent; bounded so a hung database can't stall 'up' forever. Once per
    # service: the other replicas share its schema.
    if [[ ${FLEET_SKIP_MIGRATE:-0} != 1 && $replica == 1 ]]; then
        if ! DATABASE_URL=$SVC_DATABASE_URL REDIS_URL=$SVC_REDIS_URL LISTEN_ADDR=$BIND_HOST:$port \
            timeout 120 "$bin" migrate >>"$log" 2>&1 </dev/null; then
            warn "$svc: '$svc migrate' failed"
            return 1
        fi
    fi

    rm -f "$pidf"
    # LISTEN_ADDR is set per process: an inherited one would make them all fight
    # over one port. <SVC>_URL: the peers of the same replica (cart reads them),
    # unless the caller's environment names them.
    local env_vars=("LISTEN_ADDR=$BIND_HOST:$port")
    for entry in "${SERVICES[@]}"; do
        peer=$(svc_name "$entry")
        peer=${peer^^}_URL
        env_vars+=("$peer=${!peer:-http://127.0.0.1:$(($(svc_port "$entry") + 100 * (replica - 1)))}")
    done
    # Each service gets its own key; only the customer service the user-token key.
    env_vars+=("SERVICE_KEY=$(<"$KEYS_DIR/$svc.pem")" "TRUSTED_KEYS=$(<"$KEYS_DIR/trusted.jwks.json")")
    [[ $svc == customer ]] && env_vars+=("JWT_SIGNING_KEY=$(<"$KEYS_DIR/user.pem")")
    # $$ of the wrapper is the service's pid after exec.
    # shellcheck disable=SC2016 # $$, $1, $2 are for the inner bash
    env "${env_vars[@]}" DATABASE_URL="$SVC_DATABASE_URL" REDIS_URL="$SVC_REDIS_URL" \
        setsid nohup bash -c 'echo $$ >"$1" && exec "$2" serve' \
        fleet-launch "$pidf" "$bin" >>"$log" 2>&1 </dev/null &
    # Its time from start (migrations done) to ready, for DESIGN's "ready in under 1 s":
    # polled on its own, so the other processes' starts do not count.
    local ready_ms=$RUN_DIR/$inst.ready-ms start_ms
    rm -f "$ready_ms"
    start_ms=$(date +%s%3N)
    (
        for _ in $(seq 3000); do
            if ready "$port"; then
                echo $(($(date +%s%3N) - start_ms)) >"$ready_ms"
                exit 0
            fi
            sleep 0.02
        done
    ) </dev/null >/dev/null 2>&1 &
    while [[ ! -s $pidf ]] && ((tries-- > 0)); do sleep 0.1; done
    if [[ ! -s $pidf ]]; then
        warn "$inst: process did not start"
        return 1
    fi
    say "started $inst (pid $(<"$pidf"), port $port)"
}

# --------------------------------------------------------------- commands

# Run scripts/seed.sh, once everything is ready, if someone has written it.
# It gets the admin credentials (already exported) and <SVC>_URL variables.
run_seed() {
    local seed=$FLEET_ROOT/scripts/seed.sh entry svc rc log
    [[ -x $seed ]] || return 0
    for entry in "${SERVICES[@]}"; do
        svc=$(svc_name "$entry")
        export "${svc^^}_URL=http://127.0.0.1:$(svc_port "$entry")"
    done
    log=$LOG_DIR/seed.log
    say "seeding the demo catalog (scripts/seed.sh, output also in $log)"
    set +e
    "$seed" 2>&1 | tee "$log" | sed 's/^/  seed: /'
    rc=${PIPESTATUS[0]}
    set -e
    ((rc == 0)) && return 0
    # A second 'up' seeds again; an already seeded catalog is not an error.
    if grep -qi 'already seeded' "$log"; then
        say "catalog already seeded"
        return 0
    fi
    warn "scripts/seed.sh failed (exit $rc); see $log"
    return 1
}

cmd_up() {
    infra_ensure
    infra_need_cmd curl curl
    build
    prepare_state_dir
    ensure_admin_env
    ensure_keys
    load_admin_env
    export_database_url
    start_mail_catcher
    export_notification_settings

    local replicas inst svc port replica state pid
    replicas=$(replica_count)
    local -a all=()
    mapfile -t all < <(instances "$replicas")
    # Replicas above the count from an earlier 'up' stop: the count is what runs.
    local extra=() line
    while read -r inst svc port replica; do
        pid=$(read_pid "$inst")
        if [[ -n $pid ]] && pid_is_ours "$pid" "$svc"; then
            say "stopping $inst (pid $pid): REPLICAS is $replicas"
            extra+=("$pid")
        fi
        rm -f "$(pid_file "$inst")"
    done < <(instances "$REPLICAS_MAX" | tail -n +$((${#all[@]} + 1)))
    stop_pids "${extra[@]}"
    echo "$replicas" >"$RUN_DIR/replicas"

    local -A status=() ours=() external=() took=() started_now=()
    for line in "${all[@]}"; do
        read -r inst svc port replica <<<"$line"
        read -r state pid < <(svc_state "$inst" "$svc" "$port")
        case $state in
        running)
            say "$inst already running (pid $pid, port $port)"
            ours[$inst]=$pid
            ;;
        external)
            warn "$inst: port $port is in use by a process fleet did not start (see: ss -ltnp 'sport = :$port'); leaving it alone"
            external[$inst]=1
            ;;
        starting)
            # Alive but not listening: wedged, or died half-way. Replace it
            # rather than leave an orphan behind a new pidfile.
            say "$inst (pid $pid) is not listening on $port; restarting it"
            stop_pids "$pid"
            ;&
        stopped)
            if start_svc "$inst" "$svc" "$port" "$replica"; then
                ours[$inst]=$(read_pid "$inst")
                started_now[$inst]=1
            else
                status[$inst]=failed
            fi
            ;;
        esac
    done

    # Wait for /health/ready of every process not failed yet, all under one
    # deadline; a process that dies meanwhile fails at once.
    local deadline=$((SECONDS + READY_TIMEOUT)) pending
    while :; do
        pending=0
        for line in "${all[@]}"; do
            read -r inst svc port replica <<<"$line"
            [[ -z ${status[$inst]:-} ]] || continue
            if ready "$port"; then
                status[$inst]=ready
            elif [[ -n ${ours[$inst]:-} ]] && ! pid_alive "${ours[$inst]}"; then
                status[$inst]="exited before becoming ready"
            else
                pending=$((pending + 1))
            fi
        done
        ((pending == 0)) && break
        if ((SECONDS >= deadline)); then
            for line in "${all[@]}"; do
                read -r inst _ <<<"$line"
                [[ -n ${status[$inst]:-} ]] || status[$inst]="not ready after ${READY_TIMEOUT}s"
            done
            break
        fi
        sleep 0.2
    done

    local failed=() ready_ms
    for line in "${all[@]}"; do
        read -r inst _ <<<"$line"
        [[ ${status[$inst]} == ready ]] || failed+=("$inst")
        # Only the processes this 'up' started have a fresh time (their poller may
        # still be writing it).
        ready_ms=$RUN_DIR/$inst.ready-ms
        if [[ ${status[$inst]} == ready && -n ${started_now[$inst]:-} ]]; then
            for _ in 1 2 3 4 5; do [[ -s $ready_ms ]] && break; sleep 0.05; done
            [[ -s $ready_ms ]] && took[$inst]=$(<"$ready_ms")
        fi
    done

    local seed_ok=1
    if ((${#failed[@]} == 0)) && [[ ${FLEET_SKIP_SEED:-0} != 1 ]]; then
        run_seed || seed_ok=0
    fi

    echo
    printf '%-15s %-24s %-29s %s\n' SERVICE URL DOCS STATUS
    for line in "${all[@]}"; do
        read -r inst svc port replica <<<"$line"
        printf '%-15s %-24s %-29s %s%s%s\n' "$inst" "http://localhost:$port" \
            "http://localhost:$port/docs" "${status[$inst]}" \
            "${took[$inst]:+ (in ${took[$inst]} ms)}" \
            "${external[$inst]:+ (not started by fleet)}"
    done
    echo
    say "logs: $LOG_DIR/<service>.log (make logs to follow them)"
    if [[ ${FLEET_NO_MAIL:-0} != 1 ]]; then
        say "email: http://localhost:$MAIL_WEB_PORT (MailDev); SMS: $SMS_FILE (one JSON object a line)"
    fi
    say "admin: $ADMIN_EMAIL; the password is in $ADMIN_ENV, the signing keys in $KEYS_DIR"

    if ((${#failed[@]} > 0)); then
        for inst in "${failed[@]}"; do
            warn "$inst: ${status[$inst]}"
            print_log_tail "$inst"
        done
        die "${#failed[@]} process(es) not ready: ${failed[*]}"
    fi
    ((seed_ok)) || die "services are up, but seeding failed"
    say "all ${#SERVICES[@]} services are ready ($replicas replica(s) each, ${#all[@]} processes)"
}

# Every replica that has a pidfile, whatever REPLICAS says now.
cmd_down() {
    local inst svc port replica pid pids=() pidfs=()
    while read -r inst svc port replica; do
        pid=$(read_pid "$inst")
        if [[ -n $pid ]] && pid_is_ours "$pid" "$svc"; then
            say "stopping $inst (pid $pid)"
            pids+=("$pid")
        elif [[ -f $(pid_file "$inst") ]]; then
            say "$inst is not running (removing stale pidfile)"
        elif ((replica == 1)); then
            say "$inst is not running"
        fi
        pidfs+=("$(pid_file "$inst")")
    done < <(instances "$REPLICAS_MAX")
    stop_pids "${pids[@]}"
    rm -f "${pidfs[@]}"
    stop_mail_catcher
    say "services stopped; PostgreSQL, Redis and RabbitMQ keep running"
}

cmd_status() {
    local inst svc port replica state pid readiness replicas
    replicas=$(replica_count)
    printf '%-15s %-9s %-8s %-6s %s\n' SERVICE STATE PID PORT READY
    while read -r inst svc port replica; do
        read -r state pid < <(svc_state "$inst" "$svc" "$port")
        # Replicas above the count show only if something of theirs is left.
        ((replica <= replicas)) || [[ $state != stopped ]] || continue
        if ! command -v curl >/dev/null 2>&1; then
            readiness="unknown (no curl)"
        elif ready "$port"; then
            readiness=ready
        else
            readiness="not ready"
        fi
        printf '%-15s %-9s %-8s %-6s %s\n' "$inst" "$state" "$pid" "$port" "$readiness"
    done < <(instances "$REPLICAS_MAX")
    local mail=down
    if port_listening "$MAIL_SMTP_PORT"; then mail=up; fi
    printf '%-15s %-9s smtp :%s, web http://localhost:%s\n' mail-catcher "$mail" "$MAIL_SMTP_PORT" "$MAIL_WEB_PORT"
    echo
    echo "dependencies:"
    infra_status || true
}

usage() {
    cat <<'EOF'
usage: bash scripts/fleet.sh <command>
  up       ensure PostgreSQL/Redis/RabbitMQ, build, start the services that
           are not running, wait until ready, run scripts/seed.sh if present
  down     stop the services, every replica (SIGTERM, SIGKILL after 20 s)
  status   state, pid, port and readiness of each process, plus dependencies
REPLICAS=n (1 to 9) runs n processes of each service (see the header).
  restart  down, then up
EOF
}

main() {
    cd "$FLEET_ROOT"
    case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    restart)
        cmd_down
        cmd_up
        ;;
    -h | --help | help) usage ;;
    *)
        usage >&2
        exit 2
        ;;
    esac
}

main "$@"

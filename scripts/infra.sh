#!/usr/bin/env bash
# infra.sh — the local dependencies of the Marketplace services:
# PostgreSQL (5432), Redis (6379) and RabbitMQ (5672), all on 127.0.0.1.
#
#   bash scripts/infra.sh ensure   install what is missing, start what is down,
#                                  wait for each, create the database
#   bash scripts/infra.sh status   one line per dependency: up/down
#                                  (exit status 1 if any is down)
#
# It can also be sourced (fleet.sh does) to use infra_ensure / infra_status.
#
# Written for Debian/Ubuntu without relying on systemd or Docker: CI and dev
# containers often have neither, so each daemon is started directly when
# systemd is not the init system. Everything is idempotent: a dependency whose
# port already answers is left alone (and never stopped).

set -euo pipefail

# Debian keeps rabbitmq-server, rabbitmqctl and friends in /usr/sbin, which a
# non-root PATH (or a stripped CI environment) may lack.
case ":$PATH:" in *:/usr/sbin:*) ;; *) PATH="$PATH:/usr/sbin:/sbin" ;; esac

INFRA_HOST=127.0.0.1
INFRA_PG_PORT=5432
INFRA_REDIS_PORT=6379
INFRA_AMQP_PORT=5672
# Database the services use (matches the default DATABASE_URL).
INFRA_DB_NAME="${MARKETPLACE_DB:-marketplace}"

# Set by infra_pg_detect_admin: "tcp" or "su" (see there).
INFRA_PG_ADMIN_MODE=""
INFRA_APT_UPDATED=0

infra_info() { printf 'infra: %s\n' "$*" >&2; }
infra_warn() { printf 'infra: WARNING: %s\n' "$*" >&2; }
infra_die() {
    printf 'infra: ERROR: %s\n' "$*" >&2
    exit 1
}

# Run a command as root: directly when we are root, else through sudo.
# Without a terminal (CI) sudo must not wait for a password, hence -n.
infra_as_root() {
    if [[ $EUID -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        if [[ -t 0 ]]; then sudo "$@"; else sudo -n "$@"; fi
    else
        infra_die "need root for '$*', and sudo is not installed"
    fi
}

# apt-get install the given packages; 'apt-get update' runs once per script
# run, since a fresh machine's package lists may be empty or stale.
infra_apt_install() {
    command -v apt-get >/dev/null 2>&1 ||
        infra_die "apt-get not found; install $* by hand (only Debian/Ubuntu are automated)"
    # noninteractive: CI has no stdin for debconf; the lock timeout waits out
    # an unattended-upgrades run instead of failing at once.
    local apt=(env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300)
    if [[ $INFRA_APT_UPDATED -eq 0 ]]; then
        infra_info "apt-get update"
        infra_as_root "${apt[@]}" update -qq
        INFRA_APT_UPDATED=1
    fi
    infra_info "apt-get install $*"
    infra_as_root "${apt[@]}" install -y -q --no-install-recommends "$@"
}

# infra_need_cmd CMD PACKAGE: install PACKAGE if CMD is not on PATH.
infra_need_cmd() {
    command -v "$1" >/dev/null 2>&1 || infra_apt_install "$2"
}

# True if something accepts TCP connections on HOST:PORT. Uses bash's own
# /dev/tcp so no extra tool (nc, ss) is needed; timeout guards against a
# filtered port hanging the connect.
infra_port_open() {
    local host=$1 port=$2
    # shellcheck disable=SC2016 # $1/$2 are meant for the inner bash
    timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$host" "$port" 2>/dev/null
}

# infra_wait_port NAME PORT SECONDS
infra_wait_port() {
    local name=$1 port=$2 secs=$3 deadline
    deadline=$((SECONDS + secs))
    until infra_port_open "$INFRA_HOST" "$port"; do
        if ((SECONDS >= deadline)); then
            infra_die "$name did not start listening on $INFRA_HOST:$port within ${secs}s"
        fi
        sleep 1
    done
}

# systemd as init (a normal Ubuntu/Debian desktop or VM): prefer its units so
# systemd keeps managing the daemons. Containers and CI have no systemd.
infra_have_systemd() { [[ -d /run/systemd/system ]]; }

infra_try_systemctl() {
    infra_have_systemd || return 1
    infra_info "systemctl start $1"
    infra_as_root systemctl start "$1" 2>/dev/null
}

# ---------------------------------------------------------------- PostgreSQL

infra_pg_server_installed() {
    compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null &&
        command -v pg_ctlcluster >/dev/null 2>&1
}

# Prints "VERSION CLUSTER" of the cluster configured for our port, creating a
# 'main' cluster if the package left none (e.g. create_main_cluster=false).
infra_pg_cluster() {
    local ver name port _rest
    while read -r ver name port _rest; do
        if [[ $port == "$INFRA_PG_PORT" ]]; then
            printf '%s %s\n' "$ver" "$name"
            return 0
        fi
    done < <(pg_lsclusters --no-header 2>/dev/null || true)

    ver=$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -V | tail -n 1)
    [[ -n $ver ]] || infra_die "no PostgreSQL server version found under /usr/lib/postgresql"
    if [[ -d /etc/postgresql/$ver/main ]]; then
        infra_die "PostgreSQL cluster $ver/main exists but is not on port $INFRA_PG_PORT (see pg_lsclusters)"
    fi
    infra_info "creating PostgreSQL cluster $ver/main on port $INFRA_PG_PORT"
    infra_as_root pg_createcluster --port "$INFRA_PG_PORT" "$ver" main >&2
    printf '%s main\n' "$ver"
}

infra_pg_start() {
    infra_port_open "$INFRA_HOST" "$INFRA_PG_PORT" && return 0
    if ! infra_pg_server_installed; then
        infra_apt_install postgresql
        # The package may have started it already (systemd, or no policy-rc.d).
        infra_port_open "$INFRA_HOST" "$INFRA_PG_PORT" && return 0
    fi
    if ! infra_try_systemctl postgresql; then
        local cluster ver name
        # A plain assignment, so a failure in infra_pg_cluster stops us here.
        cluster=$(infra_pg_cluster)
        read -r ver name <<<"$cluster"
        infra_info "starting PostgreSQL cluster $ver/$name"
        # --skip-systemctl-redirect: start the cluster directly even where
        # pg_ctlcluster would otherwise hand over to a (missing) systemd.
        infra_as_root pg_ctlcluster --skip-systemctl-redirect "$ver" "$name" start
    fi
    infra_wait_port PostgreSQL "$INFRA_PG_PORT" 60
}

# psql as the postgres superuser over TCP, exactly as the services connect.
# -w: never prompt for a password (CI has no stdin).
infra_pg_tcp_psql() {
    PGCONNECT_TIMEOUT=5 psql -X -q -A -t -w -v ON_ERROR_STOP=1 \
        -h "$INFRA_HOST" -p "$INFRA_PG_PORT" -U postgres -d postgres "$@"
}

# psql as the postgres OS user over the Unix socket (peer auth); SQL on stdin.
infra_pg_su_psql() {
    infra_as_root su postgres -s /bin/sh -c \
        "cd / && exec psql -X -q -A -t -w -v ON_ERROR_STOP=1 -p $INFRA_PG_PORT -d postgres"
}

# Decide how to run admin SQL. The normal case is "tcp": trust auth for
# 127.0.0.1, as on the dev/CI machines. A fresh PostgreSQL install instead
# asks TCP clients for a password (scram-sha-256) but lets the postgres OS
# user in through the socket (peer auth), so we fall back to
# 'su postgres -c psql' just to create the database. The services themselves
# still connect over TCP, hence the warning: they need a password in
# DATABASE_URL or a trust line in pg_hba.conf.
infra_pg_detect_admin() {
    [[ -n $INFRA_PG_ADMIN_MODE ]] && return 0
    local i
    # Right after start the server may still refuse ("starting up"): retry.
    for i in $(seq 1 15); do
        if infra_pg_tcp_psql -c 'SELECT 1' </dev/null >/dev/null 2>&1; then
            INFRA_PG_ADMIN_MODE=tcp
            return 0
        fi
        if infra_pg_su_psql <<<'SELECT 1' >/dev/null 2>&1; then
            INFRA_PG_ADMIN_MODE=su
            infra_warn "psql -h $INFRA_HOST -U postgres is refused (no trust auth?); using 'su postgres -c psql' to create the database."
            infra_warn "The services connect over TCP: put a password in DATABASE_URL or allow trust for 127.0.0.1 in pg_hba.conf."
            return 0
        fi
        ((i == 1)) && infra_info "waiting for PostgreSQL to accept connections"
        sleep 1
    done
    infra_die "cannot connect to PostgreSQL as postgres, neither over TCP nor via 'su postgres'"
}

# Run one SQL statement as superuser and print its result.
infra_pg_sql() {
    infra_pg_detect_admin
    if [[ $INFRA_PG_ADMIN_MODE == tcp ]]; then
        infra_pg_tcp_psql -c "$1" </dev/null
    else
        infra_pg_su_psql <<<"$1"
    fi
}

infra_pg_ensure_db() {
    # The name is spliced into SQL below; keep it to a plain identifier.
    [[ $INFRA_DB_NAME =~ ^[a-z_][a-z0-9_]*$ ]] || infra_die "bad database name '$INFRA_DB_NAME'"
    # Detect here, not inside the $(...) below, so the result is kept.
    infra_pg_detect_admin
    if [[ $(infra_pg_sql "SELECT 1 FROM pg_database WHERE datname = '$INFRA_DB_NAME'") == 1 ]]; then
        return 0
    fi
    infra_info "creating database $INFRA_DB_NAME"
    infra_pg_sql "CREATE DATABASE $INFRA_DB_NAME" >/dev/null
}

# The test suite runs many services at once, each with a pool: Debian's default of 100
# connections runs out. Raise it once (it needs a restart, done here only when the
# setting is too low, so a second run changes nothing).
INFRA_PG_MIN_CONNECTIONS=400

infra_pg_ensure_capacity() {
    local current cluster ver name
    current=$(infra_pg_sql "SHOW max_connections")
    ((current >= INFRA_PG_MIN_CONNECTIONS)) && return 0
    infra_info "raising PostgreSQL max_connections from $current to $INFRA_PG_MIN_CONNECTIONS (restart)"
    infra_pg_sql "ALTER SYSTEM SET max_connections = $INFRA_PG_MIN_CONNECTIONS" >/dev/null
    if infra_have_systemd && systemctl is-active --quiet postgresql 2>/dev/null; then
        infra_as_root systemctl restart postgresql
    else
        cluster=$(infra_pg_cluster)
        read -r ver name <<<"$cluster"
        infra_as_root pg_ctlcluster --skip-systemctl-redirect "$ver" "$name" restart
    fi
    infra_wait_port PostgreSQL "$INFRA_PG_PORT" 60
    INFRA_PG_ADMIN_MODE=""
    infra_pg_detect_admin
}

# --------------------------------------------------------------------- Redis

infra_redis_start() {
    infra_port_open "$INFRA_HOST" "$INFRA_REDIS_PORT" && return 0
    if ! command -v redis-server >/dev/null 2>&1; then
        infra_apt_install redis-server
        infra_port_open "$INFRA_HOST" "$INFRA_REDIS_PORT" && return 0
    fi
    if ! infra_try_systemctl redis-server; then
        infra_info "starting Redis"
        # Nothing persisted: it is a cache here, and no dump files appear in
        # whatever directory we happen to be in. '-::1' binds IPv6 loopback
        # only if the machine has it.
        redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$INFRA_REDIS_PORT" \
            --save "" --appendonly no >/dev/null
    fi
    infra_wait_port Redis "$INFRA_REDIS_PORT" 30
}

# ------------------------------------------------------------------ RabbitMQ

infra_rabbit_start() {
    infra_port_open "$INFRA_HOST" "$INFRA_AMQP_PORT" && return 0
    command -v rabbitmq-server >/dev/null 2>&1 || infra_apt_install rabbitmq-server
    # The package may have started the node already (systemd); starting a
    # second node would fail on the name clash, so only start when down.
    if ! infra_port_open "$INFRA_HOST" "$INFRA_AMQP_PORT" &&
        ! infra_try_systemctl rabbitmq-server; then
        infra_info "starting RabbitMQ"
        # -detached returns at once; the node boots in the background.
        infra_as_root rabbitmq-server -detached
    fi
    # The Erlang VM takes a while to boot, longer on a cold machine.
    infra_wait_port RabbitMQ "$INFRA_AMQP_PORT" 120
    # The listener opens before every plugin/vhost is ready; await_startup
    # returns once the broker app is fully up. Bounded so CI can't hang.
    if ! infra_as_root timeout 120 rabbitmqctl -q await_startup >/dev/null; then
        infra_die "RabbitMQ listens on $INFRA_AMQP_PORT but 'rabbitmqctl await_startup' failed"
    fi
}

# ------------------------------------------------------------------- Commands

infra_ensure() {
    infra_pg_start
    # psql is needed to create the database even when the server was already
    # running (possibly not from Debian's packages).
    infra_need_cmd psql postgresql-client
    infra_pg_ensure_capacity
    infra_pg_ensure_db
    infra_redis_start
    infra_rabbit_start
    infra_info "PostgreSQL :$INFRA_PG_PORT (db $INFRA_DB_NAME), Redis :$INFRA_REDIS_PORT, RabbitMQ :$INFRA_AMQP_PORT are up"
}

# One line per dependency. Returns 1 if any is down.
infra_status() {
    local rc=0 name port state
    for name in postgresql redis rabbitmq; do
        case $name in
        postgresql) port=$INFRA_PG_PORT ;;
        redis) port=$INFRA_REDIS_PORT ;;
        rabbitmq) port=$INFRA_AMQP_PORT ;;
        esac
        if infra_port_open "$INFRA_HOST" "$port"; then state=up; else state=down rc=1; fi
        printf '%-12s %-16s %s\n' "$name" "$INFRA_HOST:$port" "$state"
    done
    return "$rc"
}

infra_usage() {
    cat <<EOF
usage: bash scripts/infra.sh <command>
  ensure   install (apt-get) and start PostgreSQL, Redis, RabbitMQ if needed;
           create database '$INFRA_DB_NAME'
  status   show whether each dependency is up or down
EOF
}

infra_main() {
    case "${1:-}" in
    ensure) infra_ensure ;;
    status) infra_status ;;
    -h | --help | help) infra_usage ;;
    *)
        infra_usage >&2
        exit 2
        ;;
    esac
}

# Run only when executed, not when sourced by fleet.sh.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    infra_main "$@"
fi

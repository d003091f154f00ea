#!/usr/bin/env bash
# infra.sh — the local dependencies of the Marketplace services:
# PostgreSQL (5432), Redis (6379) and RabbitMQ (5672), all on 127.0.0.1.
#
#   bash scripts/infra.sh ensure   install what is missing, start what is down,
#                                  wait for each, create the database
#   bash scripts/infra.sh status   one line per dependency: up/down
#                                  (exit status 1 if any is down)
#   bash scripts/infra.sh database-url
#                                  print the DATABASE_URL of the project role
#
# The services never connect as the postgres superuser: ensure creates the
# project role (MARKETPLACE_DB_USER, default marketplace) with a generated
# password kept in .local/db.env (mode 600, beside admin.env), makes it the
# owner of the database, and writes DATABASE_URL there. fleet.sh, the Makefile
# and the bench scripts hand that URL to the services and tests. This works
# the same on a machine whose PostgreSQL trusts 127.0.0.1 and on a fresh
# install that asks TCP clients for a password (scram-sha-256): admin SQL then
# goes through 'su postgres' (peer auth on the socket), and pg_hba.conf is
# never touched.
#
# Environment knobs: INFRA_PG_PORT (default 5432), MARKETPLACE_DB (database,
# default marketplace), MARKETPLACE_DB_USER (role, default marketplace),
# FLEET_STATE_DIR (instead of .local/).
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
INFRA_PG_PORT=${INFRA_PG_PORT:-5432}
INFRA_REDIS_PORT=6379
INFRA_AMQP_PORT=5672
# Database the services use (matches the default DATABASE_URL).
INFRA_DB_NAME="${MARKETPLACE_DB:-marketplace}"
# The project role the services log in as, and where its password is kept.
INFRA_DB_USER="${MARKETPLACE_DB_USER:-marketplace}"
INFRA_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
INFRA_STATE_DIR=${FLEET_STATE_DIR:-$INFRA_ROOT/.local}
INFRA_DB_ENV=$INFRA_STATE_DIR/db.env

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

# psql as the postgres superuser over TCP, on database $1 (the rest: psql's
# arguments). -w: never prompt for a password (CI has no stdin).
infra_pg_tcp_psql() {
    local db=$1
    shift
    PGCONNECT_TIMEOUT=5 psql -X -q -A -t -w -v ON_ERROR_STOP=1 \
        -h "$INFRA_HOST" -p "$INFRA_PG_PORT" -U postgres -d "$db" "$@"
}

# psql as the postgres OS user over the Unix socket (peer auth), on database
# $1; SQL on stdin.
infra_pg_su_psql() {
    infra_as_root su postgres -s /bin/sh -c \
        "cd / && exec psql -X -q -A -t -w -v ON_ERROR_STOP=1 -p $INFRA_PG_PORT -d $1"
}

# Decide how to run admin SQL. "tcp": the machine trusts 127.0.0.1 (as the
# dev/CI machines here do). "su": a fresh PostgreSQL install asks TCP clients
# for a password (scram-sha-256) but lets the postgres OS user in through the
# socket (peer auth). Either way the services log in as the project role with
# its password (infra_pg_ensure_role), so both work without editing
# pg_hba.conf.
infra_pg_detect_admin() {
    [[ -n $INFRA_PG_ADMIN_MODE ]] && return 0
    local i
    # Right after start the server may still refuse ("starting up"): retry.
    for i in $(seq 1 15); do
        if infra_pg_tcp_psql postgres -c 'SELECT 1' </dev/null >/dev/null 2>&1; then
            INFRA_PG_ADMIN_MODE=tcp
            return 0
        fi
        if infra_pg_su_psql postgres <<<'SELECT 1' >/dev/null 2>&1; then
            INFRA_PG_ADMIN_MODE=su
            infra_info "PostgreSQL asks TCP clients for a password; admin SQL goes through 'su postgres'"
            return 0
        fi
        ((i == 1)) && infra_info "waiting for PostgreSQL to accept connections"
        sleep 1
    done
    infra_die "cannot connect to PostgreSQL as postgres, neither over TCP nor via 'su postgres'"
}

# Run SQL as superuser and print its result: infra_pg_sql SQL [DATABASE].
# The SQL goes on stdin, never on a command line (ps would show a password).
infra_pg_sql() {
    infra_pg_detect_admin
    if [[ $INFRA_PG_ADMIN_MODE == tcp ]]; then
        infra_pg_tcp_psql "${2:-postgres}" <<<"$1"
    else
        infra_pg_su_psql "${2:-postgres}" <<<"$1"
    fi
}

infra_pg_ensure_db() {
    # The names are spliced into SQL below; keep them plain identifiers.
    [[ $INFRA_DB_NAME =~ ^[a-z_][a-z0-9_]*$ ]] || infra_die "bad database name '$INFRA_DB_NAME'"
    # Detect here, not inside the $(...) below, so the result is kept.
    infra_pg_detect_admin
    if [[ $(infra_pg_sql "SELECT 1 FROM pg_database WHERE datname = '$INFRA_DB_NAME'") != 1 ]]; then
        infra_info "creating database $INFRA_DB_NAME (owner $INFRA_DB_USER)"
        infra_pg_sql "CREATE DATABASE $INFRA_DB_NAME OWNER $INFRA_DB_USER" >/dev/null
        return 0
    fi
    infra_pg_ensure_owner
}

# A database made before the project role existed (services then logged in as
# postgres) is handed over to the role with everything the services created in
# it, so their migrations go on. Only what a superuser owns: the services' own roles
# (mp_<service>, scripts/fleet.sh) keep their schemas. Test schemas (t_*) are left alone: each lives
# only as long as its test, which may be running right now. A no-op once done.
infra_pg_ensure_owner() {
    local u=$INFRA_DB_USER others
    if [[ $(infra_pg_sql "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = '$INFRA_DB_NAME'") != "$u" ]]; then
        infra_info "handing database $INFRA_DB_NAME over to role $u"
        infra_pg_sql "ALTER DATABASE $INFRA_DB_NAME OWNER TO $u" >/dev/null
    fi
    others=$(infra_pg_sql "SELECT count(*) FROM pg_namespace WHERE nspname !~ '^(pg_|t_)'
        AND nspname NOT IN ('information_schema', 'public')
        AND nspowner IN (SELECT oid FROM pg_roles WHERE rolsuper)" "$INFRA_DB_NAME")
    ((others == 0)) && return 0
    infra_info "handing $others schema(s) of $INFRA_DB_NAME and their objects over to role $u"
    infra_pg_sql "DO \$\$
DECLARE r record;
BEGIN
    FOR r IN SELECT n.nspname FROM pg_namespace n
             WHERE n.nspname !~ '^(pg_|t_)' AND n.nspname <> 'information_schema'
               AND n.nspowner IN (SELECT oid FROM pg_roles WHERE rolsuper) LOOP
        EXECUTE format('ALTER SCHEMA %I OWNER TO $u', r.nspname);
    END LOOP;
    -- Tables (their indexes and owned sequences follow), views, free sequences.
    FOR r IN SELECT c.oid::regclass AS name, c.relkind FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname !~ '^(pg_|t_)' AND n.nspname <> 'information_schema'
               AND c.relowner IN (SELECT oid FROM pg_roles WHERE rolsuper) AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
               AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                               AND d.objid = c.oid AND d.deptype IN ('a', 'i')) LOOP
        EXECUTE format(CASE r.relkind WHEN 'v' THEN 'ALTER VIEW %s OWNER TO $u'
                                      WHEN 'm' THEN 'ALTER MATERIALIZED VIEW %s OWNER TO $u'
                                      WHEN 'S' THEN 'ALTER SEQUENCE %s OWNER TO $u'
                                      WHEN 'f' THEN 'ALTER FOREIGN TABLE %s OWNER TO $u'
                                      ELSE 'ALTER TABLE %s OWNER TO $u' END, r.name);
    END LOOP;
    FOR r IN SELECT p.oid::regprocedure AS name FROM pg_proc p
             JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE n.nspname !~ '^(pg_|t_)' AND n.nspname <> 'information_schema'
               AND p.proowner IN (SELECT oid FROM pg_roles WHERE rolsuper) LOOP
        EXECUTE format('ALTER ROUTINE %s OWNER TO $u', r.name);
    END LOOP;
    FOR r IN SELECT t.oid::regtype AS name FROM pg_type t
             JOIN pg_namespace n ON n.oid = t.typnamespace
             WHERE n.nspname !~ '^(pg_|t_)' AND n.nspname <> 'information_schema'
               AND t.typowner <> '$u'::regrole AND t.typtype IN ('e', 'd', 'r')
               AND t.typelem = 0 LOOP
        EXECUTE format('ALTER TYPE %s OWNER TO $u', r.name);
    END LOOP;
END
\$\$" "$INFRA_DB_NAME" >/dev/null
}

# The project role's password: generated once into $INFRA_DB_ENV (mode 600)
# and reused, so a running fleet keeps working across 'make up' and 'make
# test'. The file also holds the DATABASE_URL built from it.
infra_pg_password() {
    local pw=""
    if [[ -f $INFRA_DB_ENV ]]; then
        pw=$(sed -n 's/^MARKETPLACE_DB_PASSWORD=\([A-Za-z0-9]\{16,\}\)$/\1/p' "$INFRA_DB_ENV")
    fi
    if [[ -z $pw ]]; then
        while ((${#pw} < 32)); do
            pw+=$(head -c 96 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')
        done
        pw=${pw:0:32}
    fi
    printf '%s' "$pw"
}

infra_database_url() {
    local pw
    [[ -f $INFRA_DB_ENV ]] || infra_die "no $INFRA_DB_ENV yet: run 'make infra'"
    pw=$(infra_pg_password)
    printf 'postgres://%s:%s@%s:%s/%s?sslmode=disable' "$INFRA_DB_USER" "$pw" "$INFRA_HOST" "$INFRA_PG_PORT" "$INFRA_DB_NAME"
}

infra_write_db_env() {
    local pw=$1 tmp
    mkdir -p "$INFRA_STATE_DIR"
    [[ -f $INFRA_STATE_DIR/.gitignore ]] || printf '*\n' >"$INFRA_STATE_DIR/.gitignore"
    tmp=$(umask 077 && mktemp "$INFRA_STATE_DIR/db.env.XXXXXX")
    {
        echo "# Written by scripts/infra.sh: the PostgreSQL role the services log in as."
        echo "# Keep the password; delete the file to have 'make infra' set a new one."
        echo "MARKETPLACE_DB_PASSWORD=$pw"
        # Loopback: no TLS (the server's certificate is for verify-full, see
        # infra_pg_ensure_tls; unverified TLS would only cost CPU here).
        echo "DATABASE_URL=postgres://$INFRA_DB_USER:$pw@$INFRA_HOST:$INFRA_PG_PORT/$INFRA_DB_NAME?sslmode=disable"
    } >"$tmp"
    chmod 600 "$tmp"
    mv "$tmp" "$INFRA_DB_ENV"
}

# True if the project role can log in over TCP with the password, exactly as
# the services do.
infra_pg_role_login_ok() {
    PGPASSWORD=$1 PGCONNECT_TIMEOUT=5 psql -X -q -A -t -w -h "$INFRA_HOST" -p "$INFRA_PG_PORT" \
        -U "$INFRA_DB_USER" -d postgres -c 'SELECT 1' </dev/null >/dev/null 2>&1
}

infra_pg_ensure_role() {
    [[ $INFRA_DB_USER =~ ^[a-z_][a-z0-9_]*$ ]] || infra_die "bad role name '$INFRA_DB_USER'"
    infra_pg_detect_admin
    local pw
    pw=$(infra_pg_password)
    infra_write_db_env "$pw"
    if [[ $(infra_pg_sql "SELECT 1 FROM pg_roles WHERE rolname = '$INFRA_DB_USER'") != 1 ]]; then
        infra_info "creating PostgreSQL role $INFRA_DB_USER (password in $INFRA_DB_ENV)"
        infra_pg_sql "CREATE ROLE $INFRA_DB_USER LOGIN CREATEDB PASSWORD '$pw'" >/dev/null
    elif ! infra_pg_role_login_ok "$pw"; then
        # The role exists but not with this password (a new clone or a deleted
        # db.env): the file wins. Another clone's db.env then no longer works
        # until it runs 'make infra' in turn.
        infra_info "setting the password of PostgreSQL role $INFRA_DB_USER from $INFRA_DB_ENV"
        infra_pg_sql "ALTER ROLE $INFRA_DB_USER LOGIN PASSWORD '$pw'" >/dev/null
    fi
    # CREATEDB: the bench scripts make a scratch database for pgbench. CREATEROLE: the
    # services run as roles of their own (fleet.sh), and tests make such roles too.
    if [[ $(infra_pg_sql "SELECT rolcreatedb AND rolcreaterole FROM pg_roles WHERE rolname = '$INFRA_DB_USER'") != t ]]; then
        infra_pg_sql "ALTER ROLE $INFRA_DB_USER CREATEDB CREATEROLE" >/dev/null
    fi
    infra_pg_role_login_ok "$pw" ||
        infra_die "role $INFRA_DB_USER cannot log in over TCP at $INFRA_HOST:$INFRA_PG_PORT (see pg_hba.conf)"
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

# PostgreSQL over verified TLS, as managed providers serve it: a local CA signs a
# server certificate for the name "localhost" (only that name, so a client that asks
# for 127.0.0.1 with sslmode=verify-full is refused, as a wrong host must be), kept in
# the data directory; the server uses it from then on (ssl is reloaded, no restart).
# Every checkout copies the CA from there, so one made later does not replace it.
# Clients that want it connect to localhost with sslmode=verify-full and
# sslrootcert=$INFRA_PG_CA (`infra.sh pg-tls-ca` prints the path); the project's own
# URLs (loopback) use sslmode=disable.
INFRA_PG_CA=$INFRA_STATE_DIR/tls/postgres-ca.crt

infra_pg_ensure_tls() {
    command -v openssl >/dev/null 2>&1 || infra_apt_install openssl
    local data dir current
    data=$(infra_pg_sql "SHOW data_directory")
    [[ -n $data ]] || return 0
    dir=$data/marketplace-tls
    current=$(infra_pg_sql "SHOW ssl_cert_file")
    if [[ $current == "$dir/server.crt" ]] && infra_as_root test -s "$dir/ca.crt"; then
        # The server has its certificate (perhaps from another checkout): this checkout
        # takes the CA from the data directory, and nobody else's copy goes stale.
        if ! { [[ -s $INFRA_PG_CA ]] && cmp -s "$INFRA_PG_CA" <(infra_as_root cat "$dir/ca.crt"); }; then
            mkdir -p "$(dirname "$INFRA_PG_CA")"
            infra_as_root cat "$dir/ca.crt" >"$INFRA_PG_CA"
        fi
        return 0
    fi
    infra_info "giving PostgreSQL a certificate for localhost from a local CA ($INFRA_PG_CA)"
    local tmp
    tmp=$(mktemp -d)
    (
        cd "$tmp"
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
            -subj "/CN=Marketplace local CA" -keyout ca.key -out ca.crt 2>/dev/null
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
            -subj "/CN=localhost" -keyout server.key -out server.csr 2>/dev/null
        printf 'subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n' >ext.cnf
        openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
            -extfile ext.cnf -out server.crt 2>/dev/null
    ) || infra_die "openssl could not make the PostgreSQL certificate"
    local owner
    owner=$(stat -c %U "$data" 2>/dev/null || echo postgres)
    infra_as_root mkdir -p "$dir"
    infra_as_root cp "$tmp/server.crt" "$tmp/server.key" "$tmp/ca.crt" "$dir/"
    infra_as_root chown -R "$owner:" "$dir"
    infra_as_root chmod 700 "$dir"
    infra_as_root chmod 600 "$dir/server.key"
    mkdir -p "$(dirname "$INFRA_PG_CA")"
    cp "$tmp/ca.crt" "$INFRA_PG_CA"
    rm -rf "$tmp"
    infra_pg_sql "ALTER SYSTEM SET ssl = on" >/dev/null
    infra_pg_sql "ALTER SYSTEM SET ssl_cert_file = '$dir/server.crt'" >/dev/null
    infra_pg_sql "ALTER SYSTEM SET ssl_key_file = '$dir/server.key'" >/dev/null
    infra_pg_sql "SELECT pg_reload_conf()" >/dev/null
}

# ------------------------------------------------------------------ RabbitMQ

# Every quorum queue keeps files open, and the test suite declares a few hundred
# (each expires two minutes after its test): with the 1024 descriptors a shell gives by
# default the node runs out and stops accepting connections.
INFRA_RABBIT_MIN_FILES=${INFRA_RABBIT_MIN_FILES:-8192}

# The most descriptors a node started from here can have: the hard limit, which root
# may raise, up to 65536.
infra_rabbit_files_possible() {
    (
        [[ $EUID -eq 0 ]] && ulimit -Hn 65536 2>/dev/null
        local hard
        hard=$(ulimit -Hn)
        [[ $hard == unlimited ]] && hard=65536
        ((hard > 65536)) && hard=65536
        echo "$hard"
    )
}

# Starts the node detached (it returns at once; the node boots in the background)
# with infra_rabbit_files_possible descriptors. Debian's /usr/sbin/rabbitmq-server
# switches to the rabbitmq user through su, whose PAM session puts the limit back to
# 1024; as root we switch with setpriv instead, which keeps it.
infra_rabbit_spawn() {
    local files inner=/usr/lib/rabbitmq/bin/rabbitmq-server
    files=$(infra_rabbit_files_possible)
    if [[ $EUID -eq 0 && -x $inner ]] && id rabbitmq >/dev/null 2>&1 && command -v setpriv >/dev/null 2>&1; then
        (cd /var/lib/rabbitmq && ulimit -Hn "$files" 2>/dev/null; ulimit -n "$files" &&
            HOME=/var/lib/rabbitmq setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups \
                "$inner" -detached)
    else
        infra_as_root bash -c "ulimit -Hn $files 2>/dev/null; ulimit -n $files 2>/dev/null; exec rabbitmq-server -detached"
    fi
}

# The running node's limit of open files, if it can be read.
infra_rabbit_files_limit() {
    local pid
    pid=$(pgrep -f 'beam.smp.*rabbit' | head -n 1) || return 1
    awk '/^Max open files/ {print $4}' "/proc/$pid/limits" 2>/dev/null
}

# A node that was started with too few descriptors (by hand, by an image's defaults) is
# restarted once with more; not one that systemd manages (its unit sets LimitNOFILE).
infra_rabbit_ensure_capacity() {
    local limit
    limit=$(infra_rabbit_files_limit) || return 0
    [[ -n $limit && $limit != unlimited ]] || return 0
    ((limit >= INFRA_RABBIT_MIN_FILES)) && return 0
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet rabbitmq-server 2>/dev/null; then
        infra_info "RabbitMQ may open only $limit files; raise LimitNOFILE of rabbitmq-server.service"
        return 0
    fi
    # A restart that cannot give it more would only cut every client off, on every
    # ensure (a test suite that runs this one mid-run among them).
    local possible
    possible=$(infra_rabbit_files_possible)
    if ((possible <= limit)); then
        infra_info "RabbitMQ may open only $limit files and cannot be given more here (hard limit $possible); quorum queues need $INFRA_RABBIT_MIN_FILES"
        return 0
    fi
    infra_info "restarting RabbitMQ with more open files (it had $limit; quorum queues need more)"
    infra_as_root timeout 120 rabbitmqctl -q stop >/dev/null 2>&1 || true
    local i
    for ((i = 0; i < 60; i++)); do
        infra_port_open "$INFRA_HOST" "$INFRA_AMQP_PORT" || break
        sleep 1
    done
    infra_rabbit_spawn
    infra_wait_port RabbitMQ "$INFRA_AMQP_PORT" 120
    if ! infra_as_root timeout 120 rabbitmqctl -q await_startup >/dev/null; then
        infra_die "RabbitMQ did not come back after the restart"
    fi
}

infra_rabbit_start() {
    infra_port_open "$INFRA_HOST" "$INFRA_AMQP_PORT" && return 0
    command -v rabbitmq-server >/dev/null 2>&1 || infra_apt_install rabbitmq-server
    # The package may have started the node already (systemd); starting a
    # second node would fail on the name clash, so only start when down.
    if ! infra_port_open "$INFRA_HOST" "$INFRA_AMQP_PORT" &&
        ! infra_try_systemctl rabbitmq-server; then
        infra_info "starting RabbitMQ"
        infra_rabbit_spawn
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
    infra_pg_ensure_role
    infra_pg_ensure_db
    infra_pg_ensure_tls
    infra_redis_start
    infra_rabbit_start
    infra_rabbit_ensure_capacity
    infra_info "PostgreSQL :$INFRA_PG_PORT (db $INFRA_DB_NAME, role $INFRA_DB_USER: DATABASE_URL in $INFRA_DB_ENV), Redis :$INFRA_REDIS_PORT, RabbitMQ :$INFRA_AMQP_PORT are up"
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
  database-url
           print the project role's DATABASE_URL (from $INFRA_DB_ENV)
EOF
}

infra_main() {
    case "${1:-}" in
    ensure) infra_ensure ;;
    status) infra_status ;;
    database-url) infra_database_url && echo ;;
    pg-tls-ca) printf '%s\n' "$INFRA_PG_CA" ;;
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

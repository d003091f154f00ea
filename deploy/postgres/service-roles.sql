-- The six services' own PostgreSQL roles and their schemas: each service logs in
-- as mp_<service> (LOGIN, no SUPERUSER, CREATEDB, CREATEROLE, REPLICATION or
-- BYPASSRLS, a member of no role), which OWNS its schema and has no right on any
-- other service's schema:
--   mp_customer -> customer      mp_inventory -> inventory
--   mp_order    -> orders        mp_vendor    -> vendor
--   mp_notification -> notification   mp_cart -> cart
-- The services then apply their own migrations into their schemas as owners
-- (`<service> migrate`, as that role), so no migration role exists.
--
-- Run as an administrator before the migrations: the PostgreSQL superuser
-- (compose: the step postgres-roles; the dev overlay: the Job
-- marketplace-migrate) or, at a managed provider, a role with CREATEROLE that
-- owns the database (the prod Job, or the operator by hand: deploy/README.md,
-- "Identity and least privilege"). Idempotent; it sets every password again each
-- time, so a new POSTGRES_<SERVICE>_PASSWORD takes effect on the next run:
--   POSTGRES_CUSTOMER_PASSWORD=... (all six) psql -X -v ON_ERROR_STOP=1 -f service-roles.sql "$ADMIN_URL"
--
-- A schema that exists already (an older deployment, where every service logged
-- in as one shared role) is handed over: the schema and every table, view,
-- sequence, routine and type in it are given to the service's role.
\set ON_ERROR_STOP on
\set QUIET on
\getenv pw_customer POSTGRES_CUSTOMER_PASSWORD
\getenv pw_order POSTGRES_ORDER_PASSWORD
\getenv pw_notification POSTGRES_NOTIFICATION_PASSWORD
\getenv pw_inventory POSTGRES_INVENTORY_PASSWORD
\getenv pw_vendor POSTGRES_VENDOR_PASSWORD
\getenv pw_cart POSTGRES_CART_PASSWORD
\if :{?pw_customer}
\else
\set pw_customer ''
\endif
\if :{?pw_order}
\else
\set pw_order ''
\endif
\if :{?pw_notification}
\else
\set pw_notification ''
\endif
\if :{?pw_inventory}
\else
\set pw_inventory ''
\endif
\if :{?pw_vendor}
\else
\set pw_vendor ''
\endif
\if :{?pw_cart}
\else
\set pw_cart ''
\endif

-- The services, their schemas and roles, for this session only.
CREATE TEMP TABLE mp_service_roles (service text, schema_name text, role_name text, password text);
INSERT INTO mp_service_roles VALUES
    ('customer', 'customer', 'mp_customer', :'pw_customer'),
    ('order', 'orders', 'mp_order', :'pw_order'),
    ('notification', 'notification', 'mp_notification', :'pw_notification'),
    ('inventory', 'inventory', 'mp_inventory', :'pw_inventory'),
    ('vendor', 'vendor', 'mp_vendor', :'pw_vendor'),
    ('cart', 'cart', 'mp_cart', :'pw_cart');

SELECT string_agg('POSTGRES_' || upper(service) || '_PASSWORD', ', ') AS missing
FROM mp_service_roles WHERE password = '' \gset
\if :{?missing}
\echo 'service-roles: not set:' :missing '(scripts/deploy-secrets.sh adds them to secrets.env)'
DO $$ BEGIN RAISE EXCEPTION 'service-roles: a password is missing; nothing changed'; END $$;
\endif

SELECT current_database() AS db, rolsuper AS is_superuser FROM pg_roles WHERE rolname = current_user \gset

-- The roles. A non-superuser administrator may not name SUPERUSER, REPLICATION
-- or BYPASSRLS at all (it cannot grant them either); the check below proves the
-- roles hold none of them.
SELECT format('CREATE ROLE %I', role_name) FROM mp_service_roles
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = role_name) \gexec
\if :is_superuser
SELECT format('ALTER ROLE %I WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS NOINHERIT PASSWORD %L',
              role_name, password) FROM mp_service_roles \gexec
\else
SELECT format('ALTER ROLE %I WITH LOGIN NOCREATEROLE NOINHERIT PASSWORD %L', role_name, password)
FROM mp_service_roles \gexec
-- A non-superuser hands a schema over (and creates one for a role) only as a
-- member of that role (PostgreSQL 16: it may SET ROLE to it).
SELECT format('GRANT %I TO %I', role_name, current_user) FROM mp_service_roles
WHERE NOT pg_has_role(current_user, role_name, 'MEMBER') \gexec
\endif
SELECT format('ALTER ROLE %I SET search_path = %I', role_name, schema_name) FROM mp_service_roles \gexec
-- A member of no other role: nothing inherited, nothing to SET ROLE to.
SELECT format('REVOKE %I FROM %I', g.rolname, m.rolname)
FROM mp_service_roles s JOIN pg_roles m ON m.rolname = s.role_name
JOIN pg_auth_members am ON am.member = m.oid JOIN pg_roles g ON g.oid = am.roleid \gexec
SELECT format('GRANT CONNECT ON DATABASE %I TO %I', :'db', role_name) FROM mp_service_roles \gexec
-- Nobody creates objects in public (PostgreSQL 15 and later grant it to no one;
-- older versions to everybody).
REVOKE CREATE ON SCHEMA public FROM PUBLIC;

-- The schemas: made for the role, or handed over to it.
DO $$
DECLARE
    s record;
    o record;
    nsp oid;
    owner regrole;
    is_super boolean := (SELECT rolsuper FROM pg_roles WHERE rolname = current_user);
BEGIN
    FOR s IN SELECT schema_name, role_name FROM mp_service_roles ORDER BY service LOOP
        owner := s.role_name::regrole;
        SELECT oid INTO nsp FROM pg_namespace WHERE nspname = s.schema_name;
        IF nsp IS NULL THEN
            EXECUTE format('CREATE SCHEMA %I AUTHORIZATION %I', s.schema_name, s.role_name);
            RAISE NOTICE 'service-roles: schema % created for %', s.schema_name, s.role_name;
            CONTINUE;
        END IF;
        IF (SELECT nspowner FROM pg_namespace WHERE oid = nsp) <> owner THEN
            -- A non-superuser may give a schema only to a role that may create
            -- in the database; that right is taken back at once.
            IF NOT is_super THEN
                EXECUTE format('GRANT CREATE ON DATABASE %I TO %I', current_database(), s.role_name);
            END IF;
            EXECUTE format('ALTER SCHEMA %I OWNER TO %I', s.schema_name, s.role_name);
            IF NOT is_super THEN
                EXECUTE format('REVOKE CREATE ON DATABASE %I FROM %I', current_database(), s.role_name);
            END IF;
            RAISE NOTICE 'service-roles: schema % handed over to %', s.schema_name, s.role_name;
        END IF;
        -- Tables (their indexes, and the sequences of their serial and identity
        -- columns, move with them), views, materialized views, foreign tables.
        FOR o IN SELECT c.oid::regclass AS name, c.relkind FROM pg_class c
                 WHERE c.relnamespace = nsp AND c.relkind IN ('r', 'p', 'v', 'm', 'f') AND c.relowner <> owner LOOP
            EXECUTE format('ALTER %s %s OWNER TO %I',
                           CASE o.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                                          WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END, o.name, s.role_name);
        END LOOP;
        -- Sequences of their own (the others changed with their tables above).
        FOR o IN SELECT c.oid::regclass AS name FROM pg_class c
                 WHERE c.relnamespace = nsp AND c.relkind = 'S' AND c.relowner <> owner LOOP
            EXECUTE format('ALTER SEQUENCE %s OWNER TO %I', o.name, s.role_name);
        END LOOP;
        -- Functions, procedures and aggregates.
        FOR o IN SELECT p.oid::regprocedure AS name FROM pg_proc p
                 WHERE p.pronamespace = nsp AND p.proowner <> owner LOOP
            EXECUTE format('ALTER ROUTINE %s OWNER TO %I', o.name, s.role_name);
        END LOOP;
        -- Types of their own: enums, domains, ranges and their multiranges,
        -- composite types (not a table's row type or an array: those follow).
        FOR o IN SELECT t.oid::regtype AS name, t.typtype FROM pg_type t
                 WHERE t.typnamespace = nsp AND t.typowner <> owner
                   AND (t.typrelid = 0 OR (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c')
                   AND NOT EXISTS (SELECT FROM pg_type e WHERE e.typarray = t.oid) LOOP
            EXECUTE format('ALTER %s %s OWNER TO %I', CASE o.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END,
                           o.name, s.role_name);
        END LOOP;
    END LOOP;
END
$$;

-- No role of a service keeps a right on another service's schema or its objects.
SELECT format('REVOKE ALL ON SCHEMA %1$I FROM %2$I; REVOKE ALL ON ALL TABLES IN SCHEMA %1$I FROM %2$I; '
              'REVOKE ALL ON ALL SEQUENCES IN SCHEMA %1$I FROM %2$I; REVOKE ALL ON ALL ROUTINES IN SCHEMA %1$I FROM %2$I',
              other.schema_name, r.role_name)
FROM mp_service_roles r JOIN mp_service_roles other ON other.service <> r.service \gexec

-- Prove it: every role logs in, holds no administrative attribute, owns its
-- schema and everything in it, and may neither use nor create in another's.
DO $$
DECLARE
    problems text;
BEGIN
    SELECT string_agg(p, '; ') INTO problems FROM (
        SELECT format('%s: %s', r.rolname, concat_ws(', ',
                   CASE WHEN NOT r.rolcanlogin THEN 'cannot log in' END,
                   CASE WHEN r.rolsuper THEN 'SUPERUSER' END, CASE WHEN r.rolcreaterole THEN 'CREATEROLE' END,
                   CASE WHEN r.rolcreatedb THEN 'CREATEDB' END, CASE WHEN r.rolreplication THEN 'REPLICATION' END,
                   CASE WHEN r.rolbypassrls THEN 'BYPASSRLS' END)) AS p
        FROM pg_roles r JOIN mp_service_roles s ON s.role_name = r.rolname
        WHERE NOT r.rolcanlogin OR r.rolsuper OR r.rolcreaterole OR r.rolcreatedb OR r.rolreplication OR r.rolbypassrls
        UNION ALL
        SELECT format('%s is a member of %s', s.role_name, g.rolname)
        FROM mp_service_roles s JOIN pg_auth_members am ON am.member = s.role_name::regrole
        JOIN pg_roles g ON g.oid = am.roleid
        UNION ALL
        SELECT format('schema %s belongs to %s, not %s', n.nspname, n.nspowner::regrole, s.role_name)
        FROM mp_service_roles s JOIN pg_namespace n ON n.nspname = s.schema_name
        WHERE n.nspowner <> s.role_name::regrole
        UNION ALL
        SELECT format('%s in schema %s belongs to %s, not %s', c.oid::regclass, s.schema_name, c.relowner::regrole,
                      s.role_name)
        FROM mp_service_roles s JOIN pg_class c ON c.relnamespace = s.schema_name::regnamespace
        WHERE c.relowner <> s.role_name::regrole
        UNION ALL
        SELECT format('routine %s in schema %s belongs to %s, not %s', p.oid::regprocedure, s.schema_name,
                      p.proowner::regrole, s.role_name)
        FROM mp_service_roles s JOIN pg_proc p ON p.pronamespace = s.schema_name::regnamespace
        WHERE p.proowner <> s.role_name::regrole
        UNION ALL
        SELECT format('type %s in schema %s belongs to %s, not %s', t.oid::regtype, s.schema_name,
                      t.typowner::regrole, s.role_name)
        FROM mp_service_roles s JOIN pg_type t ON t.typnamespace = s.schema_name::regnamespace
        WHERE t.typowner <> s.role_name::regrole
        UNION ALL
        SELECT format('%s may %s in schema %s', r.role_name, priv, other.schema_name)
        FROM mp_service_roles r JOIN mp_service_roles other ON other.service <> r.service,
             unnest(ARRAY['USAGE', 'CREATE']) AS priv
        WHERE has_schema_privilege(r.role_name, other.schema_name, priv)
    ) found;
    IF problems IS NOT NULL THEN
        RAISE EXCEPTION 'service-roles: %', problems;
    END IF;
END
$$;
\echo 'service-roles: mp_customer, mp_order, mp_notification, mp_inventory, mp_vendor and mp_cart own their schemas and nothing else'

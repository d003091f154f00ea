-- mp_grafana: the read-only role Grafana's PostgreSQL data source logs in as
-- (deploy/grafana/provisioning/datasources/marketplace.yml). SELECT on the tables
-- the dashboards query (deploy/grafana/generate.py: the revenue panel reads
-- orders.orders) and nothing else; read-only transactions, a statement timeout.
-- scripts/test-deploy.sh fails when the grants and the dashboards' tables differ.
--
-- Run after the migrations (the tables must exist), as the administrator that ran
-- service-roles.sql: orders.orders belongs to the order service's role mp_order,
-- so only a superuser or a member of mp_order may grant on it (that script makes
-- a non-superuser administrator one);
-- idempotent, and it sets the password again each time (so a new
-- GRAFANA_DB_PASSWORD takes effect on the next run):
--   GRAFANA_DB_PASSWORD=... psql -v ON_ERROR_STOP=1 -f grafana-role.sql "$ADMIN_URL"
-- compose: the step grafana-role; Kubernetes: the Job marketplace-migrate.
-- Without GRAFANA_DB_PASSWORD it changes nothing and says so.
\getenv grafana_password GRAFANA_DB_PASSWORD
\if :{?grafana_password}
\else
\set grafana_password ''
\endif
SELECT length(:'grafana_password') = 0 AS no_password, current_database() AS db,
       (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) AS run_as_super \gset
\if :no_password
\echo 'grafana-role: GRAFANA_DB_PASSWORD is not set: mp_grafana left as it is'
\quit
\endif

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'mp_grafana') THEN
        CREATE ROLE mp_grafana;
    END IF;
END
$$;
-- A non-superuser administrator (a managed provider's) may not even name the
-- SUPERUSER, REPLICATION, BYPASSRLS or CREATEDB attributes; a role it creates has
-- none of them, and the check below proves it.
\if :run_as_super
ALTER ROLE mp_grafana WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS
    CONNECTION LIMIT 10 PASSWORD :'grafana_password';
\else
ALTER ROLE mp_grafana WITH LOGIN NOCREATEROLE NOINHERIT CONNECTION LIMIT 10 PASSWORD :'grafana_password';
\endif
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'mp_grafana'
               AND (rolsuper OR rolcreatedb OR rolcreaterole OR rolreplication OR rolbypassrls)) THEN
        RAISE EXCEPTION 'grafana-role: mp_grafana holds an administrative attribute: take it away by hand';
    END IF;
END
$$;
ALTER ROLE mp_grafana SET default_transaction_read_only = on;
ALTER ROLE mp_grafana SET statement_timeout = '30s';

GRANT CONNECT ON DATABASE :"db" TO mp_grafana;
GRANT USAGE ON SCHEMA orders TO mp_grafana;
GRANT SELECT ON orders.orders TO mp_grafana;
\echo 'grafana-role: mp_grafana may read orders.orders'

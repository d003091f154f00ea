-- mp_grafana: the read-only role Grafana's PostgreSQL data source logs in as
-- (deploy/grafana/provisioning/datasources/marketplace.yml). SELECT on the tables
-- the dashboards query (deploy/grafana/generate.py: the revenue panel reads
-- orders.orders) and nothing else; read-only transactions, a statement timeout.
-- scripts/test-deploy.sh fails when the grants and the dashboards' tables differ.
--
-- Run after the migrations (the tables must exist), as the database's owner;
-- idempotent, and it sets the password again each time (so a new
-- GRAFANA_DB_PASSWORD takes effect on the next run):
--   GRAFANA_DB_PASSWORD=... psql -v ON_ERROR_STOP=1 -f grafana-role.sql "$DATABASE_URL"
-- compose: the step grafana-role; Kubernetes: the Job marketplace-migrate.
-- Without GRAFANA_DB_PASSWORD it changes nothing and says so.
\getenv grafana_password GRAFANA_DB_PASSWORD
\if :{?grafana_password}
\else
\set grafana_password ''
\endif
SELECT length(:'grafana_password') = 0 AS no_password, current_database() AS db \gset
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
ALTER ROLE mp_grafana WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS
    CONNECTION LIMIT 10 PASSWORD :'grafana_password';
ALTER ROLE mp_grafana SET default_transaction_read_only = on;
ALTER ROLE mp_grafana SET statement_timeout = '30s';

GRANT CONNECT ON DATABASE :"db" TO mp_grafana;
GRANT USAGE ON SCHEMA orders TO mp_grafana;
GRANT SELECT ON orders.orders TO mp_grafana;
\echo 'grafana-role: mp_grafana may read orders.orders'

-- sql/0001_init.sql — the first migration: tenants.
--
-- Conventions for every migration (applied in order by ops/migrate.sh, each in one transaction
-- together with its schema_migrations row; never edit a migration that has landed, add the next):
--   * Files are sql/NNNN_what.sql; NNNN is the version recorded in schema_migrations.
--   * Every table after this one leads with tenant_id (bigint NOT NULL REFERENCES tenants), and
--     its primary key and indexes start with tenant_id, so the schema can later be partitioned /
--     distributed by tenant (Citus) and a query of one tenant never scans another's rows.
--   * Ids are bigint identity columns; times are timestamptz (UTC); names are snake_case.
--   * No transaction control (BEGIN/COMMIT) inside a file: migrate.sh wraps it.

CREATE TABLE tenants (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Outgoing webhooks: each tenant may name one URL of its own application; every inbox event is POSTed there in
-- cursor order, signed with the tenant's secret (sealed like channel credentials). webhook_cursor is the last event
-- the application acknowledged: delivery resumes from it after a restart. Events older than webhook_max_age that
-- could not be delivered are moved to webhook_dead_letters, and delivery goes on.
ALTER TABLE tenants
    ADD COLUMN webhook_url            text,
    ADD COLUMN webhook_secret_sealed  text,
    ADD COLUMN webhook_cursor         bigint NOT NULL DEFAULT 0;

CREATE TABLE webhook_dead_letters (
    tenant_id  bigint NOT NULL REFERENCES tenants (id),
    cursor     bigint NOT NULL,
    type       text NOT NULL,
    data       jsonb NOT NULL,
    error      text,
    at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, cursor)
);

-- Voice: calls, and the tenant's cap on concurrent calls.
--
-- A call is written by its call actor (actors/call) through the tenant actor's write, with its events, so a call's
-- row and its call.* events commit together. Its id comes from the same id blocks as messages (sql/0011), so the
-- actor knows it before the row exists. call_key is what the call actor is found by: the CallSid for a call that
-- came in, "SB" and a random number for one we place (Twilio names it only once it is created).
ALTER TABLE tenants ADD COLUMN max_concurrent_calls integer CHECK (max_concurrent_calls >= 0);

CREATE TABLE calls (
    tenant_id       bigint NOT NULL,
    id              bigint NOT NULL,
    channel_id      bigint NOT NULL,
    call_key        text NOT NULL,
    call_sid        text,
    direction       text NOT NULL CHECK (direction IN ('in', 'out')),
    from_addr       text NOT NULL,
    to_addr         text NOT NULL,
    status          text NOT NULL,
    voice_mode      text,
    rejected_cap    text CHECK (rejected_cap IN ('fleet', 'tenant', 'channel')),
    duration_s      integer,
    ended_by        text,
    end_reason      text,
    idempotency_key text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    answered_at     timestamptz,
    ended_at        timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, channel_id) REFERENCES channels (tenant_id, id)
);
CREATE UNIQUE INDEX calls_key ON calls (channel_id, call_key);
CREATE UNIQUE INDEX calls_idempotency ON calls (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX calls_tenant ON calls (tenant_id, id DESC);
CREATE INDEX calls_live ON calls (tenant_id) WHERE ended_at IS NULL;

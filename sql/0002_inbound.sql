-- 0002_inbound.sql — tenancy, channels and the inbound path (issue: provider webhooks to the live inbox).
--
-- Conventions (see 0001): every tenant-owned table leads its primary key with tenant_id, so it can be distributed
-- by tenant (Citus) and every query a tenant makes is a single-shard query. A unique constraint on a distributed
-- table must include the distribution column, so the few lookups that are global by nature (which channel owns
-- this provider address, which tenant owns this channel id) go through small routing tables instead.
--
-- Secrets: provider credentials and Meta app secrets are stored sealed (AES-256-GCM under master_key, base64; see
-- adapters/crypto); API keys only as SHA-256 hex. Nothing here holds a secret in clear.

-- Inbox cursor: the last cursor handed out for the tenant's event log (the session actors advance it).
ALTER TABLE tenants ADD COLUMN inbox_cursor bigint NOT NULL DEFAULT 0;

CREATE TABLE api_keys (
    tenant_id   bigint NOT NULL REFERENCES tenants (id),
    id          bigint GENERATED ALWAYS AS IDENTITY,
    prefix      text NOT NULL,                 -- the first characters of the key, for people to recognise it
    key_hash    text NOT NULL,                 -- lower-case hex SHA-256 of the whole key
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz,
    PRIMARY KEY (tenant_id, id)
);
-- Authentication looks a key up by its hash alone (routing table: global by nature).
CREATE TABLE api_key_routes (
    key_hash    text PRIMARY KEY,
    tenant_id   bigint NOT NULL,
    key_id      bigint NOT NULL
);

-- A Meta app is platform-wide: Meta posts all of an app's events to one URL.
CREATE TABLE meta_apps (
    app_id              text PRIMARY KEY,
    app_secret_sealed   text NOT NULL,
    verify_token_hash   text NOT NULL,         -- SHA-256 hex; the GET challenge compares hashes
    created_at          timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE channels (
    tenant_id           bigint NOT NULL REFERENCES tenants (id),
    id                  bigint GENERATED ALWAYS AS IDENTITY,
    type                text NOT NULL CHECK (type IN ('twilio_sms', 'twilio_whatsapp', 'twilio_voice',
                                                      'meta_whatsapp', 'meta_messenger', 'meta_instagram',
                                                      'linked')),
    address             text NOT NULL,          -- E.164 number, phone_number_id, page id, IG account id
    credentials_sealed  text,                   -- sealed JSON: {"account_sid","auth_token"} / {"access_token"}
    settings            jsonb NOT NULL DEFAULT '{}',
    meta_app_id         text REFERENCES meta_apps (app_id),
    created_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);
-- Webhook URLs carry the channel id; Meta payloads carry the provider address.
CREATE TABLE channel_routes (
    channel_id  bigint PRIMARY KEY,
    tenant_id   bigint NOT NULL,
    type        text NOT NULL,
    address     text NOT NULL,
    UNIQUE (type, address)                      -- one channel per provider address
);

CREATE TABLE contacts (
    tenant_id     bigint NOT NULL REFERENCES tenants (id),
    id            bigint GENERATED ALWAYS AS IDENTITY,
    channel_id    bigint NOT NULL,
    address       text NOT NULL,                -- the customer's number / WhatsApp id / PSID / IGSID
    profile_name  text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, channel_id, address),
    FOREIGN KEY (tenant_id, channel_id) REFERENCES channels (tenant_id, id)
);

CREATE TABLE conversations (
    tenant_id        bigint NOT NULL REFERENCES tenants (id),
    id               bigint GENERATED ALWAYS AS IDENTITY,
    channel_id       bigint NOT NULL,
    contact_id       bigint NOT NULL,
    last_seq         bigint NOT NULL DEFAULT 0,  -- order of messages inside the conversation
    last_message_at  timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, channel_id, contact_id),
    FOREIGN KEY (tenant_id, contact_id) REFERENCES contacts (tenant_id, id)
);
CREATE INDEX conversations_recent ON conversations (tenant_id, last_message_at DESC NULLS LAST, id DESC);

CREATE TABLE messages (
    tenant_id        bigint NOT NULL REFERENCES tenants (id),
    id               bigint GENERATED ALWAYS AS IDENTITY,
    conversation_id  bigint NOT NULL,
    channel_id       bigint NOT NULL,
    seq              bigint NOT NULL,            -- position in the conversation
    direction        text NOT NULL CHECK (direction IN ('in', 'out')),
    sender           text NOT NULL,
    recipient        text NOT NULL,
    body             text NOT NULL DEFAULT '',
    media            jsonb NOT NULL DEFAULT '[]',
    provider_id      text,                       -- MessageSid / wamid / mid (NULL until an outbound one is sent)
    status           text NOT NULL,
    error_code       text,
    error_message    text,
    idempotency_key  text,                       -- outbound: the client's key
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, channel_id, provider_id), -- a provider id is stored once (NULLs never collide)
    UNIQUE (tenant_id, conversation_id, seq),
    UNIQUE (tenant_id, idempotency_key),
    FOREIGN KEY (tenant_id, conversation_id) REFERENCES conversations (tenant_id, id)
);

CREATE TABLE message_status_history (
    tenant_id      bigint NOT NULL,
    message_id     bigint NOT NULL,
    status         text NOT NULL,
    error_code     text,
    error_message  text,
    at             timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, message_id, at, status),
    FOREIGN KEY (tenant_id, message_id) REFERENCES messages (tenant_id, id)
);

-- The tenant's inbox event log: what the live inbox streams and GET /v1/events reads. The cursor is per tenant
-- and strictly increasing; a client resumes with the last cursor it saw.
CREATE TABLE inbox_events (
    tenant_id   bigint NOT NULL REFERENCES tenants (id),
    cursor      bigint NOT NULL,
    type        text NOT NULL,                   -- message.created, message.status, conversation.updated, call.*
    data        jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, cursor)
);

-- Raw webhook receipts: committed before the provider gets its 200. processed_at stays NULL until the session actor
-- has routed the event; the sweeper re-routes what a crash left behind. dedup_key makes a repeated delivery a no-op
-- across shards and nodes ("msg:<id>" for a message; "status:<id>:<status>" for a status callback, since one
-- message has many).
CREATE TABLE webhook_receipts (
    tenant_id     bigint NOT NULL REFERENCES tenants (id),
    id            bigint GENERATED ALWAYS AS IDENTITY,
    channel_id    bigint NOT NULL,
    dedup_key     text NOT NULL,
    event         jsonb NOT NULL,                -- the normalized event
    raw           text NOT NULL,                 -- the body exactly as received
    received_at   timestamptz NOT NULL DEFAULT now(),
    processed_at  timestamptz,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, channel_id, dedup_key)
);
CREATE INDEX webhook_receipts_unprocessed ON webhook_receipts (received_at) WHERE processed_at IS NULL;

-- 0015_outbound_lanes.sql — what an outbound message carries for lanes, schedules, broadcasts and fallback (issue 16).
--
--   priority      the lane it waits in on its channel: interactive (an agent's reply), normal (the REST default),
--                 bulk (broadcasts); lanes share the channel's pace and caps, interactive first;
--   send_at       not before this time (status 'scheduled' until then; NULL: at once);
--   broadcast_id  the broadcast it is one recipient's message of (broadcasts below);
--   fallback      the channels still to try, in order, if this one fails for good or is not delivered in time:
--                 {"channels": [channel id, ...], "after_s": N};
--   fallback_of   the message this one is the fallback of (that one's fallback_to names this one).
ALTER TABLE messages
    ADD COLUMN priority      text NOT NULL DEFAULT 'normal',
    ADD COLUMN send_at       timestamptz,
    ADD COLUMN broadcast_id  bigint,
    ADD COLUMN fallback      jsonb,
    ADD COLUMN fallback_of   bigint,
    ADD COLUMN fallback_to   bigint;
-- Every existing row has the default: the check need not scan a large table under its lock.
ALTER TABLE messages ADD CONSTRAINT messages_priority CHECK (priority IN ('interactive', 'normal', 'bulk')) NOT VALID;

-- A broadcast: one content to many recipients of one channel, each recipient a message of its own (bulk lane).
-- status: accepting (its recipients are being written), active, canceled, done.
CREATE TABLE broadcasts (
    tenant_id        bigint NOT NULL REFERENCES tenants (id),
    id               bigint GENERATED ALWAYS AS IDENTITY,
    channel_id       bigint NOT NULL,
    body             text,
    template         jsonb,
    send_at          timestamptz,
    status           text NOT NULL DEFAULT 'accepting',
    recipients       integer NOT NULL DEFAULT 0,
    idempotency_key  text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);
CREATE UNIQUE INDEX broadcasts_idempotency ON broadcasts (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX messages_broadcast ON messages (tenant_id, broadcast_id, status) WHERE broadcast_id IS NOT NULL;

-- Outbound: the outbox is the messages table. An outbound message is accepted with status 'queued' (and its
-- client's idempotency key, unique per tenant); the channel's session actor takes queued messages in order.
-- template holds a template send as given ({"name","language","components"}); attempts and next_attempt_at are the
-- sender's retry bookkeeping.
ALTER TABLE messages
    ADD COLUMN template         jsonb,
    ADD COLUMN attempts         integer NOT NULL DEFAULT 0,
    ADD COLUMN next_attempt_at  timestamptz;

CREATE INDEX messages_outbox ON messages (tenant_id, channel_id, id)
    WHERE direction = 'out' AND status IN ('queued', 'retrying');

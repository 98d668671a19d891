-- 0011_actors_own_the_domain.sql — the actors hold the hot state; the database takes appends.
--
-- Until now every inbound message read and rewrote hot rows: the tenant's row (inbox_cursor), its contact
-- (updated_at) and its conversation (last_seq, last_message_at), and each event was a row of its own. The tenant and
-- session actors now own the cursor and the conversation sequence in memory (loaded at activation), so:
--
--   * events are appended a page at a time: one row holds the events of one write of a tenant, cursors first_cursor
--     .. last_cursor, as a JSON array of {"type","data"} in cursor order (json, not jsonb: the text is stored and
--     read back as it was written, no parsing on the way in). The newest cursor of a tenant is the last_cursor of its
--     newest page: tenants.inbox_cursor goes;
--   * conversations lose last_seq and last_message_at (and the index on them that nothing read): both are the
--     newest message's, which the unique (tenant_id, conversation_id, seq) index finds in one descent;
--   * messages take their ids from the session (a block of 1024 reserved at a time per shard: the identity now
--     steps by 1024) and their created_at from the actor, so the event it publishes says what the row says;
--   * the outbox becomes a table of its own (one row per message not yet finished), so a status change no longer
--     moves a message in and out of a partial index: an update that touches no indexed column stays HOT (a page
--     kept 20% free for it);
--   * receipts: marking one processed was never HOT (processed_at was in the predicate of the partial index of
--     unprocessed receipts). The sweeper now reads from a low-water mark (sweep_marks: every receipt below it is
--     processed) over a BRIN index on id, ids being handed out in arrival order; the update stays HOT in pages
--     kept half free for it.
--
-- Existing events move into pages of one event each; their cursors do not change.

CREATE TABLE event_pages (
    tenant_id     bigint NOT NULL,
    first_cursor  bigint NOT NULL,
    last_cursor   bigint NOT NULL,
    events        json NOT NULL,           -- [{"type","data"}, ...], cursors first_cursor .. last_cursor
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, last_cursor),
    CHECK (last_cursor >= first_cursor)
);
INSERT INTO event_pages (tenant_id, first_cursor, last_cursor, events, created_at)
SELECT tenant_id, cursor, cursor, json_build_array(json_build_object('type', type, 'data', data)), created_at
FROM inbox_events;
DROP TABLE inbox_events;
ALTER TABLE tenants DROP COLUMN inbox_cursor;

DROP INDEX conversations_recent;
ALTER TABLE conversations DROP COLUMN last_seq, DROP COLUMN last_message_at;

ALTER TABLE messages ALTER COLUMN id SET INCREMENT BY 1024;
ALTER TABLE messages SET (fillfactor = 80);
DROP INDEX messages_outbox;
DROP INDEX messages_sending;
-- Only outbound messages have keys: inbound ones no longer carry a NULL entry in the index.
ALTER TABLE messages DROP CONSTRAINT messages_tenant_id_idempotency_key_key;
CREATE UNIQUE INDEX messages_idempotency ON messages (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL;

CREATE TABLE outbox (
    tenant_id   bigint NOT NULL,
    channel_id  bigint NOT NULL,
    message_id  bigint NOT NULL,
    PRIMARY KEY (tenant_id, channel_id, message_id)
);
INSERT INTO outbox (tenant_id, channel_id, message_id)
SELECT tenant_id, channel_id, id FROM messages
WHERE direction = 'out' AND status IN ('queued', 'retrying', 'sending');

DROP INDEX webhook_receipts_pending;
ALTER TABLE webhook_receipts SET (fillfactor = 50);
CREATE INDEX webhook_receipts_ids ON webhook_receipts USING brin (id);
CREATE TABLE sweep_marks (
    name  text PRIMARY KEY,
    low   bigint NOT NULL                  -- every receipt with a smaller id is processed
);
INSERT INTO sweep_marks (name, low)
SELECT 'receipts', coalesce(min(id), (SELECT coalesce(max(id), 0) + 1 FROM webhook_receipts))
FROM webhook_receipts WHERE processed_at IS NULL;

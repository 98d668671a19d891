-- The partial index of unprocessed receipts was keyed by received_at, for the sweeper. The apply's generic plan
-- used it to find one receipt by (tenant_id, id) too, scanning every unprocessed entry (and the dead ones not yet
-- vacuumed): under load each apply cost grew with the backlog, which grew with the cost. Keyed by (tenant_id, id)
-- the apply finds its receipt in one descent; the sweeper sorts the (normally tiny) set by received_at itself.
DROP INDEX webhook_receipts_unprocessed;
CREATE INDEX webhook_receipts_unprocessed ON webhook_receipts (tenant_id, id) WHERE processed_at IS NULL;

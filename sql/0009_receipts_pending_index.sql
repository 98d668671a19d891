-- One partial index of unprocessed receipts, by id, instead of two.
--
-- 0004's (tenant_id, id) served the lone-receipt apply; 0008's (received_at) served the sweeper. Every receipt paid
-- for both at insert, on the ingest connection that holds its webhook's 200 until COMMIT. By id alone serves both:
-- the apply looks a receipt up by id, and ids come from one sequence in the order receipts arrive, so the sweeper's
-- "oldest first" is ORDER BY id. The one index left must be the one the apply can probe: with 0004's dropped and
-- 0008's kept (tried first), the lone apply's generic plan, made while few receipts waited, chose 0008's index and
-- filtered it whole for tenant and id, which under a backlog costs the length of the backlog per apply.
DROP INDEX IF EXISTS webhook_receipts_unprocessed;
DROP INDEX IF EXISTS webhook_receipts_sweep;
CREATE INDEX webhook_receipts_pending ON webhook_receipts (id) WHERE processed_at IS NULL;

-- The receipt sweeper asks every 5 s for the oldest unprocessed receipts (ORDER BY received_at LIMIT 1000). Since
-- 0004 keyed the partial index of unprocessed receipts by (tenant_id, id) for the apply, nothing served that order:
-- the planner scanned the whole table and sorted, 250 ms on an idle table of 350,000 receipts and about 1 s during
-- the webhook benchmark (pg_stat_statements), on shard 0's connection, whose applies wait behind it. A second
-- partial index, by received_at, lets the sweeper read only the head of the backlog. It holds only unprocessed
-- receipts, so it stays small; the update that marks a receipt processed was never HOT (processed_at is in the
-- other partial index's predicate), so it costs that update nothing new beyond removing an entry later on vacuum.
CREATE INDEX webhook_receipts_sweep ON webhook_receipts (received_at) WHERE processed_at IS NULL;

-- The outbox sweeper looks every 5 s for messages left in 'sending' by a crash. Without an index that was a scan
-- of every message: 50-370 ms (pg_stat_statements, after a benchmark) on shard 0's connection, whose pipeline
-- waits behind it, so every request of that shard saw the pause. A partial index holds only the sends in flight.
-- It costs nothing on updates that were HOT before: status appears in messages_outbox's predicate already, so a
-- status change never was one.
CREATE INDEX messages_sending ON messages (updated_at) WHERE direction = 'out' AND status = 'sending';

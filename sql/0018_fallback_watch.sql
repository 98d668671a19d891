-- 0018_fallback_watch.sql — when a message's fallback is due (issue 16, fallback channels).
--
-- A message sent with a fallback list ("fallback": [{"channel_id"}, ...]) is watched after its send is over: its
-- fallback is due at once when it failed for good (failed, dead; a later failed/undelivered status callback makes it
-- due at once too), and fallback_after seconds after it was sent (sent, unknown) unless a delivered or read status
-- arrives first. fallback_due_at holds that deadline while the fallback may still fire; it is cleared in the same
-- statement that records the fallback (fallback_to, sql/0015), or that brings delivered/read, or when no channel
-- of the list took the message.
--
-- Why a column and not the outbox: a message that was sent is finished for its session's lanes (the outbox is what
-- is still to be sent, and what the lanes, schedules, broadcasts, console and /metrics count as waiting); a watched
-- one only waits for news. Why not a table of its own (as the outbox is): the deadline is set and cleared by the
-- same status changes that already update the message row (one UPDATE, no insert and delete of another table in
-- the same statement, which a data-modifying CTE could not see). The partial index holds only the messages being
-- watched: what a session loads at activation and what the start-up backlog wakes; updates of messages without a
-- fallback do not change the column, so they stay HOT.
ALTER TABLE messages ADD COLUMN fallback_due_at timestamptz;
CREATE INDEX messages_fallback_due ON messages (tenant_id, channel_id) WHERE fallback_due_at IS NOT NULL;

-- 0017_scheduled_sends.sql — finding the scheduled sends that fall due soon (issue 16, scheduled sends).
--
-- A channel's session holds its scheduled messages while it is active, but it may be passivated when the earliest
-- of them is far off (actors/session.c); every few seconds shard 0 asks which channels have a scheduled message due
-- within the session's horizon and wakes their sessions. Only scheduled messages are in this partial index, so the
-- question reads a handful of entries however many messages the table holds; a message leaves it when it is
-- claimed, sent or canceled (status appears in messages_sending's predicate already, so no update that was HOT
-- stops being one).
CREATE INDEX messages_scheduled ON messages (send_at) INCLUDE (tenant_id, channel_id) WHERE status = 'scheduled';

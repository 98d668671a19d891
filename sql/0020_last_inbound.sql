-- 0020_last_inbound.sql — Meta's 24-hour customer-service window (issue 16): WhatsApp, Messenger and Instagram take
-- free-form messages only within 24 hours of the customer's last message. The session actor learns that time with
-- the conversation (ensure_conversations, adapters/store/store.c) and keeps it in memory after; this index makes
-- that lookup one descent whatever the conversation's outbound history (a conversation with many sends and no
-- reply would otherwise be walked back to its start). Only inbound rows enter it.
CREATE INDEX messages_last_inbound ON messages (tenant_id, conversation_id, seq) WHERE direction = 'in';

-- 0021_hot_tables_without_foreign_keys.sql — the tables the actors write in bulk lose their foreign keys.
--
-- A foreign key is checked by a query per inserted row, planned once per connection and cached for its life. On a
-- table that grew from nothing while a gateway's connections were open (a fresh install's first broadcast: 100,000
-- messages, conversations and contacts in a few seconds), that cached plan reads the referenced table by the wrong
-- index (the tenant's prefix of another one) and visits every row of the tenant per check: a broadcast's cancel
-- (100,000 history rows, each checked against messages) ran for minutes, its expansion for tens of seconds a batch.
-- The rows these keys guarded are written by the store's own statements, which make the referenced rows first (in
-- the same statement, or before it): the actors own the domain and its order (sql/0011), the database keeps the
-- journal. The keys also cost a query per message on every write.
ALTER TABLE message_status_history DROP CONSTRAINT IF EXISTS message_status_history_tenant_id_message_id_fkey;
ALTER TABLE messages DROP CONSTRAINT IF EXISTS messages_tenant_id_conversation_id_fkey;
ALTER TABLE conversations DROP CONSTRAINT IF EXISTS conversations_tenant_id_contact_id_fkey;

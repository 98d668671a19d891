-- 0023_send_intake.sql — with several nodes, a send is committed by the node that took it (issue 15, item 4).
--
-- A node of a cluster does not number a send itself: only the session of the channel, on the node that owns the
-- tenant's slot, knows the conversation. So the node that takes a send (POST /v1/messages, an inbox `send`) commits
-- it as a receipt of kind "send" (its event holds the request and the message id reserved for it), answers 202 with
-- that id, and hands it to the owner through the owner's stream, as it does a webhook's receipt; the owner's session
-- numbers and stores the message and marks the receipt processed in one transaction. What is never applied the
-- sweeper brings back, as for any receipt. These two columns find such a receipt:
--   message_id  the id the send was accepted as: GET /v1/messages/{id} and DELETE answer from the receipt while the
--               message is still on its way to its session;
--   send_key    the send's idempotency key: unique per tenant among the sends taken this way, and looked up with
--               messages.idempotency_key, so one key names one message whichever node took it.
-- Webhook receipts leave both NULL: the partial indexes hold only sends, and adding nullable columns rewrites nothing.
ALTER TABLE webhook_receipts ADD COLUMN message_id bigint, ADD COLUMN send_key text;
CREATE INDEX webhook_receipts_sends ON webhook_receipts (tenant_id, message_id) WHERE message_id IS NOT NULL;
CREATE UNIQUE INDEX webhook_receipts_send_keys ON webhook_receipts (tenant_id, send_key) WHERE send_key IS NOT NULL;

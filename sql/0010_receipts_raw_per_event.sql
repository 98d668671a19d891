-- What raw holds now. A Meta body is a batch (up to 1,000 updates, of any of the app's tenants), and every receipt
-- of it used to store the whole body: a signed 342 KB body of 1,000 messages wrote 342 MB, and each tenant's
-- receipts carried the other tenants' messages. A receipt now keeps the provider's bytes of its own event only.
COMMENT ON COLUMN webhook_receipts.raw IS
    'the provider''s bytes of this event: a Twilio body as received; for Meta, the JSON of the item (message, status '
    'or messaging object) the event came from, or '''' for the second and later events of one item (a Messenger '
    'delivery naming several messages: the first holds it)';

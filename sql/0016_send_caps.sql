-- 0016_send_caps.sql — a tenant's cap on sends under way at once, across its channels (issue 16, caps as settings).
--
--   max_concurrent_sends  provider requests in flight at once for all of the tenant's channels (NULL: the default,
--                         256; actors/session.h SB_SESSION_TENANT_MAX_SENDING). A channel's own cap and pace are
--                         channel settings (settings.max_concurrent_sends, settings.rate_per_second).
ALTER TABLE tenants ADD COLUMN max_concurrent_sends integer CHECK (max_concurrent_sends >= 1);

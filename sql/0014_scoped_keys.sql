-- 0014_scoped_keys.sql — scoped API keys, revocation and rotation, last use, per-tenant rate limits (issue 17).
--
-- A key has a role (owner, agent, readonly; README "API keys and roles"). Revoking sets revoked_at; rotating makes a
-- new key of the same role and gives the old one an expires_at (now + the overlap window): both stop authenticating
-- at once or at that time, and authentication looks at both columns, so nothing has to run when a key expires.
-- replaced_by names the key a rotation made, for people reading the list. last_used_at is written by the gateway at
-- most about once a minute per key and shard (batched), never per request.
ALTER TABLE api_keys
    ADD COLUMN role         text NOT NULL DEFAULT 'owner' CHECK (role IN ('owner', 'agent', 'readonly')),
    ADD COLUMN expires_at   timestamptz,
    ADD COLUMN last_used_at timestamptz,
    ADD COLUMN replaced_by  bigint;

-- A tenant's overrides of the default rate limits: {"rest_per_key": {"rate": 20, "burst": 100}, ...}; members absent
-- take the defaults (gateway/ratelimit.h). Read with the key on every authentication, so a change is seen by the next
-- request.
ALTER TABLE tenants ADD COLUMN rate_limits jsonb NOT NULL DEFAULT '{}';

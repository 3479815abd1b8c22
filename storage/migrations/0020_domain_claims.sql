-- A name is a tenant's once it proves it controls it (verification through DNS), not when it
-- first types it: any tenant may claim a name that no tenant has verified, and the first to
-- verify it holds it. Before, the first claim held the name whether or not it was ever
-- verified, so any tenant could keep another organisation's domain (or a subdomain of a
-- domain verified elsewhere, as a future reply domain) from the tenant that owns it.
-- The claims of one name are told apart by their DKIM keys: each claim has its own, and only
-- the tenant whose key is published verifies. Who may claim what, across the two columns, is
-- decided under a table lock (storage/account/domains.py); these indexes are its backstop.
ALTER TABLE domains DROP CONSTRAINT domains_name_key;
ALTER TABLE domains DROP CONSTRAINT domains_reply_domain_key;
CREATE UNIQUE INDEX domains_verified_name ON domains (name) WHERE verified;
CREATE UNIQUE INDEX domains_verified_reply_domain ON domains (reply_domain) WHERE verified;
-- One claim of a name per tenant.
CREATE UNIQUE INDEX domains_tenant_name ON domains (tenant_id, name);
-- Claims of a name by any tenant (the partial index above covers only the verified one).
CREATE INDEX domains_name ON domains (name);

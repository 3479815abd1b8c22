-- Conversations API: listing a tenant's contacts a page at a time, newest first, by key.
-- Contact ids are UUIDv7 (time-ordered), so (tenant_id, id DESC) is creation order; without
-- this index every page would sort all of a tenant's contacts.
CREATE INDEX contacts_tenant_id ON contacts (tenant_id, id DESC);

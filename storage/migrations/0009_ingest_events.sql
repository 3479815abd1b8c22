-- Mail that arrived through an ingester endpoint (POST /events/inbound, .../ses-s3) carries the
-- provider's event id. Providers retry until they see a 2xx, so a retry of an event already
-- stored must store nothing twice: the id is unique per tenant and source. Port 25 mail has none.
ALTER TABLE received_emails
    ADD COLUMN ingest_source text,
    ADD COLUMN ingest_event_id text,
    ADD CONSTRAINT received_ingest_event_complete
        CHECK ((ingest_source IS NULL) = (ingest_event_id IS NULL));

CREATE UNIQUE INDEX received_ingest_event
    ON received_emails (ingest_source, ingest_event_id, tenant_id)
    WHERE ingest_event_id IS NOT NULL;

COMMENT ON COLUMN received_emails.ingest_source IS
    'The ingester a message came through (inbound, ses-s3); NULL for port 25.';
COMMENT ON COLUMN received_emails.ingest_event_id IS
    'The provider''s event id; a retry of the same event is not stored twice.';

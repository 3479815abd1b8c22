-- Webhooks (issue 12): tenants' endpoints, the transactional outbox of events, one delivery per
-- (event, endpoint) with a stable id, and every attempt made.
--
-- The outbox is written by triggers, inside the statement that makes the change: an event
-- exists exactly when its change committed, whichever code path (MX, ingesters, API, group
-- commit, delivery workers) wrote it. A trigger writes nothing unless the tenant has an enabled
-- webhook subscribed to the event's type, so mail of tenants without webhooks pays one indexed
-- lookup per row. Payloads are shaped when sent (policy/webhooks/payloads.py): the outbox keeps
-- a snapshot of the columns the payload needs, taken at the change.

-- UUIDv7 (RFC 9562 section 5.7) made in SQL, for rows the triggers write: a random (v4) uuid
-- with its first 48 bits replaced by the Unix time in milliseconds and its version set to 7.
CREATE FUNCTION opensend_uuid7() RETURNS uuid LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    -- plpgsql, not sql: its expression is planned once per session, not at every call.
    RETURN encode(
        set_bit(set_bit(
            overlay(uuid_send(gen_random_uuid())
                    PLACING substring(int8send(
                        floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
                    FROM 1 FOR 6),
            52, 1), 53, 1),
        'hex')::uuid;
END
$$;

CREATE TABLE webhooks (
    id                     uuid PRIMARY KEY,
    tenant_id              uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    endpoint               text NOT NULL,
    events                 text[] NOT NULL CHECK (cardinality(events) > 0),
    status                 text NOT NULL DEFAULT 'enabled'
                           CHECK (status IN ('enabled', 'disabled')),
    -- Why it is disabled: by the tenant ('api'), or by us after failing for days ('failing').
    disabled_reason        text CHECK (disabled_reason IN ('api', 'failing')),
    -- whsec_ + base64 of random bytes: the HMAC key of Standard Webhooks signatures. It must be
    -- kept (not hashed) to sign with; no log line carries it.
    signing_secret         text NOT NULL,
    -- After a rotation the old secret also signs until previous_secret_until.
    previous_secret        text,
    previous_secret_until  timestamptz,
    -- Since when every attempt has failed (NULL after a success); disabled past 5 days.
    failing_since          timestamptz,
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhooks_tenant ON webhooks (tenant_id, id DESC);
CREATE INDEX webhooks_enabled ON webhooks (tenant_id) WHERE status = 'enabled';

-- The outbox: one row per event that at least one endpoint subscribed to when it happened.
CREATE TABLE webhook_events (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    type        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    data        jsonb NOT NULL
);

-- One per (event, endpoint). Its id is the webhook-id header, the same on every retry, so a
-- receiver can de-duplicate. No foreign key to webhooks: a message stored while its tenant
-- deletes a webhook must not fail on that key; deleting a webhook deletes its deliveries, and
-- the claim joins webhooks, so a row written in that race is never sent.
CREATE TABLE webhook_deliveries (
    id               uuid PRIMARY KEY,
    event_id         uuid NOT NULL REFERENCES webhook_events (id) ON DELETE CASCADE,
    webhook_id       uuid NOT NULL,
    tenant_id        uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    -- Resend's event statuses: pending (no attempt yet), attempting (retrying), success, failed.
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'attempting', 'success', 'failed')),
    attempts         integer NOT NULL DEFAULT 0,
    -- A claim moves next_attempt_at to the end of its lease: a worker that dies mid-POST leaves
    -- the row due again when the lease runs out, for any worker.
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    lease_until      timestamptz,
    lease_token      uuid,
    created_at       timestamptz NOT NULL DEFAULT now(),
    last_attempt_at  timestamptz,
    finished_at      timestamptz,
    UNIQUE (event_id, webhook_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (webhook_id, next_attempt_at)
    WHERE status IN ('pending', 'attempting');
CREATE INDEX webhook_deliveries_listed ON webhook_deliveries (webhook_id, id DESC);

CREATE TABLE webhook_attempts (
    id             uuid PRIMARY KEY,
    delivery_id    uuid NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    attempted_at   timestamptz NOT NULL DEFAULT now(),
    -- NULL when no HTTP answer came (refused, timed out, unsafe address).
    status_code    integer,
    latency_ms     double precision NOT NULL,
    -- The first KiB of the answer's body, as text.
    response       text NOT NULL DEFAULT '',
    error          text
);
CREATE INDEX webhook_attempts_delivery ON webhook_attempts (delivery_id, id DESC);

-- The automatic-mail work records these through storage/webhooks/events.py; email.failed too.
ALTER TABLE email_events DROP CONSTRAINT IF EXISTS email_events_type_check;
ALTER TABLE email_events ADD CONSTRAINT email_events_type_known CHECK (type IN (
    'email.sent', 'email.delivered', 'email.delivery_delayed', 'email.bounced',
    'email.scheduled', 'email.canceled', 'email.failed', 'email.suppressed',
    'email.complained'));

-- plpgsql keeps the query's plan for the session: this runs for every email event, received
-- message, domain and contact change, with or without webhooks.
CREATE FUNCTION opensend_webhook_subscribed(p_tenant uuid, p_type text) RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN EXISTS (SELECT 1 FROM webhooks
                   WHERE tenant_id = p_tenant AND status = 'enabled' AND p_type = ANY (events));
END
$$;

-- The event and one delivery per subscribed endpoint; the workers are woken at COMMIT.
CREATE FUNCTION opensend_webhook_event(p_tenant uuid, p_type text, p_data jsonb)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    new_id uuid := opensend_uuid7();
BEGIN
    INSERT INTO webhook_events (id, tenant_id, type, data) VALUES (new_id, p_tenant, p_type, p_data);
    INSERT INTO webhook_deliveries (id, event_id, webhook_id, tenant_id)
    SELECT opensend_uuid7(), new_id, w.id, p_tenant FROM webhooks w
    WHERE w.tenant_id = p_tenant AND w.status = 'enabled' AND p_type = ANY (w.events);
    PERFORM pg_notify('opensend_webhooks', '');
END
$$;

-- email.* of outbound mail: every email_events row, with the email's columns as they are now.
CREATE FUNCTION opensend_webhook_email_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF opensend_webhook_subscribed(NEW.tenant_id, NEW.type) THEN
        PERFORM opensend_webhook_event(NEW.tenant_id, NEW.type, (
            SELECT jsonb_build_object(
                'email_id', e.id, 'created_at', e.created_at,
                'from', coalesce(e.from_header, e.from_address), 'to', e.to_addresses,
                'cc', e.cc_addresses, 'bcc', e.bcc_addresses, 'subject', e.subject,
                'message_id', e.message_id, 'tags', e.tags, 'thread_id', e.thread_id,
                'recipient', NEW.recipient, 'event', NEW.data, 'event_at', NEW.created_at)
            FROM emails e WHERE e.id = NEW.email_id));
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER email_events_webhooks AFTER INSERT ON email_events
    FOR EACH ROW WHEN (NEW.type <> 'email.canceled') EXECUTE FUNCTION opensend_webhook_email_event();

-- email.received: every stored copy (MX, both ingesters, each recipient tenant). The raw
-- message and bodies stay out; they are reachable through the API.
CREATE FUNCTION opensend_webhook_received() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF opensend_webhook_subscribed(NEW.tenant_id, 'email.received') THEN
        PERFORM opensend_webhook_event(NEW.tenant_id, 'email.received', jsonb_build_object(
            'email_id', NEW.id, 'created_at', NEW.received_at, 'mail_from', NEW.mail_from,
            'rcpt_to', NEW.rcpt_to, 'from_address', NEW.from_address,
            'from_name', NEW.from_name, 'to', NEW.to_addresses, 'cc', NEW.cc_addresses,
            'reply_to', NEW.reply_to_addresses, 'message_id', NEW.message_id,
            'subject', NEW.subject, 'attachments', NEW.attachments,
            'in_reply_to', NEW.in_reply_to, 'references', NEW."references",
            'reply_match_status', NEW.reply_match_status,
            'reply_to_email_id', NEW.reply_to_email_id, 'thread_id', NEW.thread_id,
            'contact_id', NEW.contact_id, 'match_source', NEW.match_source,
            'token_failure', NEW.token_failure,
            'token_failure_source', NEW.token_failure_source,
            'ingest_source', NEW.ingest_source));
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER received_emails_webhooks AFTER INSERT ON received_emails
    FOR EACH ROW EXECUTE FUNCTION opensend_webhook_received();

-- domain.created / updated / deleted. An update counts when something a tenant sees changed,
-- not when a check only touched last_checked_at.
CREATE FUNCTION opensend_webhook_domain() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    row_ domains%ROWTYPE := CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    kind text := 'domain.' || CASE TG_OP WHEN 'INSERT' THEN 'created'
                                         WHEN 'UPDATE' THEN 'updated' ELSE 'deleted' END;
BEGIN
    IF opensend_webhook_subscribed(row_.tenant_id, kind) THEN
        PERFORM opensend_webhook_event(row_.tenant_id, kind, jsonb_build_object(
            'id', row_.id, 'name', row_.name, 'status', row_.status,
            'created_at', row_.created_at, 'region', row_.region, 'records', row_.records,
            'receiving_enabled', row_.receiving_enabled, 'reply_domain', row_.reply_domain));
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER domains_webhooks_insert AFTER INSERT ON domains
    FOR EACH ROW EXECUTE FUNCTION opensend_webhook_domain();
CREATE TRIGGER domains_webhooks_update AFTER UPDATE ON domains
    FOR EACH ROW
    WHEN ((OLD.name, OLD.status, OLD.records, OLD.region, OLD.receiving_enabled,
           OLD.reply_domain, OLD.verified)
          IS DISTINCT FROM
          (NEW.name, NEW.status, NEW.records, NEW.region, NEW.receiving_enabled,
           NEW.reply_domain, NEW.verified))
    EXECUTE FUNCTION opensend_webhook_domain();
CREATE TRIGGER domains_webhooks_delete AFTER DELETE ON domains
    FOR EACH ROW EXECUTE FUNCTION opensend_webhook_domain();

-- contact.created / updated / deleted.
CREATE FUNCTION opensend_webhook_contact() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    row_ contacts%ROWTYPE := CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    kind text := 'contact.' || CASE TG_OP WHEN 'INSERT' THEN 'created'
                                          WHEN 'UPDATE' THEN 'updated' ELSE 'deleted' END;
BEGIN
    IF opensend_webhook_subscribed(row_.tenant_id, kind) THEN
        PERFORM opensend_webhook_event(row_.tenant_id, kind, jsonb_build_object(
            'id', row_.id, 'email', row_.email, 'first_name', row_.first_name,
            'last_name', row_.last_name, 'unsubscribed', row_.unsubscribed,
            'created_at', row_.created_at, 'updated_at', now()));
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER contacts_webhooks_insert AFTER INSERT ON contacts
    FOR EACH ROW EXECUTE FUNCTION opensend_webhook_contact();
CREATE TRIGGER contacts_webhooks_update AFTER UPDATE ON contacts
    FOR EACH ROW WHEN (OLD.* IS DISTINCT FROM NEW.*) EXECUTE FUNCTION opensend_webhook_contact();
CREATE TRIGGER contacts_webhooks_delete AFTER DELETE ON contacts
    FOR EACH ROW EXECUTE FUNCTION opensend_webhook_contact();

-- Sending: domain keys and DNS status, the full outbound email, the per-recipient delivery queue,
-- the events webhooks will read, and idempotency keys.

ALTER TABLE domains
    -- Resend's domain statuses.
    ADD COLUMN status text NOT NULL DEFAULT 'not_started'
        CHECK (status IN ('not_started', 'pending', 'verified', 'failed', 'temporary_failure')),
    ADD COLUMN dkim_selector text NOT NULL DEFAULT 'opensend',
    -- PKCS#8 PEM. Read only by the signer; no API response ever carries it.
    ADD COLUMN dkim_private_key text,
    -- Base64 DER SubjectPublicKeyInfo: the p= tag of the DKIM record (RFC 6376 section 3.6.1).
    ADD COLUMN dkim_public_key text,
    -- The records to publish and what the last check found for each.
    ADD COLUMN records jsonb NOT NULL DEFAULT '[]',
    ADD COLUMN last_checked_at timestamptz;
UPDATE domains SET status = 'verified' WHERE verified;

-- A sending_access key may be limited to one domain (Resend's api-keys).
ALTER TABLE api_keys ADD COLUMN domain_id uuid REFERENCES domains (id) ON DELETE CASCADE;

ALTER TABLE emails
    ADD COLUMN domain_id uuid REFERENCES domains (id) ON DELETE SET NULL,
    -- The From field as given, with its display name.
    ADD COLUMN from_header text,
    ADD COLUMN cc_addresses text[] NOT NULL DEFAULT '{}',
    ADD COLUMN bcc_addresses text[] NOT NULL DEFAULT '{}',
    ADD COLUMN reply_to_addresses text[] NOT NULL DEFAULT '{}',
    ADD COLUMN html_body text,
    ADD COLUMN text_body text,
    ADD COLUMN headers jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN attachments jsonb NOT NULL DEFAULT '[]',
    ADD COLUMN tags jsonb NOT NULL DEFAULT '[]',
    -- The message exactly as delivered: built once, DKIM-signed, without Bcc.
    ADD COLUMN raw bytea,
    ADD COLUMN scheduled_at timestamptz,
    ADD COLUMN status text NOT NULL DEFAULT 'queued'
        CHECK (status IN ('scheduled', 'queued', 'sent', 'delivered', 'delivery_delayed',
                          'bounced', 'partially_bounced', 'canceled')),
    ADD COLUMN last_event text,
    -- Set when the email answers a received one (POST /emails/{id}/reply).
    ADD COLUMN in_reply_to_received_id uuid REFERENCES received_emails (id) ON DELETE SET NULL,
    ADD COLUMN source text NOT NULL DEFAULT 'api' CHECK (source IN ('api', 'smtp', 'reply'));
CREATE INDEX emails_tenant_recent ON emails (tenant_id, created_at DESC, id DESC);

-- One row per recipient: the queue. Workers claim due rows with FOR UPDATE SKIP LOCKED and hold
-- a lease while sending; a row still 'sending' past its lease belonged to a worker that died and
-- is due again (at most one duplicate, only where the remote accepted but the answer was lost).
CREATE TABLE deliveries (
    id                uuid PRIMARY KEY,
    email_id          uuid NOT NULL REFERENCES emails (id) ON DELETE CASCADE,
    tenant_id         uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    recipient         text NOT NULL,
    recipient_domain  text NOT NULL,
    status            text NOT NULL DEFAULT 'queued'
                      CHECK (status IN ('queued', 'deferred', 'sending', 'delivered', 'bounced',
                                        'canceled')),
    attempts          integer NOT NULL DEFAULT 0,
    next_attempt_at   timestamptz NOT NULL DEFAULT now(),
    lease_until       timestamptz,
    queued_at         timestamptz NOT NULL DEFAULT now(),
    last_attempt_at   timestamptz,
    last_code         integer,
    last_enhanced     text,
    last_response     text,
    remote_host       text,
    finished_at       timestamptz,
    UNIQUE (email_id, recipient)
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status IN ('queued', 'deferred');
CREATE INDEX deliveries_leased ON deliveries (lease_until) WHERE status = 'sending';
CREATE INDEX deliveries_email ON deliveries (email_id);

-- Every state change of an email, per recipient where it applies; webhooks will read these.
CREATE TABLE email_events (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    email_id    uuid NOT NULL REFERENCES emails (id) ON DELETE CASCADE,
    type        text NOT NULL CHECK (type IN ('email.sent', 'email.delivered',
                                              'email.delivery_delayed', 'email.bounced',
                                              'email.scheduled', 'email.canceled')),
    recipient   text,
    data        jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX email_events_email ON email_events (email_id, created_at);
CREATE INDEX email_events_tenant_recent ON email_events (tenant_id, created_at);

-- Idempotency-Key: the first response, kept 24 hours per tenant (rows older are ignored and
-- may be deleted). 'in_flight' while the first request runs, so a concurrent repeat is refused.
CREATE TABLE idempotency_keys (
    tenant_id     uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    key           text NOT NULL CHECK (length(key) BETWEEN 1 AND 256),
    endpoint      text NOT NULL,
    request_hash  text NOT NULL,
    state         text NOT NULL CHECK (state IN ('in_flight', 'done')),
    status_code   integer,
    response      jsonb,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, key)
);
CREATE INDEX idempotency_keys_age ON idempotency_keys (created_at);

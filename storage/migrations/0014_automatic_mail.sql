-- Automatic mail (issue 13): what kind of mail each received message is, the reports (bounces,
-- complaints) that come back about our deliveries, and each tenant's suppression list.

-- The class of every received message and the rule that gave it (policy/classify/rules.py).
-- Written by the MX with the message: a header inspection plus, for reports only, a light parse.
ALTER TABLE received_emails
    ADD COLUMN classification text NOT NULL DEFAULT 'human'
        CHECK (classification IN ('human', 'auto_reply', 'bounce', 'complaint',
                                  'auto_generated')),
    ADD COLUMN classification_reason text,
    -- A report's reading (policy/bounces/report.py): its form and, per recipient, the RFC 3464
    -- fields with the bounce type; NULL for mail that is no report.
    ADD COLUMN report jsonb;
COMMENT ON COLUMN received_emails.classification IS
    'human, auto_reply, bounce, complaint or auto_generated; classification_reason names the rule.';

-- A recipient on the suppression list is not attempted: 'suppressed'. A DSN or complaint about a
-- delivery is kept on it: the last report (type, subtype, status, diagnostic, remote MTA).
ALTER TABLE deliveries DROP CONSTRAINT deliveries_status_check;
ALTER TABLE deliveries
    ADD CONSTRAINT deliveries_status_check
        CHECK (status IN ('queued', 'deferred', 'sending', 'delivered', 'bounced', 'canceled',
                          'suppressed')),
    ADD COLUMN report jsonb,
    ADD COLUMN reported_at timestamptz,
    ADD COLUMN complained_at timestamptz;
-- A report that names only its address (Final-Recipient) finds the tenant's latest delivery to
-- it through this index (storage/bounces/reports.py, RESOLVE_LATEST_TO), not a scan.
CREATE INDEX deliveries_tenant_recipient ON deliveries (tenant_id, lower(recipient), queued_at DESC);
COMMENT ON COLUMN deliveries.report IS
    'The last DSN about this delivery: action, status, diagnostic_code, remote_mta, type, subtype, received_id.';

-- Resend's email statuses and event types, all of them, so later features (webhooks, opens)
-- add rows without another change of these lists.
ALTER TABLE emails DROP CONSTRAINT emails_status_check;
ALTER TABLE emails ADD CONSTRAINT emails_status_check
    CHECK (status IN ('scheduled', 'queued', 'sent', 'delivered', 'delivery_delayed', 'bounced',
                      'partially_bounced', 'canceled', 'complained', 'suppressed', 'failed',
                      'opened', 'clicked'));
-- 0013 (webhooks) named the list email_events_type_known; this one widens it.
ALTER TABLE email_events DROP CONSTRAINT email_events_type_known;
ALTER TABLE email_events ADD CONSTRAINT email_events_type_known
    CHECK (type IN ('email.sent', 'email.delivered', 'email.delivery_delayed', 'email.bounced',
                    'email.scheduled', 'email.canceled', 'email.complained', 'email.suppressed',
                    'email.failed', 'email.opened', 'email.clicked', 'email.received'));

-- The RFC 3464 reports we send for undeliverable submission mail are emails of their own.
ALTER TABLE emails DROP CONSTRAINT emails_source_check;
ALTER TABLE emails ADD CONSTRAINT emails_source_check
    CHECK (source IN ('api', 'smtp', 'reply', 'dsn'));

-- One suppression list per tenant (Resend's /suppressions). origin: what put the address there;
-- source_id: the email that bounced or drew the complaint (NULL for a manual entry).
CREATE TABLE suppressions (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    email       text NOT NULL CHECK (email = lower(email)),
    origin      text NOT NULL CHECK (origin IN ('bounce', 'complaint', 'manual')),
    source_id   uuid,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, email)
);
-- Pages newest first by key (ids are uuid7, time-ordered).
CREATE INDEX suppressions_tenant_id ON suppressions (tenant_id, id DESC);

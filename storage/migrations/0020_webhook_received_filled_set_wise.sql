-- email.received of mail filled in after its commit (0019), written once per fill-in statement
-- for the whole batch instead of once per row. The fill-in is one UPDATE per batch
-- (storage/inbound/fill_in.py); a statement-level trigger sees its rows in transition tables
-- and writes their events and deliveries in two set-wise INSERTs: 88 to 90 us per row against
-- 101 to 111 with the row trigger, measured at the client for batches of 32
-- (tests/perf/README.md, webhooks).

-- The payload of email.received, one definition for both triggers below.
CREATE FUNCTION opensend_received_payload(r received_emails) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'email_id', r.id, 'created_at', r.received_at, 'mail_from', r.mail_from,
        'rcpt_to', r.rcpt_to, 'from_address', r.from_address,
        'from_name', r.from_name, 'to', r.to_addresses, 'cc', r.cc_addresses,
        'reply_to', r.reply_to_addresses, 'message_id', r.message_id,
        'subject', r.subject, 'attachments', r.attachments,
        'in_reply_to', r.in_reply_to, 'references', r."references",
        'reply_match_status', r.reply_match_status,
        'reply_to_email_id', r.reply_to_email_id, 'thread_id', r.thread_id,
        'contact_id', r.contact_id, 'match_source', r.match_source,
        'token_failure', r.token_failure,
        'token_failure_source', r.token_failure_source,
        'ingest_source', r.ingest_source,
        'classification', r.classification,
        'classification_reason', r.classification_reason)
$$;

-- A row stored complete (parsed before its 250, the ingesters): its INSERT's row trigger, as
-- before.
CREATE OR REPLACE FUNCTION opensend_webhook_received() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF opensend_webhook_subscribed(NEW.tenant_id, 'email.received') THEN
        PERFORM opensend_webhook_event(NEW.tenant_id, 'email.received',
                                       opensend_received_payload(NEW));
    END IF;
    RETURN NULL;
END
$$;

-- Rows of one UPDATE statement that went from pending to filled: each fires once, as the
-- fill-in's WHERE parse_pending makes that change happen once. The payload is read from the
-- row as the statement left it (an AFTER trigger sees its statement's changes). Every other
-- UPDATE of received_emails (a thread adopted, a triage) finds no such row and writes nothing.
CREATE FUNCTION opensend_webhook_received_filled() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    WITH events AS (
        INSERT INTO webhook_events (id, tenant_id, type, data)
        SELECT opensend_uuid7(), r.tenant_id, 'email.received', opensend_received_payload(r)
        FROM new_rows n
        JOIN old_rows o ON o.id = n.id
        JOIN received_emails r ON r.id = n.id
        WHERE o.parse_pending AND NOT n.parse_pending
          AND opensend_webhook_subscribed(n.tenant_id, 'email.received')
        RETURNING id, tenant_id
    )
    INSERT INTO webhook_deliveries (id, event_id, webhook_id, tenant_id)
    SELECT opensend_uuid7(), e.id, w.id, e.tenant_id
    FROM events e
    JOIN webhooks w ON w.tenant_id = e.tenant_id AND w.status = 'enabled'
                   AND 'email.received' = ANY (w.events);
    IF FOUND THEN
        PERFORM pg_notify('opensend_webhooks', '');  -- the workers are woken at COMMIT
    END IF;
    RETURN NULL;
END
$$;

-- Transition tables rule out a column list (UPDATE OF parse_pending) and a WHEN condition:
-- the function's WHERE does their work.
DROP TRIGGER received_emails_webhooks_filled ON received_emails;
CREATE TRIGGER received_emails_webhooks_filled AFTER UPDATE ON received_emails
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION opensend_webhook_received_filled();

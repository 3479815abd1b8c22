-- email.received also carries the class of the message (migration 0014: human, auto_reply,
-- bounce, complaint, auto_generated) and the rule that gave it, so a subscriber can leave
-- auto-replies and bounces out of its "customer answered" handling.
CREATE OR REPLACE FUNCTION opensend_webhook_received() RETURNS trigger LANGUAGE plpgsql AS $$
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
            'ingest_source', NEW.ingest_source,
            'classification', NEW.classification,
            'classification_reason', NEW.classification_reason));
    END IF;
    RETURN NULL;
END
$$;

-- A busy MX stores plain mail before parsing its body (mta/mx/fill_in.py): the row the 250
-- follows holds the envelope, the raw message, the header fields that routing, matching and
-- classification read, and the match; the body's parts (text, HTML, attachments), the address
-- lists, the sender's name, the Date and the parser's defects are filled in after the commit.
-- parse_pending is true from that INSERT until the fill-in's UPDATE. Readers of the API and the
-- dashboard leave such rows out, so nobody sees a half-filled message; an empty body is a
-- filled row whose text_body is NULL. Existing rows are complete: the constant default makes
-- this ALTER instant.
ALTER TABLE received_emails ADD COLUMN parse_pending boolean NOT NULL DEFAULT false;
COMMENT ON COLUMN received_emails.parse_pending IS
    'True while the body is not parsed yet (stored by a busy MX); hidden from the API until false.';

-- What the fill-in's sweep looks for (a crashed MX's leftovers); tiny, as rows leave it within
-- seconds.
CREATE INDEX received_parse_pending ON received_emails (id) WHERE parse_pending;

-- email.received carries the attachments, the address lists and the sender's name: a row
-- stored with its parse pending announces itself when it is filled in, in the fill-in's
-- transaction (the change the event reports is the message becoming readable). Every other
-- row, as before, in its INSERT's. Each row fires exactly once: the UPDATE trigger only on the
-- change from pending to filled, which happens once (the fill-in's WHERE parse_pending).
DROP TRIGGER received_emails_webhooks ON received_emails;
CREATE TRIGGER received_emails_webhooks AFTER INSERT ON received_emails
    FOR EACH ROW WHEN (NOT NEW.parse_pending) EXECUTE FUNCTION opensend_webhook_received();
CREATE TRIGGER received_emails_webhooks_filled AFTER UPDATE OF parse_pending ON received_emails
    FOR EACH ROW WHEN (OLD.parse_pending AND NOT NEW.parse_pending)
    EXECUTE FUNCTION opensend_webhook_received();

-- The dashboard's live pages re-read a matched reply when they hear of it: not before it can
-- be read.
DROP TRIGGER received_dashboard_notify ON received_emails;
CREATE TRIGGER received_dashboard_notify AFTER INSERT ON received_emails
    FOR EACH ROW WHEN (NEW.reply_to_email_id IS NOT NULL AND NOT NEW.parse_pending)
    EXECUTE FUNCTION dashboard_notify_reply();
CREATE TRIGGER received_dashboard_notify_filled AFTER UPDATE OF parse_pending ON received_emails
    FOR EACH ROW WHEN (NEW.reply_to_email_id IS NOT NULL AND OLD.parse_pending
                       AND NOT NEW.parse_pending)
    EXECUTE FUNCTION dashboard_notify_reply();

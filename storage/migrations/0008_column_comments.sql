-- What operators query directly, described in the database itself (\d+ in psql).
-- 0002's inline comment on emails.raw predates the decision to sign at send time; this is right.
COMMENT ON COLUMN emails.raw IS
    'The message as built by the API: unsigned, without Bcc. The delivery worker adds the '
    'DKIM-Signature at each send, with the domain''s current key.';
COMMENT ON COLUMN received_emails.raw IS
    'The message exactly as the client sent it, byte for byte; our Received field is in received_header.';
COMMENT ON COLUMN received_emails.reply_match_status IS
    'matched: linked to reply_to_email_id and thread_id; unmatched: stored for audit, see token_failure.';
COMMENT ON COLUMN received_emails.token_failure IS
    'Why a reply token did not hold: malformed, bad_signature (tampered, other tenant or domain), unknown_email, revoked.';

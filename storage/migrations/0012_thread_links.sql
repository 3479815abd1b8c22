-- What the threading columns mean since issue 17, said where operators read them (\d+ in psql):
-- a message that names only the customer's own earlier message links to our newest email of
-- its thread, and our answers join threads however they are sent. Comments only; no data moves.
COMMENT ON COLUMN received_emails.reply_match_status IS
    'matched: in thread_id, answering reply_to_email_id (see there); unmatched: it named no '
    'stored message of this tenant that is in a thread, stored for audit, see token_failure. '
    'An unmatched message gets a thread_id (and keeps its status) once we answer it.';
COMMENT ON COLUMN received_emails.reply_to_email_id IS
    'For a matched message: the email of ours it names (by reply token, or as a Message-ID in '
    'In-Reply-To or References); when it names only an earlier message of the customer''s '
    'side, the newest email of ours in that thread that had gone out (not scheduled or '
    'canceled) when it arrived. NULL when unmatched, or when the thread held no such email.';
COMMENT ON COLUMN received_emails.message_id IS
    'The msg-id of its Message-ID field without angle brackets, comments or folding '
    '(RFC 5322 section 3.6.4), as In-Reply-To and References name it.';
COMMENT ON COLUMN emails.thread_id IS
    'Its conversation: a new thread, or, when the email answers a stored message of the same '
    'tenant (POST /emails/{id}/reply, or In-Reply-To/References through POST /emails or '
    'submission, read with the precedence of reply matching), that message''s thread. NULL: '
    'sent untracked, answering nothing stored.';
COMMENT ON COLUMN emails.in_reply_to_received_id IS
    'The received email this one answers: the one POST /emails/{id}/reply was called on, or '
    'the one its In-Reply-To or References named when that decided its thread.';

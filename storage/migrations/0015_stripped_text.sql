-- The new text of received replies (stripped_text, stripped_html): what the person wrote, without
-- the quoted history and signature, computed after the commit by the after-commit worker with
-- the authentication checks (mta/authcheck_worker.py), never in the MX's path to its 250.
--
-- A narrow table of its own, like received_auth_results (migration 0010): an UPDATE of the
-- wide received_emails row would slow the MX's own INSERTs. The worker writes a message's row
-- here before its authentication results, which mark it done, so a worker that dies between
-- the two strips it again (the write is an upsert). Mail received before this migration is not
-- stripped: its row never appears, and the API shows null.
CREATE TABLE received_stripped_bodies (
    received_id    uuid PRIMARY KEY REFERENCES received_emails (id) ON DELETE CASCADE,
    stripped_text  text,
    stripped_html  text,
    stripped_at    timestamptz NOT NULL
);

COMMENT ON TABLE received_stripped_bodies IS
    'What the sender of a received message wrote, without quoted history: GET /emails/receiving/{id} shows it.';
COMMENT ON COLUMN received_stripped_bodies.stripped_text IS
    'From the text body (or the HTML one when there is none); NULL when the message has neither.';
COMMENT ON COLUMN received_stripped_bodies.stripped_html IS
    'The HTML body''s content without quote containers; NULL when the message has no HTML body.';

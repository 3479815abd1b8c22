-- Authentication results of received mail (SPF, DKIM, DMARC, ARC), computed after the commit by
-- the auth-check workers (mta/authcheck_worker.py), never in the MX's path to its 250.
--
-- The queue is the rows themselves: auth_due_at says when a message is (next) to be checked,
-- and doubles as the lease of the worker checking it now (a dead worker's message is due again
-- when it runs out). New rows get now() by default, so the MX's INSERT does not change; mail
-- received before this migration keeps NULL and is never checked (its DNS evidence is gone).
ALTER TABLE received_emails
    ADD COLUMN auth_due_at timestamptz,
    ADD COLUMN auth_lease_token uuid,
    ADD COLUMN auth_checks integer NOT NULL DEFAULT 0,
    ADD COLUMN auth_checked_at timestamptz,
    ADD COLUMN auth_results jsonb,
    ADD COLUMN auth_header text;
ALTER TABLE received_emails ALTER COLUMN auth_due_at SET DEFAULT now();

-- Only the messages waiting for a check: small however large the table grows.
CREATE INDEX received_auth_due ON received_emails (auth_due_at) WHERE auth_due_at IS NOT NULL;

COMMENT ON COLUMN received_emails.auth_due_at IS
    'When the auth-check workers (re)check this message; NULL once its results are final.';
COMMENT ON COLUMN received_emails.auth_results IS
    'SPF, DKIM, DMARC and ARC verdicts as GET /emails/receiving/{id} shows them; NULL until checked.';
COMMENT ON COLUMN received_emails.auth_header IS
    'The Authentication-Results field value (RFC 8601) for those verdicts, authserv-id = OPENSEND_HOSTNAME.';

-- Authentication results of received mail (SPF, DKIM, DMARC, ARC), computed after the commit by
-- the auth checker (mta/authcheck_worker.py), never in the MX's path to its 250.
--
-- The MX writes nothing for the checks: its INSERT into received_emails is all. The checker
-- finds new mail by its id (uuid7, time-ordered: storage/ids.py) above a watermark, and writes
-- only the narrow table below, never received_emails: an UPDATE of that wide row (its raw
-- message, parsed bodies, headers and five indexes) slowed the MX's own INSERTs by 15 to 35%
-- during a burst, and a queue row inserted with each message cost it about 5 to 10% more
-- (tests/perf/README.md).

-- The results: one row per checked message, rewritten by each recheck.
CREATE TABLE received_auth_results (
    received_id    uuid PRIMARY KEY REFERENCES received_emails (id) ON DELETE CASCADE,
    results        jsonb NOT NULL,
    header         text NOT NULL,
    checked_at     timestamptz NOT NULL,
    -- The checks these results took: above 1 after a recheck (or a checker that died unwritten).
    checks         integer NOT NULL,
    -- When a temperror is looked at again; NULL once the results are final.
    next_check_at  timestamptz
);
-- The rechecks due: few rows (temperrors waiting), so a small index.
CREATE INDEX received_auth_results_recheck ON received_auth_results (next_check_at)
    WHERE next_check_at IS NOT NULL;

-- How far the checker has got: every message with an id up to checked_through has results
-- (or came before the checks existed). The checker looks only above it, and moves it up only
-- to ids minted well before now (its settle window), since a message whose id was minted
-- earlier may commit later. One row.
CREATE TABLE auth_check_progress (
    id               boolean PRIMARY KEY DEFAULT true CHECK (id),
    checked_through  uuid
);
-- Mail received before this migration is never checked (its DNS evidence is gone): its
-- authentication_results stay null. NULL here (no mail yet): everything is checked.
INSERT INTO auth_check_progress (checked_through)
    SELECT (SELECT id FROM received_emails ORDER BY id DESC LIMIT 1);

COMMENT ON TABLE received_auth_results IS
    'SPF, DKIM, DMARC and ARC verdicts of received messages, as GET /emails/receiving/{id} shows them.';
COMMENT ON COLUMN received_auth_results.results IS
    'The verdicts per method (JSON): the authentication_results object of the API without header and times.';
COMMENT ON COLUMN received_auth_results.header IS
    'The Authentication-Results field value (RFC 8601) for those verdicts, authserv-id = OPENSEND_HOSTNAME.';
COMMENT ON TABLE auth_check_progress IS
    'The auth checker''s watermark: received_emails up to checked_through are checked (or predate the checks).';

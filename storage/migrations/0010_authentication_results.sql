-- Authentication results of received mail (SPF, DKIM, DMARC, ARC), computed after the commit by
-- the auth-check workers (mta/authcheck_worker.py), never in the MX's path to its 250.
--
-- Two narrow tables beside received_emails, which the checks never UPDATE: an UPDATE of that
-- wide row (its raw message, parsed bodies, headers and five indexes) per claim and per result
-- slowed the MX's own INSERTs by 15 to 35% during a burst (tests/perf/README.md). A row here is
-- a few dozen bytes with one or two small indexes.

-- The queue: one row per message still to be checked, inserted by the statement that stores the
-- message (storage/inbox.py), deleted once its results are final. due_at doubles as the lease
-- of the worker checking it now: a dead worker's message is due again when the lease runs out.
-- Mail received before this migration has no row here and is never checked (its DNS evidence
-- is gone).
CREATE TABLE received_auth_queue (
    received_id  uuid PRIMARY KEY REFERENCES received_emails (id) ON DELETE CASCADE,
    due_at       timestamptz NOT NULL DEFAULT now(),
    -- The claim that holds it; a result is written only under the token it was claimed with.
    lease_token  uuid,
    -- Claims so far: where the message is in its temperror recheck schedule.
    checks       integer NOT NULL DEFAULT 0
);
CREATE INDEX received_auth_queue_due ON received_auth_queue (due_at);

-- The results: one row per checked message, rewritten by each recheck.
CREATE TABLE received_auth_results (
    received_id    uuid PRIMARY KEY REFERENCES received_emails (id) ON DELETE CASCADE,
    results        jsonb NOT NULL,
    header         text NOT NULL,
    checked_at     timestamptz NOT NULL,
    -- The claims these results took: above 1 after a recheck or a worker that died.
    checks         integer NOT NULL,
    -- When a temperror is looked at again; NULL once the results are final.
    next_check_at  timestamptz
);

COMMENT ON TABLE received_auth_queue IS
    'Received messages waiting for their authentication checks (or being checked: due_at is then the lease end).';
COMMENT ON TABLE received_auth_results IS
    'SPF, DKIM, DMARC and ARC verdicts of received messages, as GET /emails/receiving/{id} shows them.';
COMMENT ON COLUMN received_auth_results.results IS
    'The verdicts per method (JSON): the authentication_results object of the API without header and times.';
COMMENT ON COLUMN received_auth_results.header IS
    'The Authentication-Results field value (RFC 8601) for those verdicts, authserv-id = OPENSEND_HOSTNAME.';

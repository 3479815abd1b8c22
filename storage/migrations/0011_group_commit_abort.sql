-- The sending API's group commit (storage/sending_writer.py) stores a group of emails in one
-- round trip: one INSERT_EMAIL statement per email, pipelined, all in the implicit transaction
-- that ends at the protocol's single Sync (PostgreSQL protocol, "Pipelining"). An email of the
-- group that cannot be stored (its domain changed since it was read, its Idempotency-Key was
-- taken over) must roll the whole group back, so that each email is then stored on its own and
-- one request never decides another's fate. A statement cannot see its neighbours' outcomes,
-- and plain SQL cannot raise, so the statement calls this when it stored nothing.
CREATE FUNCTION opensend_group_abort() RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RAISE EXCEPTION 'an email of this group commit was not stored: the group is rolled back'
        USING ERRCODE = 'OSG01';
END
$$;

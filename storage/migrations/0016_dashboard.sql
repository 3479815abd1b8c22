-- The dashboard (issue 14): people who sign in, each belonging to one tenant, and their
-- sessions as rows, so a session is listed and revoked server-side (a cookie alone could not be).
CREATE TABLE dashboard_users (
    id             uuid PRIMARY KEY,
    tenant_id      uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    email          text NOT NULL,
    password_hash  text NOT NULL,
    -- Two-factor sign-in (RFC 6238), optional per user: the base32 secret, and the last time
    -- step a code was accepted for, so a code seen once cannot sign in again.
    totp_secret    text,
    totp_last_step bigint,
    created_at     timestamptz NOT NULL DEFAULT now()
);
-- One account per address across the installation: sign-in names no tenant.
CREATE UNIQUE INDEX dashboard_users_email ON dashboard_users (lower(email));
COMMENT ON COLUMN dashboard_users.password_hash IS
    'An argon2id hash in the PHC string format (argon2-cffi); never the password.';

CREATE TABLE dashboard_sessions (
    id             uuid PRIMARY KEY,
    -- SHA-256 of the cookie's secret: a copy of this table signs nobody in.
    secret_hash    bytea NOT NULL UNIQUE,
    user_id        uuid NOT NULL REFERENCES dashboard_users (id) ON DELETE CASCADE,
    tenant_id      uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    csrf_token     text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    last_seen_at   timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz NOT NULL,
    revoked_at     timestamptz,
    user_agent     text,
    remote_ip      text
);
CREATE INDEX dashboard_sessions_user ON dashboard_sessions (user_id, created_at DESC);

-- Live pages: a matched reply arriving, or a delivery changing state, is announced to the
-- dashboard's listeners as "<tenant>:<email id>:<kind>". NOTIFY is sent at COMMIT, so a page
-- never hears of a row it cannot yet read.
CREATE FUNCTION dashboard_notify_reply() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('opensend_dashboard',
                      NEW.tenant_id::text || ':' || NEW.reply_to_email_id::text || ':reply');
    RETURN NULL;
END $$;
CREATE TRIGGER received_dashboard_notify AFTER INSERT ON received_emails
    FOR EACH ROW WHEN (NEW.reply_to_email_id IS NOT NULL)
    EXECUTE FUNCTION dashboard_notify_reply();

CREATE FUNCTION dashboard_notify_delivery() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('opensend_dashboard',
                      NEW.tenant_id::text || ':' || NEW.email_id::text || ':delivery');
    RETURN NULL;
END $$;
-- Only the states a reader waits for: a claim (queued -> sending) is not worth a NOTIFY on
-- the delivery path, which sends thousands a second.
CREATE TRIGGER deliveries_dashboard_notify AFTER UPDATE OF status ON deliveries
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status
                       AND NEW.status IN ('delivered', 'deferred', 'bounced', 'canceled'))
    EXECUTE FUNCTION dashboard_notify_delivery();

-- Who did what by hand in the dashboard, and when: linking an unmatched message to a
-- conversation ("link to email…") is the first such action.
CREATE TABLE dashboard_audit (
    id           uuid PRIMARY KEY,
    tenant_id    uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    user_id      uuid REFERENCES dashboard_users (id) ON DELETE SET NULL,
    user_email   text NOT NULL,  -- kept when the user is deleted
    action       text NOT NULL,
    received_id  uuid,
    email_id     uuid,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dashboard_audit_tenant ON dashboard_audit (tenant_id, created_at DESC);
COMMENT ON COLUMN received_emails.match_source IS
    'How a matched message found its conversation: recipient (the reply address), '
    'x-opensend-reply-token, in-reply-to, references, or manual (linked by a dashboard user; '
    'see dashboard_audit).';

-- The dashboard's reads: "has a reply" (search, overview) and a tenant's deferred deliveries
-- (the queue page), each an index scan rather than a walk through the table.
CREATE INDEX received_reply_to ON received_emails (reply_to_email_id)
    WHERE reply_to_email_id IS NOT NULL;
CREATE INDEX deliveries_tenant_deferred ON deliveries (tenant_id, next_attempt_at)
    WHERE status = 'deferred';

-- The dashboard hears of every webhook attempt: an endpoint's open page shows it as it happens.
-- The payload is 0016's "<tenant>:<id>:<kind>", here the webhook's id and kind "attempt";
-- NOTIFY is sent at COMMIT, so the page re-reads a row it can see.
CREATE FUNCTION dashboard_notify_attempt() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    owner record;
BEGIN
    SELECT tenant_id, webhook_id INTO owner FROM webhook_deliveries WHERE id = NEW.delivery_id;
    IF FOUND THEN
        PERFORM pg_notify('opensend_dashboard',
                          owner.tenant_id::text || ':' || owner.webhook_id::text || ':attempt');
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER webhook_attempts_dashboard_notify AFTER INSERT ON webhook_attempts
    FOR EACH ROW EXECUTE FUNCTION dashboard_notify_attempt();

-- domain.created / updated / deleted are no longer written by triggers (0013): their data is the
-- domain as GET /domains/{id} shows it, whose records depend on the server's hostname, which
-- the database does not know. storage/account/domains.py writes them, in the transaction of the
-- change, through opensend_webhook_subscribed and opensend_webhook_event as the triggers did; an
-- update is written when the domain as shown changed, which the triggers' WHEN clause approximated.
DROP TRIGGER domains_webhooks_insert ON domains;
DROP TRIGGER domains_webhooks_update ON domains;
DROP TRIGGER domains_webhooks_delete ON domains;
DROP FUNCTION opensend_webhook_domain();

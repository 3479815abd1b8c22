-- A plan's monthly sending limit per tenant: NULL is unlimited. The reply endpoint
-- (POST /emails/{id}/reply) answers 429 once the tenant's emails of the current calendar month
-- (UTC) reach it; `opensend tenant set-limit NAME N` sets it.
ALTER TABLE tenants ADD COLUMN monthly_send_limit integer CHECK (monthly_send_limit >= 0);

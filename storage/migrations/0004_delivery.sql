-- Delivery workers: every claim carries a token. A worker whose lease ran out (it hung, or lost
-- the database for longer than the lease) then cannot overwrite what the worker that took the
-- rows over has written: its late outcome matches no row.
ALTER TABLE deliveries ADD COLUMN lease_token uuid;
CREATE INDEX deliveries_lease_token ON deliveries (lease_token) WHERE status = 'sending';

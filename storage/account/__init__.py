"""Tenants, domains, receiving routes and API keys: administration and the RCPT lookup.
May import storage.webhooks (their changes' events) and storage's root modules."""

"""Tenants, domains, receiving routes and API keys: administration and the RCPT lookup.
May import storage's root modules only."""

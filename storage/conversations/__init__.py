"""Threads and contacts: reads of a tenant's conversations.
May import storage's root modules only."""

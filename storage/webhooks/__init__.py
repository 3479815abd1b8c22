"""Webhook storage: endpoints, the outbox of events, deliveries and attempts, as named SQL.
Imports nothing of ours outside storage."""

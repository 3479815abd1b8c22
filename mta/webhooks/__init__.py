"""Webhook delivery workers: claim due deliveries, POST them signed, record every attempt.
Imports policy and storage (and mta's shared worker helpers)."""

"""Webhook delivery workers: claim due deliveries, POST them signed, record every attempt.
Imports policy and storage; process.py (a composition root, like serve) also api's resolver."""

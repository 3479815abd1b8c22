"""Webhook endpoints over HTTP (/webhooks, Resend's shapes): translate requests to storage calls.
Imports policy and storage only."""

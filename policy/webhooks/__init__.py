"""Webhook decisions without sockets or SQL: event types, payload shapes, signing, endpoint
safety and the retry schedule. Imports nothing of ours outside policy."""

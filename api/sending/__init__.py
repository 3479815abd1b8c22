"""Sending: POST /emails and /emails/batch, sent emails, idempotency, replies to received mail.
May import api's root modules, api.conversations, api.account, policy and storage."""

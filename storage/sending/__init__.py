"""Outbound emails as the API and submission store them, their group commit, idempotency.
May import storage.inbound (the received mail a reply answers) and storage's root modules."""

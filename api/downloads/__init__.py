"""Signed, expiring download links (raw messages, attachments received and sent) and the routes
that serve them without an API key. May import api's shared modules, policy and storage."""

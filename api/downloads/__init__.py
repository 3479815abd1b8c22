"""The routes that serve signed, expiring download links (raw messages, attachments received and
sent) without an API key. May import api's shared modules, policy and storage."""

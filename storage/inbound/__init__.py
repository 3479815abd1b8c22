"""Received mail: stored in one transaction, the RCPT lookup cache, reads for the API.
May import storage.account (routes) and storage's root modules."""

"""Submission (RFC 6409): what a logged-in client may send, and login throttling.
May import policy.sending, policy.inbound (message parsing) and policy's root modules."""

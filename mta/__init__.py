"""The SMTP edge: the MX listener, its protocol and handler, and the composition root."""

"""The SMTP edge: the MX listener, its protocol and handler, and the composition root.
May import policy and storage; only the composition root (cli, serve) imports api."""

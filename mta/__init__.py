"""The SMTP edge: MX, submission, delivery, auth checks; the composition root (cli, serve).
May import policy and storage; only the composition root (cli, serve) imports api."""

"""The SMTP engine the MX and the submission ports share: aiosmtpd's protocol, and TLS.
May import policy and mta's root modules (metrics, logs), nothing of mta's other subpackages."""

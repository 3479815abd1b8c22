"""Authentication verdicts of received mail (SPF, DKIM, ARC, DMARC) and DMARC's policy.
May import policy.submission (header fields) and policy's root modules."""

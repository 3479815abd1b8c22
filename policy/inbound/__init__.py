"""The inbound pipeline every way in shares: addresses, RCPT routing, parsing, matching.
May import policy's root modules only."""

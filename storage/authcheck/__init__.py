"""The authentication checks' reads and writes: new received mail, results beside it.
May import storage's root modules only."""

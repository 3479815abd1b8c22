"""The outbound queue: claims under a lease, NOTIFY wake-ups, outcomes committed together.
May import storage's root modules only."""

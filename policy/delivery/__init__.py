"""Outbound delivery: what an attempt's result means for a recipient, and the retry table.
May import policy's root modules only."""

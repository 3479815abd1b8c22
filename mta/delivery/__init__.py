"""Outbound delivery: the workers, one claim's pipeline, routes, SMTP sessions, DKIM signing.
May import mta's root modules (metrics, wakeup), policy and storage."""

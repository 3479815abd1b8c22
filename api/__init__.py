"""The HTTP API: Resend- and Inbound-compatible routes, ingesters, /metrics and /healthz.
May import policy and storage, never mta."""

"""The HTTP API: Resend- and Inbound-compatible routes, ingesters, /metrics and /healthz."""

"""Ingesters: inbound mail handed over by a provider over HTTP (raw MIME, SES through S3).
May import api's root modules, policy and storage; they feed policy.inbound, as port 25 does."""

"""The account's resources: domains (with their DNS records and checks) and API keys.
May import api's root modules, policy and storage."""

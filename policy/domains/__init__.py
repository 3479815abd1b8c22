"""Tenant domains: valid names, the DNS records they publish, DKIM keys, verification.
May import policy's root modules only."""

"""Bounces and complaints: reading DSNs and ARF reports, VERP bounce addresses, what to suppress.

Pure functions and values; imports nothing of ours outside policy.
"""

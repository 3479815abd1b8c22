"""The dashboard: pages rendered on the server under /dashboard/, its sign-in, live updates.

May import `api` (context, errors), `policy` and `storage`, the same functions the JSON API uses.
"""

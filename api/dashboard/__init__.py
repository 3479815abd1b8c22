"""The dashboard: pages rendered on the server under /dashboard/, its sign-in, live updates.
May import `api` (context, errors, the JSON routes' helpers), `policy` and `storage`."""

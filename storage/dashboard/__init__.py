"""Storage of the dashboard: users, sessions, searches, queue, triage, live announcements.
May import `storage` (database, errors, ids, queue) and nothing else of ours."""

"""Storage of the dashboard: its users, their sessions, its searches and its live announcements.

May import `storage` (database, errors, ids) and nothing else of ours, like the rest of storage/.
"""

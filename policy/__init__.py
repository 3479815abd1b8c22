"""Pure decisions, no sockets and no SQL: one subpackage per area, shared ones at the root.
May import nothing of ours outside policy: lookups are passed in."""

"""Pure decisions: routing verdicts, reply tokens, reply matching, limits. No sockets, no SQL.
May import nothing of ours outside policy: lookups are passed in."""

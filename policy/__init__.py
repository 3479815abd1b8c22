"""Pure decisions: routing verdicts, reply tokens, reply matching, limits. No sockets, no SQL."""

"""PostgreSQL through asyncpg: one subpackage per area; pool, errors, ids, migrations at the root.
May import nothing of ours outside storage."""

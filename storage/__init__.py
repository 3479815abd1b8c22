"""PostgreSQL through asyncpg: migrations, named queries, repositories, the embedded server.
May import nothing of ours outside storage."""

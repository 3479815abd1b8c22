"""PostgreSQL through asyncpg: migrations, named queries, repositories, the embedded server."""

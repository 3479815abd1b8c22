"""The plan PostgreSQL keeps for a statement a pool has prepared, and how it reads a table.

A prepared statement moves to a cached generic plan after five executions (or at once under
plan_cache_mode force_generic_plan), made from the statistics of that moment. A queue or a new
server's empty tables make those statistics say "nothing here", and a plan chosen then may
read a whole table at every execution once it fills. These helpers find the plan a pool's own
connection keeps, through `EXPLAIN EXECUTE` of its prepared statement, for tests to assert
that every read of a table goes by a key.
"""

from __future__ import annotations

import json
from typing import Any

from storage.database import Pool


async def kept_plan(pool: Pool, statement: str, arguments: str) -> dict[str, Any]:
    """The generic plan the pool's connection keeps for `statement`, which it has run often
    enough to keep one; `arguments` are SQL literals in parentheses, as EXECUTE takes them. Use
    a pool of one connection, so that every earlier execution ran on it."""
    row = await pool.fetchrow(
        "SELECT name, generic_plans FROM pg_prepared_statements WHERE statement = $1", statement
    )
    assert row is not None, "the pool has not prepared the statement"
    assert row["generic_plans"] > 0, "the statement is planned for its arguments each time"
    explained = await pool.fetchval(f"EXPLAIN (FORMAT JSON) EXECUTE {row['name']}{arguments}")
    plan: dict[str, Any] = json.loads(explained)[0]["Plan"]
    return plan


def unkeyed_reads(plan: dict[str, Any], table: str) -> list[str]:
    """Every scan of `table` in a plan tree (EXPLAIN's JSON) that reads it without a key: a
    sequential or bitmap scan, or an index read whole (no Index Cond)."""
    found = []
    scan = plan["Node Type"].endswith("Scan")
    if scan and plan.get("Relation Name") == table and "Index Cond" not in plan:
        found.append(f"{plan['Node Type']} {plan.get('Index Name', '')}".strip())
    for child in plan.get("Plans", []):
        found += unkeyed_reads(child, table)
    return found

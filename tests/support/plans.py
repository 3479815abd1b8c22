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
    """The plan `EXPLAIN EXECUTE` shows for `statement` on the pool's connection, which has run
    it often enough to have a generic plan: that plan under plan_cache_mode force_generic_plan;
    otherwise (auto) PostgreSQL chooses again between it and one for `arguments`, as every
    execution does. `arguments` are SQL literals in parentheses, as EXECUTE takes them. Use a
    pool of one connection, so that every earlier execution ran on it."""
    row = await pool.fetchrow(
        "SELECT name, generic_plans FROM pg_prepared_statements WHERE statement = $1", statement
    )
    assert row is not None, "the pool has not prepared the statement"
    assert row["generic_plans"] > 0, "the statement is planned for its arguments each time"
    explained = await pool.fetchval(f"EXPLAIN (FORMAT JSON) EXECUTE {row['name']}{arguments}")
    plan: dict[str, Any] = json.loads(explained)[0]["Plan"]
    return plan


async def leading_columns(pool: Pool, table: str) -> dict[str, str]:
    """The first column of each index of `table`, by index name."""
    rows = await pool.fetch(
        "SELECT i.relname AS index, a.attname AS leading FROM pg_index x"
        " JOIN pg_class i ON i.oid = x.indexrelid"
        " JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = x.indkey[0]"
        " WHERE x.indrelid = $1::regclass",
        table,
    )
    return {row["index"]: row["leading"] for row in rows}


def unkeyed_reads(plan: dict[str, Any], table: str, leading: dict[str, str]) -> list[str]:
    """Every scan of `table` in a plan tree (EXPLAIN's JSON) that reads it without a key: a
    sequential or bitmap scan, or an index scan whose condition does not bound the index's
    first column (`leading`, from leading_columns), which reads the index whole."""
    found = []
    if plan["Node Type"].endswith("Scan") and plan.get("Relation Name") == table:
        index = plan.get("Index Name")
        condition = plan.get("Index Cond", "")
        if index is None or f"({leading[index]} " not in condition:
            found.append(f"{plan['Node Type']} {index or ''}".strip())
    for child in plan.get("Plans", []):
        found += unkeyed_reads(child, table, leading)
    return found

"""Rows of ragged values in one statement: PostgreSQL arrays must be rectangular, so a batch's
per-row lists (addresses, attachments, defects) travel as JSON text, one element per row, and
are turned back into text[] or jsonb in the statement."""

from __future__ import annotations

from typing import Any

import orjson


def json_text(value: Any) -> str:
    """JSON text of one row's value, by orjson: several times faster than `json.dumps` for the
    small lists of each row. What it cannot encode raises TypeError."""
    return orjson.dumps(value).decode()


def text_array_sql(column: str) -> str:
    """SQL for a text[] from a JSON array of strings in `column`, in the array's order."""
    return (
        f"ARRAY(SELECT a FROM jsonb_array_elements_text({column}::jsonb)"
        " WITH ORDINALITY AS x (a, n) ORDER BY n)"
    )

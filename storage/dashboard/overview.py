"""The overview's figures for one tenant: today's deliveries by state, replies matched against
unmatched, and per sending domain the reply rate and median first reply (30 days)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from storage.database import Pool
from storage.errors import storage_errors
from storage.inbound.received import readable

# "Today" is the database's UTC day.
TODAY = f"""
SELECT
  (SELECT count(*) FROM deliveries d WHERE d.tenant_id = $1
     AND d.queued_at >= date_trunc('day', now()))::int AS sent,
  (SELECT count(*) FROM deliveries d WHERE d.tenant_id = $1 AND d.status = 'delivered'
     AND d.finished_at >= date_trunc('day', now()))::int AS delivered,
  (SELECT count(*) FROM deliveries d WHERE d.tenant_id = $1 AND d.status = 'deferred')::int
     AS deferred,
  (SELECT count(*) FROM deliveries d WHERE d.tenant_id = $1 AND d.status = 'bounced'
     AND d.finished_at >= date_trunc('day', now()))::int AS bounced,
  (SELECT count(*) FROM received_emails r WHERE r.tenant_id = $1 AND {readable("r")}
     AND r.received_at >= date_trunc('day', now()) AND r.reply_match_status = 'matched')::int
     AS matched,
  (SELECT count(*) FROM received_emails r WHERE r.tenant_id = $1 AND {readable("r")}
     AND r.received_at >= date_trunc('day', now()) AND r.reply_match_status = 'unmatched')::int
     AS unmatched
"""
PER_DOMAIN = f"""
WITH sent AS (
    SELECT e.id, split_part(e.from_address, '@', 2) AS domain, e.created_at,
           (SELECT min(r.received_at) FROM received_emails r
            WHERE r.reply_to_email_id = e.id AND r.tenant_id = e.tenant_id
              AND {readable("r")}) AS first_reply_at
    FROM emails e
    WHERE e.tenant_id = $1 AND e.created_at >= now() - interval '30 days'
      AND e.reply_address IS NOT NULL
)
SELECT domain, count(*)::int AS sent, count(first_reply_at)::int AS replied,
       percentile_cont(0.5) WITHIN GROUP (
           ORDER BY extract(epoch FROM first_reply_at - created_at))
           FILTER (WHERE first_reply_at IS NOT NULL) AS median_seconds
FROM sent GROUP BY domain ORDER BY domain
"""


@dataclass(frozen=True, slots=True)
class Overview:
    today: dict[str, int]
    domains: list[dict[str, Any]]  # domain, sent, replied, median_seconds (None: no reply)


async def overview(pool: Pool, tenant_id: UUID) -> Overview:
    async with storage_errors(), pool.acquire() as conn:
        today = await conn.fetchrow(TODAY, tenant_id)
        domains = await conn.fetch(PER_DOMAIN, tenant_id)
    return Overview(dict(today), [dict(row) for row in domains])

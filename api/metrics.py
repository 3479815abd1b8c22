"""The API process's own Prometheus series (the MX's are in `mta.metrics`; names per DESIGN)."""

from __future__ import annotations

from prometheus_client import Counter

INGEST_EVENTS = Counter(
    "opensend_ingest_events_total",
    "Provider events posted to an ingester endpoint, by source and outcome "
    "(stored, duplicate, refused, too_large, loop, storage, unauthorized; for ses-s3 also "
    "untrusted, invalid, confirmed, ignored, s3_missing, aws_unavailable).",
    ["source", "outcome"],
)

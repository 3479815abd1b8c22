"""Prometheus metrics of webhook delivery, named opensend_webhook_<thing>_<unit>."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

DELIVERIES = Counter(
    "opensend_webhook_deliveries_total",
    "Webhook delivery attempts by result: success (2xx), retry (to be tried again), "
    "failed (retries used up), unsafe (refused address), lost_lease (another worker took over)",
    ["result"],
)
ATTEMPT_SECONDS = Histogram(
    "opensend_webhook_attempt_duration_seconds",
    "Time from connecting to the endpoint to its answer (or the timeout)",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
ENDPOINTS_DISABLED = Counter(
    "opensend_webhook_endpoints_disabled_total",
    "Endpoints disabled after failing every attempt for 5 days",
)
# Refreshed every STATS_SECONDS by the workers; every process sees the same shared table.
PENDING = Gauge(
    "opensend_webhook_pending_deliveries",
    "Deliveries to enabled endpoints not yet done, by status (pending, attempting)",
    ["status"],
    multiprocess_mode="mostrecent",
)
OLDEST_PENDING_AGE = Gauge(
    "opensend_webhook_oldest_pending_age_seconds",
    "How long the longest-waiting due delivery has been due without being claimed",
    multiprocess_mode="mostrecent",
)

"""Prometheus metrics of the MX, the submission ports, outbound delivery and the authentication
checks of received mail, named opensend_<area>_<thing>_<unit>."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TypeVar

from prometheus_client import Counter, Gauge, Histogram

M = TypeVar("M", Counter, Gauge, Histogram)


@functools.lru_cache(maxsize=4096)
def labelled(metric: M, *values: str) -> M:
    """`metric.labels(*values)`, looked up once: labels() takes a lock and builds its key on
    every call, a few microseconds that the MX paid several times per message. The child's
    value follows the process across a fork (prometheus_client checks the pid on each use)."""
    return metric.labels(*values)


CONNECTIONS = Counter(
    "opensend_mx_connections_total",
    "SMTP connections to the MX, by whether they were served or refused at the cap",
    ["result"],
)
CONNECTIONS_ACTIVE = Gauge(
    "opensend_mx_connections_active", "SMTP connections open now", multiprocess_mode="livesum"
)
RCPT_VERDICTS = Counter(
    "opensend_mx_rcpt_verdicts_total",
    "RCPT TO decisions, by verdict (accept, defer, reject) and reason",
    ["verdict", "reason"],
)
MESSAGES_STORED = Counter(
    "opensend_mx_messages_stored_total",
    "Received messages committed, one per recipient tenant, by reply match status",
    ["match_status"],
)
MESSAGES_REFUSED = Counter(
    "opensend_mx_messages_refused_total",
    "Messages refused or deferred after DATA, by reason",
    ["reason"],
)
MESSAGE_BYTES = Counter(
    "opensend_mx_message_bytes_total", "Bytes of message content accepted by the MX"
)
STORAGE_FAILURES = Counter(
    "opensend_mx_storage_failures_total",
    "Storage failures answered with a temporary error, by stage",
    ["stage"],
)
PARSE_LATER = Counter(
    "opensend_mx_parse_later_total",
    "Received messages stored before their body was parsed, filled in after the commit",
)
DATA_TO_COMMIT = Histogram(
    "opensend_mx_data_to_commit_seconds",
    "Time from the end of DATA to the commit of the message",
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0),
)

# The submission ports, 587 and 465 (mta/submission/handler.py), counted apart from the MX.
SUBMISSION_CONNECTIONS = Counter(
    "opensend_submission_connections_total",
    "Connections to the submission ports, by whether they were served or refused at the cap",
    ["result"],
)
SUBMISSION_CONNECTIONS_ACTIVE = Gauge(
    "opensend_submission_connections_active",
    "Submission connections open now",
    multiprocess_mode="livesum",
)
SUBMISSION_AUTH_ATTEMPTS = Counter(
    "opensend_submission_auth_attempts_total",
    "AUTH attempts, by result (success, failure, lockout, locked_out, unavailable)",
    ["result"],
)
SUBMISSION_AUTH_LOCKOUTS = Counter(
    "opensend_submission_auth_lockouts_total",
    "Client addresses locked out after too many failed AUTH attempts",
)
SUBMISSION_MESSAGES_QUEUED = Counter(
    "opensend_submission_messages_queued_total",
    "Submitted messages committed with their deliveries, by whether replies are tracked",
    ["tracked"],
)
SUBMISSION_MESSAGES_REFUSED = Counter(
    "opensend_submission_messages_refused_total",
    "Submitted messages (MAIL FROM or after DATA) refused or deferred, by reason",
    ["reason"],
)
SUBMISSION_STORAGE_FAILURES = Counter(
    "opensend_submission_storage_failures_total",
    "Storage failures on the submission ports answered with a temporary error, by stage",
    ["stage"],
)

# Outbound delivery (mta/delivery/workers.py). The queue gauges are read from the database every
# QUEUE_STATS_SECONDS by one task per process; every process sees the same shared queue, so the
# most recent value is the one to show.
DELIVERY_QUEUE_DEPTH = Gauge(
    "opensend_delivery_queue_depth",
    "Deliveries waiting in the queue, by state (queued, deferred, sending)",
    ["state"],
    multiprocess_mode="mostrecent",
)
DELIVERY_OLDEST_DUE_AGE = Gauge(
    "opensend_delivery_oldest_due_age_seconds",
    "How long the longest-waiting due delivery has been due; 0 when none is waiting",
    multiprocess_mode="mostrecent",
)
DELIVERY_ATTEMPTS = Counter(
    "opensend_delivery_attempts_total",
    "Delivery attempts per recipient, by result (delivered, deferred, bounced)",
    ["result"],
)
DELIVERY_LATENCY = Histogram(
    "opensend_delivery_latency_seconds",
    "From the start of an attempt to the remote's final answer, by destination class "
    "(transport, relay, mx)",
    ["destination"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0),
)
DELIVERY_CONNECTIONS = Counter(
    "opensend_delivery_connections_total",
    "Outbound SMTP sessions, by result (opened, reused, failed)",
    ["result"],
)
DELIVERY_BACKUP_RECIPIENTS = Counter(
    "opensend_delivery_backup_recipients_total",
    "Recipients answered by a next host of the route, in the same attempt, after a host "
    "deferred them (mta/delivery/hops.py)",
)
DELIVERY_UNREACHABLE_HOSTS = Counter(
    "opensend_delivery_unreachable_hosts_total",
    "Failed connections that put their host after its route's others for a while",
)
DELIVERY_RECLAIMS_GIVEN_UP = Counter(
    "opensend_delivery_reclaims_given_up_total",
    "Deliveries failed because their lease ran out mid-attempt too many times in a row",
)

# Authentication checks of received mail (mta/authcheck/worker.py), in a process of their own;
# its samples reach /metrics through the multiprocess directory (mta/cli.py).
AUTHCHECK_RESULTS = Counter(
    "opensend_authcheck_results_total",
    "Authentication verdicts of received messages, by method (spf, dkim per signature, dmarc, "
    "arc) and result (pass, fail, none, temperror, ...)",
    ["method", "result"],
)
AUTHCHECK_DURATION = Histogram(
    "opensend_authcheck_duration_seconds",
    "Time to check one received message, every method and its DNS lookups included",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
AUTHCHECK_BACKLOG = Gauge(
    "opensend_authcheck_backlog_messages",
    "Received messages not checked yet (newer than the checker's watermark, without results), "
    "and rechecks due",
    multiprocess_mode="mostrecent",
)
AUTHCHECK_OLDEST_DUE_AGE = Gauge(
    "opensend_authcheck_oldest_due_age_seconds",
    "How long the longest-waiting message has waited for its check (since it was received, or "
    "since its recheck was due); 0 when none is waiting",
    multiprocess_mode="mostrecent",
)


# `opensend serve` always runs the MTA in more than one process (the auth checks have their
# own), so samples reach /metrics through the multiprocess directory, which exports a labelled
# series only once it exists. Label values that form a closed set are created here, at 0: rates
# and alert expressions see them from the start, and /metrics names each metric before its
# first event, as a single-process registry does.
_KNOWN_LABELS: list[tuple[Counter | Histogram, Sequence[tuple[str, ...]]]] = [
    (CONNECTIONS, [("served",), ("refused",)]),
    (MESSAGES_STORED, [("matched",), ("unmatched",)]),
    # The refusals after DATA that alerts may watch, present from the start.
    (MESSAGES_REFUSED, [("size",), ("memory",), ("bare_newline",)]),
    (SUBMISSION_MESSAGES_REFUSED, [("size",), ("memory",), ("bare_newline",)]),
    (STORAGE_FAILURES, [("rcpt",), ("data",)]),
    (DELIVERY_ATTEMPTS, [("delivered",), ("deferred",), ("bounced",)]),
    (DELIVERY_LATENCY, [("transport",), ("relay",), ("mx",)]),
    (DELIVERY_CONNECTIONS, [("opened",), ("reused",), ("failed",)]),
    (
        AUTHCHECK_RESULTS,
        [("spf", result) for result in ("pass", "fail", "softfail", "neutral", "none")]
        + [("dkim", result) for result in ("pass", "fail", "none", "permerror")]
        + [("dmarc", result) for result in ("pass", "fail", "none")]
        + [("arc", result) for result in ("pass", "fail", "none")]
        + [(method, "temperror") for method in ("spf", "dkim", "dmarc", "arc")],
    ),
]
for _metric, _label_sets in _KNOWN_LABELS:
    for _labels in _label_sets:
        _metric.labels(*_labels)

"""RFC 5322 date-time text (section 3.3), for the Date field of composed mail and the trace
fields of received mail."""

from __future__ import annotations

from datetime import datetime, timedelta
from email.utils import format_datetime

# The text of the last second seen: the same for every message of that second, and
# `format_datetime` costs a tenth of composing a message. Keyed by the offset too: the same
# instant in another zone is written differently. One process, one event loop: no lock.
_last: tuple[tuple[datetime, timedelta | None], str] | None = None


def rfc5322_date(when: datetime) -> str:
    """`when` (aware) as RFC 5322 date-time, to the second."""
    global _last
    second = when.replace(microsecond=0)
    key = (second, second.utcoffset())
    if _last is None or _last[0] != key:
        _last = (key, format_datetime(second))
    return _last[1]

"""`opensend serve --only mta` without its delivery workers and auth checks, for the submission
benchmark.

    python tests/perf/listeners_only.py        # settings from OPENSEND_* as for opensend serve

The same composition (mta.serve.serve): migrations, pool, the MX on OPENSEND_MX_LISTEN, the
submission ports, /metrics on OPENSEND_METRICS_LISTEN, the drain on SIGTERM. Left out: the
delivery workers, so that the messages submitted (all queued, none due elsewhere) do not put
delivery attempts beside the listeners being measured, and the auth-check process, so that the
mail of the MX runs is not checked beside them either: both rates are the listeners' own.
"""

from __future__ import annotations

import sys

from mta.cli import database_url
from mta.event_loop import run_in_loop
from mta.logs import configure_logging
from mta.serve import serve
from policy.settings import SettingsError, check_serve, load_settings


def main() -> int:
    try:
        settings = load_settings()
        check_serve(settings, "mta")
    except SettingsError as error:
        print(f"listeners_only: configuration error: {error}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    url = database_url(settings)
    run_in_loop(lambda: serve(settings, "mta", url, deliver=False, check_auth=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())

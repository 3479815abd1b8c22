"""Hypothesis keeps its example database and caches in a temporary directory, not the tree,
and has no time limits: the suite must pass on a busy machine, so only a falsifying example,
never a slow one, fails a property test."""

from __future__ import annotations

import os
import tempfile

from hypothesis import HealthCheck, settings
from hypothesis.configuration import set_hypothesis_home_dir

_HYPOTHESIS_HOME = tempfile.TemporaryDirectory(prefix="opensend-hypothesis-")
set_hypothesis_home_dir(_HYPOTHESIS_HOME.name)

settings.register_profile("opensend", deadline=None, suppress_health_check=[HealthCheck.too_slow])
# OPENSEND_HYPOTHESIS_EXAMPLES=5000 searches harder, for a run by hand.
settings.register_profile(
    "thorough",
    parent=settings.get_profile("opensend"),
    max_examples=int(os.environ.get("OPENSEND_HYPOTHESIS_EXAMPLES", "2000")),
)
settings.load_profile("thorough" if "OPENSEND_HYPOTHESIS_EXAMPLES" in os.environ else "opensend")

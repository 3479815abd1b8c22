"""Hypothesis keeps its example database and caches in a temporary directory, not the tree."""

from __future__ import annotations

import tempfile

from hypothesis.configuration import set_hypothesis_home_dir

_HYPOTHESIS_HOME = tempfile.TemporaryDirectory(prefix="opensend-hypothesis-")
set_hypothesis_home_dir(_HYPOTHESIS_HOME.name)

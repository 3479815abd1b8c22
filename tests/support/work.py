"""How much of a module's code a call runs: a measure of work that, unlike a clock, does not
depend on how busy the machine is, for tests that hostile input costs linear or bounded work."""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import FrameType, ModuleType
from typing import Any


def lines_run(module: ModuleType, call: Callable[[], object]) -> int:
    """How many lines of `module`'s own code run during `call()`."""
    count = 0

    def trace(frame: FrameType, event: str, arg: object) -> Any:
        nonlocal count
        if frame.f_code.co_filename != module.__file__:
            return None
        if event == "line":
            count += 1
        return trace

    previous = sys.gettrace()  # a coverage tool's, put back after
    sys.settrace(trace)
    try:
        call()
    finally:
        sys.settrace(previous)
    return count

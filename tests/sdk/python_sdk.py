"""The official `resend` Python SDK, unchanged, against the server: each call's answer held to
the TypedDict its method declares as its return type (pydantic, strict), as mypy-checked code
that reads it would trust it.

A call fails when the SDK raises, or when its answer lacks a required key or has a value of the
wrong type (a null where `str` is declared, a label outside a `Literal`). Extra keys are ours.
"""

from __future__ import annotations

import asyncio
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import resend
from pydantic import TypeAdapter, ValidationError


@dataclass(frozen=True)
class PyCall:
    name: str
    data: Any
    problem: str | None

    def why(self) -> str:
        return f"{self.name}: {self.problem}"


def declared_type(method: Callable[..., Any]) -> Any:
    return typing.get_type_hints(method)["return"]


def check(name: str, method: Callable[..., Any], data: Any) -> PyCall:
    try:
        TypeAdapter(declared_type(method)).validate_python(data, strict=True)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        return PyCall(name, data, problems)
    return PyCall(name, data, None)


class Recorder:
    """Runs SDK calls in a thread (the SDK is synchronous; the server runs on this loop)."""

    def __init__(self, api_key: str, url: str) -> None:
        self.calls: list[PyCall] = []
        resend.api_key, resend.api_url = api_key, url

    async def call(self, name: str, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            data = await asyncio.to_thread(method, *args, **kwargs)
        except Exception as error:  # the SDK's own exceptions, or a client failure
            self.calls.append(PyCall(name, None, f"SDK error {type(error).__name__}: {error}"))
            return None
        self.calls.append(check(name, method, data))
        return data

    def failed(self) -> list[str]:
        return [c.why() for c in self.calls if c.problem is not None]

"""Runs the official Node SDKs (tests/sdk/node, pinned by its package-lock.json) against the
server, and holds each call's data to the SDK's own TypeScript types with `tsc --strict`.

A call fails when the SDK reports an error, or when its data does not type-check as the type the
SDK declares for it (a missing field, a field of the wrong type, a label outside a union).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NODE_DIR = Path(__file__).parent / "node"

# The import that names each SDK's client class in the generated check, per script.
TYPE_IMPORTS = {
    "resend_calls.mjs": 'import type { Resend } from "resend";',
    "resend_webhook_events.mjs": 'import type { Resend } from "resend";',
    "inboundemail_calls.mjs": 'import type Inbound from "inboundemail";',
    "inbound_sdk_calls.mjs": 'import type { Inbound } from "@inboundemail/sdk";',
}

# `Data<F>`: what a successful call of method F holds in `data` ({data, error} SDKs).
# `Writable<T>`: the captured JSON with its literal types kept (`as const`) but writable, so it is
# checked like any value of that shape: extra fields are allowed, as they are for an API answer.
PRELUDE = """
type Data<F extends (...args: any) => any> = NonNullable<Awaited<ReturnType<F>>["data"]>;
type Writable<T> = { -readonly [K in keyof T]: Writable<T[K]> };
declare function writable<T>(value: T): Writable<T>;
"""


@dataclass(frozen=True)
class Call:
    name: str
    type: str
    data: Any
    error: Any
    type_errors: tuple[str, ...] = ()

    @property
    def failed(self) -> bool:
        return self.error is not None or bool(self.type_errors)

    def why(self) -> str:
        if self.error is not None:
            return f"{self.name}: SDK error {json.dumps(self.error)}"
        return f"{self.name}: " + " | ".join(self.type_errors)


def node_available() -> bool:
    return shutil.which("node") is not None and (NODE_DIR / "node_modules" / "resend").is_dir()


async def run_script(script: str, context: dict[str, Any], env: dict[str, str]) -> list[Call]:
    """Run one SDK script in Node (awaited, so the server on this loop keeps answering) and
    type-check what it captured."""
    process = await asyncio.create_subprocess_exec(
        "node",
        script,
        json.dumps(context),
        cwd=NODE_DIR,
        env={"PATH": os.environ["PATH"], **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, f"{script} exited {process.returncode}: {err.decode()}"
    captured = json.loads(out)
    calls = [Call(c["name"], c["type"], c["data"], c["error"]) for c in captured]
    return await type_check(script, calls)


async def type_check(script: str, calls: list[Call]) -> list[Call]:
    """One TypeScript file, two lines per successful call; tsc's errors map back by line."""
    lines = [TYPE_IMPORTS[script], *PRELUDE.strip().splitlines()]
    line_of_call: dict[int, int] = {}
    for index, found in enumerate(calls):
        if found.error is not None:
            continue
        lines.append(f"const v{index} = {json.dumps(found.data)} as const;")
        lines.append(f"const c{index}: {found.type} = writable(v{index});")
        line_of_call[len(lines) - 1] = index
        line_of_call[len(lines)] = index
    captured_dir = NODE_DIR / "captured"
    captured_dir.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=captured_dir) as folder:
        (Path(folder) / "check.mts").write_text("\n".join(lines) + "\n")
        project = {"extends": "../../tsconfig.json", "include": ["check.mts"]}
        (Path(folder) / "tsconfig.json").write_text(json.dumps(project))
        process = await asyncio.create_subprocess_exec(
            "node",
            str(NODE_DIR / "node_modules" / "typescript" / "bin" / "tsc"),
            "--project",
            folder,
            cwd=NODE_DIR,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await process.communicate()
    return attach_errors(calls, out.decode(), line_of_call)


_ERROR_LINE = re.compile(r"check\.mts\((\d+),\d+\): error (TS\d+: .*)")


def attach_errors(calls: list[Call], output: str, line_of_call: dict[int, int]) -> list[Call]:
    errors: dict[int, list[str]] = {}
    current: list[str] | None = None
    for text in output.splitlines():
        matched = _ERROR_LINE.search(text)
        if matched:
            index = line_of_call.get(int(matched.group(1)))
            assert index is not None, f"tsc error outside any call: {text}"
            current = errors.setdefault(index, [])
            current.append(matched.group(2))
        elif current is not None and text.strip():
            current.append(text.strip())
        elif text.strip():
            raise AssertionError(f"tsc failed: {output}")
    return [
        Call(c.name, c.type, c.data, c.error, tuple(errors.get(i, ()))) for i, c in enumerate(calls)
    ]

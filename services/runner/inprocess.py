"""`protocol: python` plugins: `entrypoint: module:function`, an async function from the
request dict to the response dict, run in the runner's event loop (a sync one in a thread).
Same validation and deadline as protocol 2, without the cost of a process spawn.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import importlib.util
import inspect
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from services.core import catalog
from services.runner import protocol, supervision

PluginFunction = Callable[[dict[str, Any]], Awaitable[dict[str, Any]] | dict[str, Any]]


@functools.cache
def load_function(directory: Path, entrypoint: str, plugin: str) -> PluginFunction:
    """Import `module:function`, preferring a module file inside the plugin directory."""
    module_name, sep, func_name = entrypoint.partition(":")
    if not sep or not module_name or not func_name:
        raise ValueError(f"python entrypoint must be module:function, got {entrypoint!r}")
    local = directory / (module_name.replace(".", "/") + ".py")
    if local.is_file():
        unique = f"headrace_plugins.{plugin}.{module_name}"
        spec = importlib.util.spec_from_file_location(unique, local)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[unique] = module
        spec.loader.exec_module(module)
    else:
        module = importlib.import_module(module_name)
    func = getattr(module, func_name, None)
    if not callable(func):
        raise ValueError(f"{entrypoint}: {func_name} is not a callable in {module_name}")
    plugin_function: PluginFunction = func  # what a plugin's entrypoint must be (Ductile's in-process contract)
    return plugin_function


async def run(
    manifest: catalog.Manifest, request: dict[str, Any], *, timeout_s: float, cancel: asyncio.Event | None = None
) -> protocol.Outcome:
    started = time.monotonic()

    def elapsed_ms() -> int:
        return int((time.monotonic() - started) * 1000)

    try:
        func = load_function(manifest.directory, manifest.entrypoint, manifest.name)
    except Exception as exc:
        return protocol.Outcome(status="failed", error=f"cannot load {manifest.entrypoint}: {exc}", retry=False)

    async def call() -> Any:
        if inspect.iscoroutinefunction(func):
            return await func(request)
        return await asyncio.to_thread(func, request)

    work = asyncio.ensure_future(call())
    waiters: set[asyncio.Future[Any]] = {work}
    cancel_task = asyncio.ensure_future(cancel.wait()) if cancel is not None else None
    if cancel_task is not None:
        waiters.add(cancel_task)
    done, _ = await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    if cancel_task is not None:
        cancel_task.cancel()
    if work not in done:
        work.cancel()
        if cancel_task is not None and cancel_task in done:
            return protocol.Outcome(
                status="cancelled", error="cancelled while running", retry=False, duration_ms=elapsed_ms()
            )
        return protocol.Outcome(
            status="timed_out",
            error=f"plugin exceeded its deadline of {timeout_s:g}s and was cancelled",
            duration_ms=elapsed_ms(),
        )
    raised = work.exception()
    if raised is not None:
        frames = traceback.format_exception(raised)
        return protocol.Outcome(
            status="failed",
            error=f"plugin raised {type(raised).__name__}: {raised}",
            stderr="".join(frames)[-supervision.STDERR_CAP_BYTES :],
            duration_ms=elapsed_ms(),
        )
    return protocol.interpret_response(work.result(), exit_code=None, stderr="", duration_ms=elapsed_ms())

"""The one way tests wait: poll a condition until it holds or a deadline passes.

`wait_until` / `async_wait_until` return the condition's last value (truthy once it held), for
`assert wait_until(...)`; `wait_for` / `async_wait_for` raise AssertionError naming what was awaited.
A negative check ("X never happens") waits for an event that proves the moment has passed, never
for a fixed time.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any


def wait_until(pred: Callable[[], Any], timeout: float, step: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(step)
    return pred()


def wait_for(pred: Callable[[], Any], timeout: float, what: str = "condition", step: float = 0.02,
             detail: Callable[[], str] | None = None) -> Any:
    value = wait_until(pred, timeout, step)
    if not value:
        raise AssertionError(f"timed out after {timeout:g} s waiting for {what}" + (f"; {detail()}" if detail else ""))
    return value


async def async_wait_until(pred: Callable[[], Any], timeout: float = 10.0, step: float = 0.02) -> Any:
    """Like `wait_until`; `pred` may also be a coroutine function (e.g. one that asks the API)."""
    async def value_of() -> Any:
        value = pred()
        return await value if inspect.isawaitable(value) else value

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await value_of()
        if value:
            return value
        await asyncio.sleep(step)
    return await value_of()


async def async_wait_for(pred: Callable[[], Any], timeout: float = 5.0, what: str = "condition",
                         step: float = 0.02) -> Any:
    value = await async_wait_until(pred, timeout, step)
    if not value:
        raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
    return value

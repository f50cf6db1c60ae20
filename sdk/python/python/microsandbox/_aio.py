"""Completion of the native core's awaitables (called from Rust, see ``sdk/python/src/aio.rs``)."""

from __future__ import annotations

import asyncio
from typing import Any


def complete(fut: asyncio.Future[Any], ok: bool, value: Any) -> None:
    """Runs on the event loop: resolves ``fut`` unless it was cancelled meanwhile."""
    if fut.done():
        return
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)

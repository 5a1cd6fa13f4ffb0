"""MeshClient's one-request-at-a-time rule holds even when a caller gives up (no kernel needed)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from x0tta.mesh.client import MeshClient


async def test_cancelled_call_keeps_the_socket_until_its_thread_is_done() -> None:
    client = MeshClient()
    inside = threading.Lock()
    overlaps: list[bool] = []

    def blocking(delay: float) -> float:
        overlaps.append(not inside.acquire(blocking=False))
        try:
            time.sleep(delay)
            return delay
        finally:
            inside.release()

    slow = asyncio.create_task(client._call(blocking, 0.3))
    await asyncio.sleep(0.05)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await slow
    # the next request waits for the abandoned one's thread instead of sharing the socket
    assert await client._call(blocking, 0.01) == 0.01
    assert overlaps == [False, False]

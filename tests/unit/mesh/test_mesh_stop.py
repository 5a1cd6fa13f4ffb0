"""The mesh subsystem stops when it is cancelled, also when a batman-adv event wakes it in the same
loop turn. On Python 3.11 ``asyncio.wait_for`` returns the event instead of raising the
cancellation in that turn, and the loop ran on: the mesh lab's check waited for ever on a service
it had cancelled right after the service's own settings changes woke it (x0tta.clock.outcome)."""

from __future__ import annotations

import asyncio
from typing import Any

from x0tta.config.mesh import MeshSettings
from x0tta.mesh.service import MeshService


async def test_a_cancel_in_the_turn_an_event_wakes_the_loop_stops_it() -> None:
    service = MeshService(MeshSettings(), overrides={})
    cycles: list[str] = []

    async def reconcile(_ctx: Any) -> None:
        cycles.append("reconcile")

    async def observe() -> None:
        cycles.append("observe")

    service._reconcile_reporting = reconcile  # type: ignore[method-assign]
    service.observe = observe  # type: ignore[method-assign]
    task = asyncio.create_task(service._loop(None))  # type: ignore[arg-type]
    for _ in range(5):  # the first reconcile and observe, then the wait for an event
        await asyncio.sleep(0)
    assert cycles == ["reconcile", "observe"] and not task.done()
    service._wake.set()  # a config event arrives ...
    task.cancel()  # ... in the turn the agent stops
    done, _ = await asyncio.wait([task], timeout=5.0)
    assert task in done and task.cancelled()

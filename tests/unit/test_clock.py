"""The clocks services read time through: the system one, and the manual one tests drive."""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path

import pytest

from tests.kit.clock import ManualClock
from x0tta.clock import SYSTEM, Clock


async def test_a_manual_sleep_wakes_when_the_time_passes_it_and_not_before() -> None:
    clock: Clock = ManualClock()
    t0 = clock.monotonic()
    woke: list[float] = []

    async def sleeper(seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append(clock.monotonic() - t0)

    tasks = [asyncio.create_task(sleeper(s)) for s in (5.0, 1.0, 60.0)]
    await asyncio.sleep(0)
    assert clock.sleepers == 3
    clock.advance(0.5)
    await asyncio.sleep(0)
    assert woke == []
    clock.advance(4.5)  # 1 s and 5 s are due now
    await asyncio.gather(*tasks[:2])
    assert woke == [5.0, 5.0] and clock.sleepers == 1
    await clock.pass_time(55.0)
    await tasks[2]
    assert woke == [5.0, 5.0, 60.0] and clock.sleepers == 0
    assert clock.time() - ManualClock().time() == 60.0  # the wall clock moved with it


async def test_a_manual_timeout_fires_on_manual_time_and_cancels_what_it_waited_for() -> None:
    clock = ManualClock()
    event = asyncio.Event()
    waiting = asyncio.ensure_future(event.wait())
    timed = asyncio.create_task(clock.wait_for(waiting, 2.0))
    await asyncio.sleep(0)
    assert not timed.done()
    await clock.pass_time(2.0)
    with pytest.raises(TimeoutError):
        await timed
    assert waiting.cancelled()
    # an awaitable that finishes first gives its result, and leaves no timer behind
    got = asyncio.create_task(clock.wait_for(asyncio.sleep(0, "done"), 2.0))
    assert await got == "done" and clock.sleepers == 0


async def test_time_does_not_go_back() -> None:
    with pytest.raises(ValueError):
        ManualClock().advance(-1.0)


async def test_the_system_clock_sleeps_and_times_out_for_real() -> None:
    t0 = SYSTEM.monotonic()
    await SYSTEM.sleep(0.01)
    assert SYSTEM.monotonic() > t0 and SYSTEM.time() > 1.7e9
    with pytest.raises(TimeoutError):
        await SYSTEM.wait_for(asyncio.Event().wait(), 0.01)


async def test_a_manual_call_later_runs_once_its_time_has_passed_unless_called_off() -> None:
    clock = ManualClock()
    calls: list[tuple[str, float]] = []
    clock.call_later(0.5, lambda what: calls.append((what, clock.monotonic())), "late")
    off = clock.call_later(0.2, calls.append, ("off", 0.0))
    clock.call_later(0.0, calls.append, ("now", clock.monotonic()))
    off.cancel()
    await asyncio.sleep(0)
    assert calls == [("now", 1000.0)]
    clock.advance(0.4)
    await asyncio.sleep(0)
    assert calls == [("now", 1000.0)]  # called off, and not due yet
    clock.advance(0.2)
    await asyncio.sleep(0)
    assert calls == [("now", 1000.0), ("late", pytest.approx(1000.6))]


async def test_a_cancel_in_the_turn_the_awaited_thing_finishes_is_not_swallowed() -> None:
    """``asyncio.wait_for`` on Python 3.11 returns the result here and its caller runs on (a service
    loop that never stops); the system clock's wait raises the cancellation."""
    event = asyncio.Event()
    turns = 0

    async def service_loop() -> None:
        nonlocal turns
        while True:
            turns += 1
            try:
                await SYSTEM.wait_for(event.wait(), 10.0)
            except TimeoutError:
                pass
            event.clear()

    task = asyncio.create_task(service_loop())
    await asyncio.sleep(0)
    event.set()
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=5.0)
    assert task in done and task.cancelled() and turns == 1


def test_no_module_waits_with_asyncio_wait_for() -> None:
    """Every timed wait in the package goes through a Clock (x0tta.clock.outcome says why)."""
    root = Path(__file__).resolve().parents[2] / "x0tta"
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            attr = isinstance(node, ast.Attribute) and node.attr == "wait_for" and isinstance(node.value, ast.Name) \
                and node.value.id == "asyncio"
            imported = isinstance(node, ast.ImportFrom) and node.module == "asyncio" and any(
                a.name == "wait_for" for a in node.names)
            if attr or imported:
                found.append(f"{path.relative_to(root.parent)}:{node.lineno}")
    assert not found, found

"""The SQLite outbox: order, idempotency, superseding, bounds, and kill -9 of a writer."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from x0tta.fleet.core.outbox import Priority
from x0tta.fleet.outbox import AsyncOutbox, Message, Outbox

ROOT = Path(__file__).resolve().parents[3]


def msg(key: str, priority: Priority = Priority.IMPORTANT, topic: str = "x0tta/nodes/n1/events/heal",
        coalesce: bool = False) -> Message:
    return Message(key, topic, key.encode(), int(priority), retain=coalesce, coalesce=coalesce)


def test_oldest_first_idempotent_and_removed_only_when_told(tmp_path):
    box = Outbox(tmp_path / "o.sqlite3", capacity=100)
    res = box.put([msg("a"), msg("b"), msg("a")])
    assert (res.stored, res.duplicates) == (2, 1)
    assert box.put([msg("c")]).stored == 1
    first = box.pending(10)
    assert [q.message.key for q in first] == ["a", "b", "c"]
    assert [q.message.key for q in box.pending(10, after=first[0].seq)] == ["b", "c"]
    assert box.remove([first[1].seq]) == 1
    box.close()
    box = Outbox(tmp_path / "o.sqlite3", capacity=100)  # a restart keeps the rest, in order
    assert box.keys() == ["a", "c"] and box.depth() == 2
    q = box.pending(10)
    assert q[0].message == msg("a")


def test_state_supersedes_undelivered_state_of_its_topic(tmp_path):
    box = Outbox(tmp_path / "o.sqlite3", capacity=100)
    box.put([msg("s1", topic="t/state", coalesce=True), msg("e1"), msg("s2", topic="t/state", coalesce=True)])
    res = box.put([msg("s3", topic="t/state", coalesce=True)])
    assert res.superseded == 1 and box.keys() == ["e1", "s3"]


def test_bounded_informational_first_and_counted(tmp_path):
    box = Outbox(tmp_path / "o.sqlite3", capacity=3)
    box.put([msg("i1", Priority.INFO), msg("m1"), msg("i2", Priority.INFO)])
    res = box.put([msg("m2")])
    assert res.dropped == {int(Priority.INFO): 1} and box.keys() == ["m1", "i2", "m2"]
    box.put([msg("m3")])
    assert box.keys() == ["m1", "m2", "m3"]
    res = box.put([msg("i3", Priority.INFO)])  # full of important messages: the newcomer is dropped
    assert res.stored == 0 and res.dropped == {int(Priority.INFO): 1} and box.keys() == ["m1", "m2", "m3"]
    res = box.put([msg("m4")])  # only important left: the oldest of them makes room
    assert res.dropped == {int(Priority.IMPORTANT): 1} and box.keys() == ["m2", "m3", "m4"]
    assert box.counter("dropped") == 4 and box.depth() == 3


def test_sessions_grow_across_restarts(tmp_path):
    box = Outbox(tmp_path / "o.sqlite3", capacity=3)
    assert [box.next_session(), box.next_session()] == [1, 2]
    box.close()
    assert Outbox(tmp_path / "o.sqlite3", capacity=3).next_session() == 3


async def test_async_outbox_runs_on_its_thread(tmp_path):
    box = AsyncOutbox(tmp_path / "o.sqlite3", capacity=10)
    await box.open()
    assert (await box.put([msg("a"), msg("b")])).stored == 2 and box.depth == 2
    pending = await box.pending(1)
    assert [q.message.key for q in pending] == ["a"]
    assert await box.remove([pending[0].seq]) == 1 and box.depth == 1
    assert await box.next_session() == 1
    await box.close()


WRITER = textwrap.dedent("""
    import sys
    from x0tta.fleet.outbox import Message, Outbox
    box = Outbox(sys.argv[1], capacity=1_000_000)
    i = 0
    while True:
        key = f"m{i}"
        box.put([Message(key, "x0tta/nodes/n1/events/heal", b"x" * 200)])
        print(key, flush=True)  # acknowledged to the caller: put returned
        i += 1
""")


def test_every_message_acknowledged_before_kill_9_is_in_the_store(tmp_path):
    path = tmp_path / "o.sqlite3"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True, env=env)
    acked = []
    try:
        assert proc.stdout is not None
        while len(acked) < 300:
            line = proc.stdout.readline()
            assert line, "the writer died"
            acked.append(line.strip())
        proc.send_signal(signal.SIGKILL)  # mid-write, most likely inside a transaction
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    box = Outbox(path, capacity=1_000_000)
    keys = box.keys()
    assert set(acked) <= set(keys)
    assert keys == [f"m{i}" for i in range(len(keys))]  # in order, no gap: nothing half-written
    assert box.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

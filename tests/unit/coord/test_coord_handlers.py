"""The file-of-settings change handler: apply returns what rollback restores, absent included."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from x0tta.common.errors import DecodeError
from x0tta.coord.core.rollout import Change, Sample
from x0tta.coord.handlers import FileSettings


async def test_apply_and_rollback_restore_the_file(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"mesh.orig_interval": 1000}))
    h = FileSettings(str(path))
    prev = await h.apply(Change("mesh.orig_interval", 500))
    assert json.loads(path.read_text()) == {"mesh.orig_interval": 500}
    new = await h.apply(Change("guard.mode", "enforce"))
    await h.rollback(Change("guard.mode", "enforce"), new)  # a setting that was not there goes again
    await h.rollback(Change("mesh.orig_interval", 500), prev)
    assert json.loads(path.read_text()) == {"mesh.orig_interval": 1000}
    assert await h.sample() == Sample()


async def test_a_broken_file_is_a_decode_error(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text("[1, 2")
    with pytest.raises(DecodeError):
        await FileSettings(str(path)).apply(Change("a.b", 1))

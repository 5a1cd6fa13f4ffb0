"""A real 3-member etcd cluster per test module (tests/kit/etcd.py), stopped after it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.kit.etcd import Cluster


@pytest.fixture
def cluster(tmp_path: Path):
    c = Cluster(tmp_path / "etcd", clients=("operator", "n1", "n2", "n3", "n4", "n5"))
    c.start()
    yield c
    c.stop()

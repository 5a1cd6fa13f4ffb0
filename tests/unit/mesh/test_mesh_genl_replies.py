"""A GET answered with a record of another kind is the kernel's error, raised as MeshError (not an
assert that ``python -O`` strips): the socket is not opened, the reply is handed in."""

from __future__ import annotations

import pytest

from x0tta.mesh.core import batadv
from x0tta.mesh.genl import BatadvSocket, MeshError


class OtherRecord(batadv.Record):
    pass


@pytest.mark.parametrize(("call", "wanted"), [
    (lambda s: s.mesh_info(1), "MeshInfo"),
    (lambda s: s.hardif(1, 2), "HardIf"),
    (lambda s: s.vlan(1, 5), "Vlan"),
])
def test_a_reply_of_another_kind_is_a_mesh_error(monkeypatch, call, wanted) -> None:
    sock = BatadvSocket()
    monkeypatch.setattr(sock, "get", lambda cmd, **selectors: OtherRecord.__new__(OtherRecord))
    with pytest.raises(MeshError, match=f"the kernel answered with OtherRecord, not {wanted}"):
        call(sock)

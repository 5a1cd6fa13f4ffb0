"""A stand-in for the guard's kernel maps, for tests that run without a kernel.

:class:`DictMap` answers the :class:`~x0tta.guard.enforce.AdmittedMap` calls the way a BPF hash
or array map does (bytes keys and values, ``delete`` says whether the key was there), so the
guard and the wiring that hands it the probes' maps are exercised as they run on a node; the real
maps are tested in ``tests/integration/test_probes_kernel.py``.
"""

from __future__ import annotations


class DictMap:
    def __init__(self, data: dict[bytes, bytes] | None = None) -> None:
        self.data = dict(data or {})

    def update(self, key: bytes, value: bytes, flags: int = 0) -> None:
        self.data[bytes(key)] = bytes(value)

    def delete(self, key: bytes) -> bool:
        return self.data.pop(bytes(key), None) is not None

    def items(self) -> list[tuple[bytes, bytes]]:
        return list(self.data.items())

"""Tampering with backup bundles, for the tests that must see them refused.

``rewrite(bundle, out, edit)`` copies a bundle's tar member by member, passing the members (a dict
of name to bytes, in order) through ``edit``, which changes, adds or drops what it likes.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable
from pathlib import Path


def rewrite(bundle: Path, out: Path, edit: Callable[[dict[str, bytes]], dict[str, bytes]]) -> None:
    with tarfile.open(bundle) as src:
        members = {}
        for m in src:
            f = src.extractfile(m)
            assert f is not None, m.name
            members[m.name] = f.read()
    with tarfile.open(out, "w") as dst:
        for name, data in edit(members).items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            dst.addfile(info, io.BytesIO(data))

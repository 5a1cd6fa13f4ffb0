"""The test kit's namespace helpers: a scratch namespace, and entering it from this thread."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.conftest import require_root
from tests.kit.netns import in_netns, run_script, scratch_netns

pytestmark = pytest.mark.integration


def test_in_netns_enters_the_namespace_for_the_block_only() -> None:
    require_root()
    own = os.readlink("/proc/thread-self/ns/net")
    with scratch_netns("x0kit") as ns:
        with in_netns(ns):
            inside = os.readlink("/proc/thread-self/ns/net")
            links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
        assert inside != own and os.readlink("/proc/thread-self/ns/net") == own
        assert links.splitlines() and all(": lo:" in line for line in links.splitlines())  # a new namespace
        # a script run there can import the kit
        assert run_script(ns, "import json, tests.kit.wait; print(json.dumps(1))") == 1

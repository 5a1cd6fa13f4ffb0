"""The pinger's sample file: read back whole, and what a killed pinger left is still read."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from x0tta.lab.pinger import read_samples


def test_samples_are_read_back_and_a_cut_last_line_is_skipped(tmp_path):
    path = tmp_path / "p.samples"
    path.write_text("s 0 1.000000\ns 1 1.020000\nr 0 1.000500\ns 2 1.040000\nr 2 1.04")
    assert read_samples(path) == [[0, 1.0, 1.0005], [1, 1.02, None], [2, 1.04, None]]


@pytest.mark.integration
@pytest.mark.skipif(os.geteuid() != 0, reason="raw ICMP sockets need root")
def test_a_pinger_killed_with_sigkill_leaves_what_it_measured(tmp_path):
    out = tmp_path / "p.samples"
    proc = subprocess.Popen([sys.executable, "-m", "x0tta.lab.pinger", "127.0.0.1", "0.01", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    with proc:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        time.sleep(1.0)
        os.kill(proc.pid, signal.SIGKILL)  # no grace, no final write
        proc.wait()
    rows = read_samples(out)
    assert len(rows) >= 50, len(rows)  # ~100 sent; all but the last quarter second flushed
    assert sum(1 for r in rows if r[2] is not None) >= 0.9 * len(rows) - 5

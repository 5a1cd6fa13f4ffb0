"""``x0tta rollout`` against a real etcd cluster: bytes, start, status, pause, resume, abort."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.kit.etcd import Cluster
from x0tta.cli.main import main
from x0tta.coord.core.rollout import Rollout, signed_bytes

pytestmark = pytest.mark.integration
DOC = {"id": "r-cli", "change": {"setting": "mesh.orig_interval", "value": 500}, "targets": ["n*"], "wave": 1,
       "soak": 5, "abort": {"worse_share": 0.2}}


def test_rollout_commands(cluster: Cluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = cluster.files("operator")
    conn = ["--endpoints", ",".join(cluster.endpoints), "--cert", f["cert_file"], "--key", f["key_file"],
            "--ca", f["ca_file"], "--prefix", "/cli-test"]
    doc = tmp_path / "r.json"
    doc.write_text(json.dumps(DOC))
    assert main(["rollout", "bytes", str(doc)]) == 0
    assert capsys.readouterr().out.encode() == signed_bytes(Rollout.from_json(DOC))
    sig = tmp_path / "r.sig"
    sig.write_bytes(b"s" * 64)
    # no node registered: nothing to roll out to
    assert main(["rollout", *conn, "start", str(doc), "--signature", str(sig)]) == 1
    assert "no registered node matches" in capsys.readouterr().err
    cluster.call(cluster.members[0], "/v3/kv/put", {"key": "L2NsaS10ZXN0L25vZGVzL24x", "value": "e30="})  # nodes/n1
    assert main(["rollout", *conn, "start", str(doc), "--signature", str(sig)]) == 0
    assert "started on 1 of the registered nodes (n1)" in capsys.readouterr().out
    assert main(["rollout", *conn, "start", str(doc), "--signature", str(sig)]) == 1
    assert "exists already" in capsys.readouterr().err
    assert main(["rollout", *conn, "pause", "r-cli"]) == 0
    assert "paused" in capsys.readouterr().out
    assert main(["rollout", *conn, "status", "r-cli", "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st[0]["phase"] == "paused" and st[0]["targets"] == ["n1"]
    assert main(["rollout", *conn, "resume", "r-cli"]) == 0
    capsys.readouterr()
    assert main(["rollout", *conn, "abort", "r-cli", "--reason", "test"]) == 0
    assert "rolled_back" in capsys.readouterr().out  # nothing had changed
    assert main(["rollout", *conn, "status"]) == 0
    assert "r-cli" in capsys.readouterr().out
    assert main(["rollout", *conn, "abort", "r-cli"]) == 1
    assert "cannot abort" in capsys.readouterr().err

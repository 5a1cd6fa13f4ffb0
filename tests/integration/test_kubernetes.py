"""The Kubernetes base (deploy/kubernetes/base/) as a cluster would get it.

Rendered by ``kubectl kustomize`` (Debian's ``kubernetes-client``), every object is validated against
the Kubernetes API's own schemas (``kubernetes-validate``, strict: an unknown or misspelt field
fails) for the oldest and the newest Kubernetes versions it knows; then the DaemonSet is held to what
the agent needs and no more (host network, bpffs, three capabilities, not privileged), and the
config it mounts is one the agent loads.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
import tomllib
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import all_versions, latest_version

from tests.conftest import ROOT

pytestmark = pytest.mark.integration

BASE = ROOT / "deploy/kubernetes/base"
CAPS = {"NET_ADMIN", "NET_RAW", "BPF"}  # the systemd unit's; PERFMON and SYS_ADMIN are not needed (docs/ebpf.md)


@pytest.fixture(scope="module")
def rendered() -> dict[str, dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is required (Debian package kubernetes-client, scripts/install-system-deps.sh)"
    res = subprocess.run([kubectl, "kustomize", str(BASE)], capture_output=True, text=True, check=False, timeout=60)
    assert res.returncode == 0, res.stderr
    docs = [d for d in yaml.safe_load_all(res.stdout) if d]
    by_kind = {d["kind"]: d for d in docs}
    assert sorted(by_kind) == ["ConfigMap", "DaemonSet", "Namespace"] and len(docs) == 3, [d["kind"] for d in docs]
    return by_kind


@pytest.mark.parametrize("version", [min(all_versions()), latest_version()])
def test_every_object_validates_against_the_kubernetes_schemas(rendered, version) -> None:
    for obj in rendered.values():
        kubernetes_validate.validate(obj, version, strict=True)


def test_the_validation_would_catch_a_misspelt_field(rendered) -> None:
    bad = copy.deepcopy(rendered["DaemonSet"])
    bad["spec"]["template"]["spec"]["containers"][0]["securityContext"]["privilegd"] = False
    with pytest.raises(kubernetes_validate.ValidationError, match="privilegd"):
        kubernetes_validate.validate(bad, latest_version(), strict=True)


def test_the_daemonset_gets_what_the_agent_needs_and_no_more(rendered) -> None:
    ds = rendered["DaemonSet"]
    assert ds["metadata"]["namespace"] == rendered["Namespace"]["metadata"]["name"] == "x0tta"
    assert ds["spec"]["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}}
    pod = ds["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True and pod["automountServiceAccountToken"] is False
    assert not pod.get("hostPID") and not pod.get("hostIPC")
    (agent,) = pod["containers"]
    assert not pod.get("initContainers")
    sec = agent["securityContext"]
    assert sec["privileged"] is False and sec["allowPrivilegeEscalation"] is False and sec["readOnlyRootFilesystem"]
    assert sec["capabilities"]["drop"] == ["ALL"] and set(sec["capabilities"]["add"]) == CAPS
    assert not {"SYS_ADMIN", "PERFMON"} & set(sec["capabilities"]["add"])
    for kind in ("requests", "limits"):
        assert set(agent["resources"][kind]) == {"cpu", "memory"}, agent["resources"]

    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in agent["volumeMounts"]}
    assert volumes[mounts["/sys/fs/bpf"]]["hostPath"]["path"] == "/sys/fs/bpf"
    assert volumes[mounts["/var/lib/x0tta"]]["hostPath"]["path"] == "/var/lib/x0tta"
    config_map = rendered["ConfigMap"]
    assert volumes[mounts["/etc/x0tta"]]["configMap"]["name"] == config_map["metadata"]["name"]
    assert agent["command"] == ["x0tta-agent", "--config", "/etc/x0tta/agent.toml"]


def test_the_mounted_config_is_one_the_agent_loads(rendered, tmp_path) -> None:
    from x0tta.config.loader import load_settings

    body = rendered["ConfigMap"]["data"]["agent.toml"]
    path = tmp_path / "agent.toml"
    path.write_text(body)
    settings = load_settings(path, {})
    assert (settings.node.state_dir, settings.node.runtime_dir) == ("/var/lib/x0tta", "/run/x0tta")
    assert settings.logging.format == "json"
    # the kubelet's probes reach the endpoint where the config puts it
    agent = rendered["DaemonSet"]["spec"]["template"]["spec"]["containers"][0]
    for probe in ("livenessProbe", "readinessProbe"):
        get = agent[probe]["httpGet"]
        assert (get["host"], get["port"]) == (settings.metrics.address, settings.metrics.port)
    assert tomllib.loads(body)["metrics"]["address"] == "127.0.0.1"

#!/usr/bin/env bash
# System packages the tests and the lab need, from Debian 12's archive. Idempotent: installs only
# what is missing, so a machine that has everything makes no network call.
set -euo pipefail
PKGS=(
  python3-venv            # the project's virtualenv
  prometheus              # promtool: /metrics and the alert rules are checked with it
  prometheus-alertmanager # amtool: the example Alertmanager config is checked with it
  systemd                 # systemd-analyze: the unit file is verified and scored with it
  iproute2                # ip netns / veth / tc for integration tests
  user-mode-linux         # the lab's kernel (Linux 6.1 with batman-adv) as a process
  batctl                  # batman-adv's reference tool: the lab compares the agent with it
  iputils-ping            # ping inside the lab
  kmod                    # modprobe: the lab guest loads batman-adv, veth, netem from UML's modules
  gcc libc6-dev           # builds the lab's UML shim (x0tta/lab/uml_xstate.c) for hosts with AVX-512 or AMX
  iperf3                  # throughput for eBPF counter and overhead checks
  clang llvm              # builds the eBPF objects
  libbpf-dev libbpf1      # eBPF headers, and libbpf.so.1 that the loader calls
  bpftool                 # inspecting loaded programs and maps in tests
  adduser                 # the Debian package's postinst makes the x0tta user with it (tests/integration/test_deb_package.py)
  mosquitto               # the MQTT broker the fleet plane's integration tests start (TLS, client certificates, ACL)
  etcd-server etcd-client # etcd 3.4: the coordination engine; the coord tests start a 3-member cluster of their own
)
# kubectl renders the Kubernetes base (kubectl kustomize, tests/integration/test_kubernetes.py): Debian's
# kubernetes-client, unless a kubectl is already installed (dpkg refuses to overwrite /usr/bin/kubectl of
# another package, e.g. a cloud SDK's; any kubectl with `kustomize` renders the base).
command -v kubectl >/dev/null || PKGS+=(kubernetes-client)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-system-deps: need root to install: ${missing[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  echo "install-system-deps: installed ${missing[*]}"
fi
# Debian's etcd-server package starts its own member (etcd.service on 2379/2380) on install. The
# tests start their own clusters on free ports and a node runs etcd only where the operator chose
# (docs/coordination.md): keep the package's service stopped and disabled.
if command -v systemctl >/dev/null 2>&1 && systemctl list-unit-files etcd.service >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then
    systemctl disable --now etcd.service >/dev/null 2>&1 || true
  fi
fi

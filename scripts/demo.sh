#!/bin/sh
# `make demo`: a 5-node batman-adv ring comes up in User-Mode Linux with an x0tta agent on every
# node, a ping runs n1 -> n2 every 20 ms, the link n1-n2 fails, batman-adv routes around it, the
# link comes back, and the timeline is printed (events, outage, time to restore). Then the same
# scenario runs with batman-adv alone, and the two are printed side by side. Needs root; the
# packages it needs are installed when missing. Results: lab-out/demo/ and lab-out/demo-alone/
# (docs/lab.md). Extra arguments go to a single `x0tta lab run` instead (e.g. --no-agents).
set -eu
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
if [ "$#" -gt 0 ]; then
    exec "$BIN/python" -m x0tta.cli.lab run configs/lab/ring.toml --out lab-out/demo "$@"
fi
"$BIN/python" -m x0tta.cli.lab run configs/lab/ring.toml --out lab-out/demo
echo
echo "== the same scenario with batman-adv alone (no agents) =="
"$BIN/python" -m x0tta.cli.lab run configs/lab/ring.toml --out lab-out/demo-alone --no-agents --quiet > /dev/null
"$BIN/python" -m x0tta.cli.lab compare lab-out/demo lab-out/demo-alone

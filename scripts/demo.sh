#!/bin/sh
# `make demo`: a 5-node batman-adv ring comes up in User-Mode Linux with an x0tta agent on every
# node, a ping runs n1 -> n2 every 20 ms, the link n1-n2 fails, batman-adv routes around it, the
# link comes back, and the timeline is printed (events, outage, time to restore). Needs root; the
# packages it needs are installed when missing. Results: lab-out/demo/ (docs/lab.md).
# Extra arguments go to `x0tta lab run` (e.g. --no-agents for the batman-adv-only baseline).
set -eu
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
exec "$BIN/python" -m x0tta.cli.lab run configs/lab/ring.toml --out lab-out/demo "$@"

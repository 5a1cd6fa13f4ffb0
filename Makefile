# x0tta developer entry points. `make setup` once, then `make test`.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)

deps:
	bash scripts/install-system-deps.sh

.PHONY: deps ci setup test test-fast lint audit bench chaos demo run-dev ebpf config-reference deb dashboard clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Python dependencies pinned by constraints.txt (the versions the tests ran with).
setup: $(BIN)/python
	$(BIN)/pip install -q -c constraints.txt -e '.[dev,fast]'

ebpf:
	$(MAKE) -C ebpf

lint:
	$(BIN)/ruff check x0tta tests scripts
	$(BIN)/lint-imports

# Known vulnerabilities in the locked set (constraints.txt), through pip-audit. Fails on one that
# scripts/audit-ignore.toml does not list with a reason; says so loudly when it could not check.
audit:
	$(BIN)/python scripts/audit-deps.py --out ci-artifacts

# Everything CI runs: lint, unit, fuzz, integration (root, kernel), lab (User-Mode Linux), under
# coverage: printed per package and held to tests/coverage-floors.toml (scripts/coverage-check.py);
# the reports (coverage.xml, coverage.txt, packages.txt) land in ci-artifacts/. Fails if the tests
# fail or a package is under its floor.
test: lint
	mkdir -p ci-artifacts
	status=0; $(BIN)/python -m coverage run -m pytest -q -p no:cacheprovider || status=$$?; \
	$(BIN)/python scripts/coverage-check.py --out ci-artifacts || [ $$status -ne 0 ] || status=1; \
	exit $$status

# The seeded chaos lab alone (part of make test too): 30 random faults with agents and alone, the
# two zeros asserted (~17-20 min).
chaos:
	$(BIN)/python -m pytest -q -p no:cacheprovider -s -m chaos

# Pure code only: no root, no kernel features, seconds.
test-fast:
	$(BIN)/python -m pytest -q -m "not integration and not lab and not fuzz and not slow"

bench:
	ONLY=$(ONLY) $(BIN)/python tests/bench/run_all.py

# The README's test command: everything from a fresh machine to a full test run (as root).
ci: deps setup ebpf audit test

# The main job, from a fresh machine (as root): a 5-node batman-adv ring in User-Mode Linux with an
# agent on every node; a link fails; the timeline is printed. Results in lab-out/demo/.
demo: deps setup ebpf
	BIN=$(BIN) sh scripts/demo.sh

# One agent in the foreground on this machine, unprivileged paths (configs/dev.toml).
run-dev:
	$(BIN)/x0tta-agent --config configs/dev.toml

# The Debian package, dist/x0tta_<version>_<arch>.deb (scripts/build-deb.sh; docs/operations.md).
# DEB_VERSION=... overrides the version (the package test builds a higher one to upgrade to).
deb: ebpf
	DEB_VERSION=$(DEB_VERSION) bash scripts/build-deb.sh

config-reference:
	$(BIN)/x0tta config reference > configs/agent.toml
	$(BIN)/x0tta config reference --markdown > docs/configuration.md

# The Grafana dashboard, generated from its panels in x0tta/telemetry/dashboard.py.
dashboard:
	$(BIN)/python -m x0tta.telemetry.dashboard > configs/grafana/x0tta-fleet.json

clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache ci-artifacts

# rudder: the two commands that matter are `make demo` and `make test`; both set up
# everything they need from nothing (Debian packages, Go builds, the virtualenv).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export RUDDER_CACHE ?= $(HOME)/.cache/rudder
PYTEST_ARGS ?=

.PHONY: all setup host-deps tools venv lint typecheck unit e2e test demo demo-stop bench chaos cluster-up cluster-down clean

all: test

setup: host-deps tools venv

host-deps:
	@bash e2e/install-host-deps.sh

tools: host-deps
	@bash e2e/build-tools.sh
	@bash e2e/build-kstatus-compare.sh >/dev/null

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

lint: venv
	$(BIN)/ruff check operator tests e2e
	$(BIN)/ruff format --check operator tests e2e
	$(BIN)/lint-imports
	$(BIN)/hadolint Dockerfile

typecheck: venv
	$(BIN)/mypy

unit: venv
	$(BIN)/pytest tests $(PYTEST_ARGS)

e2e: setup
	$(BIN)/pytest e2e $(PYTEST_ARGS)

# Every test: lint, types, unit tests, then the end-to-end suite on a fresh local control plane.
test: setup lint typecheck
	$(BIN)/pytest tests e2e $(PYTEST_ARGS)

# Start the local control plane (unless a kubeconfig context is set), push a sample chart,
# install the CRD, run the operator, apply a sample HelmRelease and show `kubectl get rhr`;
# rudder keeps running afterwards (`make demo-stop`).
demo: setup
	$(BIN)/python e2e/demo.py

# Stop the rudder `make demo` left running.
demo-stop:
	$(BIN)/python e2e/demo.py stop

# The scale benchmark on its own local control plane (e2e/bench/README.md); N=200 default.
# --flux builds Flux's two controllers on first use (e2e/build-tools.sh flux).
N ?= 200
bench: setup
	$(BIN)/python e2e/bench/bench_releases.py --n $(N) --replicas 0,1 --helm-baseline --flux

# Fault injection on its own local control plane (e2e/chaos/README.md): kill -9 the operator
# CHAOS_KILLS times during waves of CHAOS_N HelmReleases, kill the leader of two replicas,
# restart kube-apiserver, stop the registry; report in artifacts/chaos/<timestamp>/.
CHAOS_N ?= 50
CHAOS_KILLS ?= 22
chaos: setup
	$(BIN)/python e2e/chaos/chaos.py --n $(CHAOS_N) --kills $(CHAOS_KILLS)

cluster-up: setup
	$(BIN)/python e2e/localcluster.py up

cluster-down:
	$(BIN)/python e2e/localcluster.py down

clean: cluster-down
	rm -rf $(VENV) .cluster artifacts

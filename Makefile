# One-command set-up: every target creates .venv and installs the pinned project on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# Flower keeps its connections and state here, never in the user's ~/.flwr.
export FLWR_HOME := $(CURDIR)/.flwr
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION := 1

.PHONY: install lint test run sweep bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -e ".[dev]"
	touch $(STAMP)

# Static checks (CI runs them before the tests): ruff lint, ruff format, mypy.
lint: $(STAMP)
	$(VENV)/bin/ruff check amp_fl tests
	$(VENV)/bin/ruff format --check amp_fl tests
	$(VENV)/bin/mypy

test: $(STAMP)
	$(PY) -m pytest -q

# The main job: AMP-FL, 100 simulated PIUs, 10 RBs, the paper's CNN on MNIST (offline: mnist5k).
run: $(STAMP)
	$(PY) -m amp_fl experiment=main

# A Hydra multirun over the pruning ratio (fixed-ratio mode), one Flower run per value.
sweep: $(STAMP)
	$(PY) -m amp_fl -m experiment=sweep_ratio pruning.ratio=0.1,0.3,0.5,0.7

bench: $(STAMP)
	$(PY) -m amp_fl.bench all

clean:
	rm -rf runs multirun outputs .flwr .pytest_cache

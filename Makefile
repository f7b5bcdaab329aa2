# weightshare: common tasks. `make test` and `make demo` set up the virtual environment first.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
# torch first, pinned: an unpinned torch would pull a multi-GB CUDA build on CPU machines.
TORCH ?= torch==2.13.0

.PHONY: setup demo test test-all lint bench mutation clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check "$(TORCH)"
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $@

# The main job: a CNN and an FCN on the embedded digits data, then a table of accuracies.
demo: setup
	$(PY) train.py -m experiment=quickstart

test: setup
	$(PY) -m pytest -q

test-all: setup
	$(PY) -m pytest -q -m ""

lint: setup
	$(PY) -m ruff check src tests scripts train.py

# Mutation testing of the modules behind the reported numbers ([tool.mutmut] in pyproject.toml;
# docs/testing.md has the last results). Slow (tens of minutes on 2 cores), not part of CI.
MUTMUT_CHILDREN ?= 2
mutation: setup
	OMP_NUM_THREADS=1 $(VENV)/bin/mutmut run --max-children $(MUTMUT_CHILDREN)
	$(VENV)/bin/mutmut results

bench: setup
	$(PY) scripts/bench_layers.py
	$(PY) scripts/bench_augment.py

clean:
	rm -rf outputs multirun mutants .pytest_cache .ruff_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

# weightshare: common tasks. `make test` and `make demo` set up the virtual environment first.
# `make help` lists the targets (each documented by its `## ` comment).
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
# torch first, pinned: an unpinned torch would pull a multi-GB CUDA build on CPU machines.
TORCH ?= torch==2.13.0
LINT_PATHS := src tests scripts train.py

.PHONY: help setup demo test test-all lint format bench mutation wheelhouse clean
.DEFAULT_GOAL := help

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  make %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

setup: $(VENV)/.installed ## create .venv: torch==2.13.0 first, then the project with its dev extra

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check "$(TORCH)"
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $@

demo: setup ## the main job: a CNN and an FCN on the bundled digits, a table of accuracies, the report command
	$(PY) train.py -m experiment=quickstart

test: setup ## the default test suite (slow tests deselected)
	$(PY) -m pytest -q

test-all: setup ## every test, the slow real-data ones too
	$(PY) -m pytest -q -m ""

lint: setup ## ruff check and ruff format --check (what CI runs)
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)

format: setup ## run every pre-commit hook over the tree, fixing what they fix (ruff, YAML, end of files)
	@# a hook that fixed files fails the first pass; the second pass fails only on what is left
	PATH="$(abspath $(VENV))/bin:$$PATH" $(VENV)/bin/pre-commit run --all-files \
	  || PATH="$(abspath $(VENV))/bin:$$PATH" $(VENV)/bin/pre-commit run --all-files

bench: setup ## layer and augmentation benchmarks (JSON + tables)
	$(PY) scripts/bench_layers.py
	$(PY) scripts/bench_augment.py

# [tool.mutmut] in pyproject.toml; docs/testing.md has the last results. Tens of minutes on 2 cores.
MUTMUT_CHILDREN ?= 2
mutation: setup ## mutation testing of the modules behind the reported numbers (not part of CI)
	OMP_NUM_THREADS=1 $(VENV)/bin/mutmut run --max-children $(MUTMUT_CHILDREN)
	$(VENV)/bin/mutmut results

# Wheels for a compute node without internet (README, "SLURM", compute nodes without internet): the
# node's Python version (e.g. 311) and the platform tags it accepts; default: this machine's.
WHEELHOUSE ?= wheelhouse
PYTHON_VERSION ?=
PLATFORM ?=
wheelhouse: ## wheels of every dependency but torch into $(WHEELHOUSE)/ (PYTHON_VERSION=311 PLATFORM="manylinux_2_28_x86_64 manylinux2014_x86_64")
	$(PYTHON) scripts/wheelhouse.py $(WHEELHOUSE) $(if $(PYTHON_VERSION),--python-version $(PYTHON_VERSION)) \
	  $(foreach tag,$(PLATFORM),--platform $(tag))

clean: ## remove run outputs, mutants and caches
	rm -rf outputs multirun mutants wheelhouse .pytest_cache .ruff_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

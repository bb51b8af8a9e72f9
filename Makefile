# securefed: `make demo` and `make test` each build .venv from nothing on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: venv demo demo-secagg test lint typecheck unit slow bench bench-utility vectors clean

venv: $(STAMP)

# torch==2.13.0 first: the CPU build pip takes from local disk; pyproject's range then
# installs nothing more. (Not used by the secure-aggregation core; the training job needs it.)
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e '.[dev]'
	touch $(STAMP)

# The main job: a private federated recommender on the embedded MovieLens data.
# Each run replaces the previous demo run (a run folder's ledger is never overwritten).
demo: venv
	rm -rf runs/movielens
	$(VENV)/bin/securefed simulate examples/recommendation/movielens.toml --out runs/movielens

# The secure-aggregation round on its own (20 clients, 3 dropouts).
demo-secagg: venv
	$(VENV)/bin/securefed demo

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

typecheck: venv
	$(VENV)/bin/mypy

unit: venv
	$(VENV)/bin/pytest -m "not slow" -q

# Heavier cases, run by CI in their own bounded step.
slow: venv
	timeout 900 $(VENV)/bin/pytest -m slow -q; rc=$$?; [ $$rc -eq 0 ] || [ $$rc -eq 5 ]

test: lint typecheck unit slow

vectors: venv
	$(PY) protocols/secagg/generate_vectors.py
	$(PY) protocols/ledger/generate_vectors.py

bench: venv
	$(PY) benchmarks/secagg.py --write
	$(PY) benchmarks/accounting.py
	$(PY) benchmarks/ledger.py --write
	$(PY) benchmarks/client.py --write

# Utility of the federated recommender against baselines (about 2 h on 2 cores;
# resumable: results are merged into benchmarks/results/utility.json run by run).
bench-utility: venv
	$(PY) benchmarks/utility.py --write --resume

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache

# Two entry points: `make demo` (set up + main job) and `make test` (the whole suite).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint unit clean

setup: $(STAMP)

# torch is pinned in the same pip command as everything else: an unpinned torch pulls CUDA wheels.
$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0 -e '.[dev]'
	touch $(STAMP)

demo: setup
	$(BIN)/streamproc models fetch
	$(BIN)/streamproc demo

lint: setup
	$(BIN)/ruff check streamproc tests bench
	$(BIN)/ruff format --check streamproc tests bench
	$(BIN)/mypy

test: lint
	$(BIN)/pytest

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

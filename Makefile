# abflow — the two commands that matter: `make demo` and `make test`.
# `make install` is idempotent: a stamp file records that the venv matches requirements.lock.

SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install jars demo test test-fast lint bench clean

install: $(STAMP) jars

$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	@touch $(STAMP)

jars: $(STAMP)
	$(BIN)/abflow kafka install

demo: install
	$(BIN)/python -m experiment.cli.demo

test: install
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not kafka and not flink and not e2e and not slow"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: install
	$(BIN)/python -m bench.run

clean:
	-$(BIN)/abflow pipeline stop 2>/dev/null
	-$(BIN)/abflow kafka down 2>/dev/null
	rm -rf .abflow artifacts reports data/*.csv .pytest_cache .ruff_cache .hypothesis

# abflow — the two commands that matter: `make demo` and `make test`.
# `make install` is idempotent: a stamp file records that the venv matches requirements.lock.
# Test tiers (docs/testing.md): `make test` runs all of them; `make test-fast` only the unit tier (no Kafka, Flink,
# browser or training; under two minutes); `make test-fault` only the fault tier (kill -9, hostile input).

SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

UNIT_ONLY := not (kafka or flink or e2e or slow or fault or browser or training)

.PHONY: install jars demo test test-fast test-fault lint bench clean

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
	$(BIN)/python -m pytest tests/unit -m "$(UNIT_ONLY)"

test-fault: install
	$(BIN)/python -m pytest -m fault

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: install
	$(BIN)/python -m bench.run

clean:
	-$(BIN)/abflow pipeline stop 2>/dev/null
	-$(BIN)/abflow kafka down 2>/dev/null
	rm -rf .abflow artifacts reports data/*.csv .pytest_cache .ruff_cache .hypothesis

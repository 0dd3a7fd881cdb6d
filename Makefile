# abflow — the two commands that matter: `make demo` and `make test`.
# `make install` is idempotent: a stamp file records that the venv matches requirements.lock.
# Test tiers (docs/testing.md): `make test` runs all of them; `make test-fast` only the unit tier (no Kafka, Flink,
# browser or training; under two minutes); `make test-fault` only the fault tier (kill -9, hostile input).
# `make test-cluster` runs the failover tests on a real local cluster (Flink JobManager + TaskManagers, 3 Kafka
# brokers); `make test` leaves them out, and CI (.ci/run) runs them after it at the smoke size CLUSTER_SCALE.

SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

UNIT_ONLY := not (kafka or flink or e2e or slow or fault or browser or training or cluster)
# Size of the cluster failover tests' traffic (1.0 = the full 3,000 customers per test; CI's smoke size is 0.2).
CLUSTER_SCALE ?= 0.2
# `make demo ARMS=3`: control, champion and challenger models as arms (2: control vs the model's picks).
ARMS ?= 2

.PHONY: install jars demo test test-fast test-fault test-cluster lint bench clean

install: $(STAMP) jars

$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	@touch $(STAMP)

jars: $(STAMP)
	$(BIN)/abflow kafka install

demo: install
	$(BIN)/python -m experiment.cli.demo --arms $(ARMS)

test: install
	$(BIN)/python -m pytest -m "not cluster"

test-fast: $(STAMP)
	$(BIN)/python -m pytest tests/unit -m "$(UNIT_ONLY)"

test-fault: install
	$(BIN)/python -m pytest -m "fault and not cluster"

test-cluster: install
	ABFLOW_CLUSTER_SCALE=$(CLUSTER_SCALE) $(BIN)/python -m pytest tests/cluster tests/integration/test_bench_smoke.py -m cluster

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: install
	$(BIN)/python -m bench.run

clean:
	-$(BIN)/abflow pipeline stop 2>/dev/null
	-$(BIN)/abflow cluster down 2>/dev/null
	-$(BIN)/abflow kafka down 2>/dev/null
	rm -rf .abflow artifacts reports data/*.csv .pytest_cache .ruff_cache .hypothesis

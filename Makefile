# Two commands for a new user: `make demo` and `make test`. Both create or reuse .venv.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: test check lint typecheck unit test-matrix demo bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,ops,gateway,examples]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check throttle workers tasks testing gateway tools tests bench docs examples
	$(BIN)/ruff format --check throttle workers tasks testing gateway tools tests bench docs examples

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck

unit: $(STAMP)
	$(BIN)/pytest -q

test: check unit

# The Redis-path tests (limiter, scheduler, their property and contention tests, the
# Cluster's) on the other server, and the limiter's and scheduler's on a Redis Cluster.
# CI runs it after `make test` (.ci/run); about two minutes.
REDIS_PATH_TESTS := tests/test_limiter.py tests/test_scheduler.py \
	tests/test_limiter_properties.py tests/test_scheduler_properties.py \
	tests/test_limiter_contention.py
test-matrix: $(STAMP)
	LLM_THROTTLE_TEST_SERVER=valkey $(BIN)/pytest -q $(REDIS_PATH_TESTS) tests/test_cluster.py
	LLM_THROTTLE_TEST_TOPOLOGY=cluster $(BIN)/pytest -q $(REDIS_PATH_TESTS)

demo: $(STAMP)
	$(BIN)/llm-throttle demo

# Benchmark against peer limiters (by hand, not in CI). The peers live in their own venv
# so they never become project dependencies. Options: make bench BENCH_ARGS=--quick
BENCH_VENV  ?= .bench-venv
BENCH_STAMP := $(BENCH_VENV)/.installed
BENCH_ARGS  ?=

$(BENCH_STAMP): pyproject.toml bench/requirements.txt
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install --quiet -e . -r bench/requirements.txt
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BENCH_VENV)/bin/python bench/limiter.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis

# Two commands for a new user: `make demo` and `make test`. Both create or reuse .venv.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: test check lint typecheck unit demo bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,ops]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check throttle workers tasks tests bench
	$(BIN)/ruff format --check throttle workers tasks tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck

unit: $(STAMP)
	$(BIN)/pytest -q

test: check unit

demo: $(STAMP)
	$(BIN)/llm-throttle demo

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis

# One install path: every target below runs inside .venv, built from requirements.lock.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: install lock demo up test test-fast lint format bench clean screenshots

install: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	test -x $(BIN)/uv || $(BIN)/python -m pip install --quiet "uv==$$(sed -n 's/^uv==\([^ ]*\).*/\1/p' requirements.lock)"
	$(BIN)/uv pip sync --python $(BIN)/python --require-hashes requirements.lock
	$(BIN)/uv pip install --python $(BIN)/python --no-deps -e .
	touch $(STAMP)

lock:
	$(BIN)/uv pip compile pyproject.toml --extra dev --generate-hashes --no-emit-index-url \
		--python-version 3.11 -o requirements.lock

demo: $(STAMP)
	$(BIN)/fraudops demo

# The demo to its decision, then every service left up until Ctrl-C.
up: $(STAMP)
	$(BIN)/fraudops demo --keep-running

# Runs the demo, serves its state and photographs each UI into docs/img (installs chromium).
screenshots: $(STAMP)
	$(BIN)/python docs/img/take_screenshots.py

test: $(STAMP)
	$(BIN)/pytest

test-fast: $(STAMP)
	$(BIN)/pytest -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

BENCHMARKS := generate features model_quality training serving hops monitoring

bench: $(STAMP)
	for name in $(BENCHMARKS); do $(BIN)/python benchmarks/bench_$$name.py || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

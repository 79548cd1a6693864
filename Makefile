# One install path: every target below runs inside .venv, built from requirements.lock.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: install lock demo up test test-fast lint format bench clean screenshots \
	lint-ci ci-repro quality-gate release-model

install: $(STAMP)

# Bytecode is compiled once here (the packages, then the project's own folders): with
# PYTHONDONTWRITEBYTECODE set, as on many CI machines and in our image, every process would
# otherwise compile each module it imports, which doubled the start of every command.
$(STAMP): requirements.lock pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	test -x $(BIN)/uv || $(BIN)/python -m pip install --quiet "uv==$$(sed -n 's/^uv==\([^ ]*\).*/\1/p' requirements.lock)"
	$(BIN)/uv pip sync --python $(BIN)/python --require-hashes --compile-bytecode requirements.lock
	$(BIN)/uv pip install --python $(BIN)/python --no-deps -e .
	$(BIN)/python -m compileall -q -j 0 src serving pipelines monitoring > /dev/null
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

# Two workers, each taking whole test files (module-scoped servers start once), in the
# order tests/conftest.py puts them: the longest first.
PARALLEL = -n 2 --dist loadfile --no-loadscope-reorder

test: $(STAMP)
	$(BIN)/pytest $(PARALLEL)

test-fast: $(STAMP)
	$(BIN)/pytest $(PARALLEL) -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(MAKE) --no-print-directory lint-ci

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

BENCHMARKS := generate features model_quality training serving startup hops monitoring learning_modes

bench: $(STAMP)
	for name in $(BENCHMARKS); do $(BIN)/python benchmarks/bench_$$name.py || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

# CI/CD (docs/ci-cd.md): every shell step of .github/workflows/ is `make` and one target.
# The workflows and the pre-commit config against their schemas, ci/check_workflows.py for
# what a schema cannot see, the ci/ scripts typed as strictly as the library.
WORKFLOWS := $(wildcard .github/workflows/*.yml)

lint-ci: $(STAMP)
	$(BIN)/check-jsonschema --builtin-schema vendor.github-workflows $(WORKFLOWS)
	$(BIN)/python ci/check_workflows.py $(WORKFLOWS)
	$(BIN)/pre-commit validate-config .pre-commit-config.yaml
	MYPYPATH=src $(BIN)/mypy ci

# `dvc repro` of the pipeline on a small generated data set, results in ci/model-quality/
# (or CI_REPRO_OUT).
ci-repro: $(STAMP)
	$(BIN)/python ci/repro_small.py $(if $(CI_REPRO_OUT),--out $(CI_REPRO_OUT))

# Those results against the ones committed on main (BASELINE_REF, default origin/main or main).
quality-gate: $(STAMP)
	$(BIN)/python ci/quality_gate.py $(if $(BASELINE_REF),--baseline-ref $(BASELINE_REF))

# CD: train the release's model, register it (RELEASE, IMAGE tags) and run the promotion gate.
release-model: $(STAMP)
	ci/release_model.sh

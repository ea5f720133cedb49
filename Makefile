# Quick start:  make run   (sets up .venv/ on first use, then runs the default job)
#               make test  (lint, then the test suite; .ci/run runs exactly this)
# Pass job overrides with ARGS, e.g. make run ARGS="model=ann layers=decoder model.checkpoint=null"
PY := .venv/bin/python
ARGS ?=

.PHONY: run test lint setup bench

setup:
	@bash scripts/setup.sh

run: setup
	$(PY) run.py $(ARGS)

test: setup lint
	$(PY) -m pytest -q $(ARGS)

# ruff, and the layers contract of import-linter (both configured in pyproject.toml); make test runs
# them first, so CI does too
lint: setup
	.venv/bin/ruff check featvis tests benchmarks scripts run.py
	.venv/bin/lint-imports

bench: setup
	$(PY) benchmarks/bench_pipeline.py $(ARGS)

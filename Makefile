# Two commands matter: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck check clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/ingest demo

test: $(STAMP)
	$(BIN)/ruff check ingest tests migrations
	$(BIN)/mypy ingest
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check ingest tests migrations
	$(BIN)/ruff format --check ingest tests migrations

typecheck: $(STAMP)
	$(BIN)/mypy ingest

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# Two commands matter: `make demo` runs the stack, `make test` runs every check.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CHROMIUM := /usr/bin/chromium

.PHONY: demo test lint typecheck pytest bench clean

# The test environment is set up as the OpenTelemetry docs tell users: the distro, then
# `opentelemetry-bootstrap -a install` for every library it finds.
$(STAMP): pyproject.toml tests/env/otel-release.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c tests/env/otel-release.txt -e '.[dev]'
	$(BIN)/opentelemetry-bootstrap -a install
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo.py

test: lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check tracestream tests bench examples
	$(BIN)/ruff format --check tracestream tests bench examples

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP) $(CHROMIUM)
	$(BIN)/pytest -q

# The console's browser tests drive Debian's chromium through playwright: no browser download.
$(CHROMIUM):
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

bench: $(STAMP)
	$(BIN)/python bench/export_throughput.py
	$(BIN)/python bench/http_overhead.py
	$(BIN)/python bench/forward.py
	$(BIN)/python bench/cluster.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .demo

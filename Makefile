# Two commands matter: `make demo` runs the stack, `make test` runs every check.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOWEST := .venv-lowest
LOWEST_BIN := $(LOWEST)/bin
LOWEST_STAMP := $(LOWEST)/.installed
# test-lowest runs on the lowest Python pyproject.toml allows; PYENV_VERSION lets pyenv's shim find it.
LOWEST_PYTHON := python3.10
# The end-to-end tests (real FastAPI, Starlette, Django and Celery processes, the launcher, apps shaped by
# the frameworks' docs), and the Redis Cluster and console tests, which hold the redis-py and
# Starlette floors to account.
LOWEST_TESTS := tests/test_fastapi.py tests/test_fastapi_mounts.py tests/test_starlette.py tests/test_django.py tests/test_celery.py tests/test_cross_service.py \
	tests/test_launcher.py tests/test_cluster.py tests/test_console_live.py tests/test_console_mount.py \
	tests/test_launcher_matrix.py tests/test_app_logging.py tests/test_django_project.py \
	tests/test_integrations_absent.py tests/test_threads.py tests/test_uncaught.py
# test-python312 runs on a Python that refuses new threads once its exit has begun, atexit
# callbacks included: 3.12.0 to 3.12.2 (CPython gh-104690, relaxed in 3.12.3). Its venv gets
# Django 6, which needs Python 3.12: the ASGI servers' disconnect test runs there too.
PY312 := .venv-python312
PY312_BIN := $(PY312)/bin
PY312_VERSION := 3.12.1
CHROMIUM := /usr/bin/chromium

.PHONY: demo test test-lowest test-python312 lint typecheck pytest bench clean

# The test environment is set up as the OpenTelemetry docs tell users: the distro, then
# `opentelemetry-bootstrap -a install` for every library it finds.
$(STAMP): pyproject.toml tests/env/otel-release.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c tests/env/otel-release.txt -e '.[$(EXTRAS)]'
	$(BOOTSTRAP)
	$(PEERS)
	touch $(STAMP)

# What the venv installs: everything the tests need, or (the demo's venv) only what the demo runs.
EXTRAS = dev

# Empty for a venv whose tests load no contrib instrumentation.
BOOTSTRAP = $(BIN)/opentelemetry-bootstrap -a install

# Pydantic Logfire, for tests/test_otel_peers.py's apps alone (on their PYTHONPATH): in the venv's
# site-packages its pydantic and pytest plugins would load in every process the suite starts.
# Empty for a venv that does not run that test.
PEERS = $(BIN)/pip install --quiet --no-deps --target $(VENV)/peers logfire==5.4.0 logfire-sdk==5.4.0 \
	executing==2.3.0

# test-lowest builds its venv with the recipe above (VENV=$(LOWEST)), every pip call in it held
# to the lowest versions pyproject.toml allows by PIP_CONSTRAINT.
$(LOWEST_STAMP): tests/env/lowest.txt

# The demo's own venv: the shop stack's frameworks and servers, without the test tools (uWSGI
# among them, built from source).
DEMO_VENV := .venv-demo

demo:
	$(MAKE) --no-print-directory VENV=$(DEMO_VENV) EXTRAS=demo BOOTSTRAP= PEERS= $(DEMO_VENV)/.installed
	$(DEMO_VENV)/bin/python examples/demo.py

test: lint typecheck pytest

# The end-to-end tests on the oldest Python, FastAPI, Starlette, uvicorn, Django, Celery and
# redis-py we support; no browser tests.
test-lowest:
	PYENV_VERSION=$(subst python,,$(LOWEST_PYTHON)) PIP_CONSTRAINT=tests/env/lowest.txt \
		$(MAKE) --no-print-directory PYTHON=$(LOWEST_PYTHON) VENV=$(LOWEST) PEERS= $(LOWEST_STAMP)
	$(LOWEST_BIN)/python tests/env/lowest.py
	$(LOWEST_BIN)/pytest -q $(PYTEST_PARALLEL) $(LOWEST_TESTS)

# The exit paths (atexit, a __del__ at teardown, OTLP's shutdown) where such a Python starts no thread.
test-python312:
	PYENV_VERSION=$(PY312_VERSION) $(MAKE) --no-print-directory PYTHON=python3.12 VENV=$(PY312) BOOTSTRAP= \
		PEERS= $(PY312)/.installed
	$(PY312_BIN)/python -c 'import sys; sys.exit(None if (3, 12) <= sys.version_info < (3, 12, 3) else \
		f"test-python312 needs Python 3.12.0 to 3.12.2, not {sys.version.split()[0]}")'
	$(PY312_BIN)/python -c 'import django, sys; sys.exit(None if django.VERSION >= (6,) else \
		f"test-python312 tests Django 6, not {django.__version__}")'
	$(PY312_BIN)/pytest -q tests/test_interpreter_exit.py \
		tests/test_django_project.py::test_served_request_whose_client_leaves_is_no_error

lint: $(STAMP)
	$(BIN)/ruff check tracestream tests bench examples
	$(BIN)/ruff format --check tracestream tests bench examples

typecheck: $(STAMP)
	$(BIN)/mypy

# The end-to-end tests spend half their time waiting on the processes they start: three workers
# keep both cores busy. Each file runs whole on one worker, as its module fixtures start servers.
PYTEST_PARALLEL := -n 3 --dist loadfile

pytest: $(STAMP) $(CHROMIUM)
	$(BIN)/pytest -q $(PYTEST_PARALLEL)

# The console's browser tests drive Debian's chromium through playwright: no browser download.
$(CHROMIUM):
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

bench: $(STAMP)
	$(BIN)/python bench/export_throughput.py
	$(BIN)/python bench/http_overhead.py
	$(BIN)/python bench/forward.py
	$(BIN)/python bench/cluster.py

clean:
	rm -rf $(VENV) $(LOWEST) $(PY312) $(DEMO_VENV) .pytest_cache .mypy_cache .ruff_cache .demo

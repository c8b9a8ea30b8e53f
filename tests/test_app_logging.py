"""Apps that own their logging: every record reaches the stream once, and the terminal is unchanged."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from tests.apps.app_logging import SCENARIOS
from tests.apps.servers import LAUNCHER_ENV, bin_path, http_ready, launched, serve
from tests.support import ROOT, RedisHandle, run_python_process, wait_for
from tracestream.embedded_redis import free_port
from tracestream.otel_setup.setup_loggers import _holders_by_package

# The loggers each scenario logs from (tests/apps/app_logging.py).
LOGGERS = {
    "dict_config_with_root": ["shop.views"],
    "dict_config_disabling": ["shop.before", "shop.after"],
    "non_propagating": ["shop.audit", "shop.views"],
    "file_config": ["shop.views", "shop.before"],
    "basic_config_force": ["shop.views"],
    "root_at_debug": ["shop.views"],
    "no_handlers": ["shop.views"],
    "handlers_changed_later": ["shop.views"],
    "loguru_intercepting": ["shop.views"],
    "loguru_intercepting_into_its_sink": ["shop.views"],
    "loguru_intercepting_into_an_enqueued_sink": ["shop.views"],
    "loguru_intercepting_behind_a_queue": ["shop.views"],
    "loguru_intercepting_through_a_rewriting_filter": ["shop.views"],
    "records_handed_on": ["shop.views"],
    "asked_then_raised": ["shop.views"],
    "asked_then_handed_on": ["shop.views"],
    "queue_handler": ["shop.views"],
    "logger_class_of_mixins": ["shop.tenants"],
    "logger_with_a_filter": ["shop.deprecations"],
    "record_factory_numbering": ["shop.numbered"],
    "logger_class_making_records": ["shop.counted"],
    "mistakes_at_a_skipped_level": ["shop.views"],
}
# Lines the app's levels hide from a logger that runs something of the app's on each record (a
# filter, a class's `handle` or `makeRecord`, a record factory): no record is made for us alone there.
HIDDEN = {
    "logger_class_of_mixins": "INFO",
    "record_factory_numbering": "INFO",
    "logger_class_making_records": "INFO",
}
# The line tracestream says, once, where a scenario's logging call has arguments logging raises on
# at a level the app's loggers skip: that record is not in the stream.
REFUSED_ARGUMENTS = {
    "mistakes_at_a_skipped_level": re.compile(
        r"tracestream: WARNING a 'shop\.views' INFO record is not in the stream: its call passes "
        r"what logging raises on \(unexpected keyword argument 'user_id'\).*\n"
    ),
}
# The scenarios that add tracestream's loguru sink.
ADDING_OUR_SINK = {
    "loguru_intercepting_into_its_sink",
    "loguru_intercepting_into_an_enqueued_sink",
    "loguru_intercepting_behind_a_queue",
    "loguru_intercepting_through_a_rewriting_filter",
}


def _run(handle: RedisHandle, scenario: str, *flags: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tests.apps.app_logging", scenario, *flags],
        env=handle.env(OTEL_SERVICE_NAME="app-logging", **env),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


def _expected(scenario: str) -> Counter[str]:
    return Counter(
        f"app {name} {level}" if level != "failed" else f"app {name} failed"
        for name in LOGGERS[scenario]
        for level in ("INFO", "WARNING", "ERROR", "failed")
        if level != HIDDEN.get(scenario)
    )


def test_every_scenario_is_covered() -> None:
    assert set(LOGGERS) == set(SCENARIOS)


@pytest.mark.parametrize("scenario", sorted(LOGGERS))
def test_app_logging_reaches_the_stream_once_and_prints_as_before(stream: RedisHandle, scenario: str) -> None:
    without = _run(stream, scenario)
    assert without.returncode == 0, without.stderr
    assert stream.logs() == []
    if scenario in ADDING_OUR_SINK:  # added where configure() never ran, it says so
        nowhere = re.compile(r"tracestream: WARNING a '[\w.]+' record is not in the stream: .*\n")
        assert len(nowhere.findall(without.stderr)) == 1
        without.stderr = nowhere.sub("", without.stderr)

    with_us = _run(stream, scenario, "--tracestream")
    assert with_us.returncode == 0, with_us.stderr
    if scenario in REFUSED_ARGUMENTS:
        said = REFUSED_ARGUMENTS[scenario]
        assert len(said.findall(with_us.stderr)) == 1, with_us.stderr
        with_us.stderr = said.sub("", with_us.stderr)
    assert (with_us.stdout, with_us.stderr) == (without.stdout, without.stderr)

    expected = _expected(scenario)
    entries = wait_for(lambda: len(stream.logs()) >= sum(expected.values()) and stream.logs(), what="records")
    assert Counter(e.body for e in entries) == expected
    failed = [e for e in entries if e.body.endswith(" failed")]
    assert all(e.exception_type == "KeyError" and "missing" in e.exception_stacktrace for e in failed)


def test_logging_calls_the_apps_levels_skip_raise_nothing_under_the_launcher(stream: RedisHandle) -> None:
    """stdlib checks a logging call's arguments only for a record it makes: `log.info("x",
    user_id=5)` or `extra={"filename": f}` run fine in an app at WARNING, and raised once a record
    was made for the stream alone (a FastAPI endpoint answered 500). Under the launcher the OTel
    logging instrumentation's factory makes the records. The app's INFO lines, skipped by its
    levels and logged through an adapter, are still stored, at the app's call."""
    scenario = "mistakes_at_a_skipped_level"
    main = "from tests.apps.app_logging import main; main()"
    without = run_python_process(main, stream.env(), args=[scenario])
    env = stream.env(**LAUNCHER_ENV, OTEL_SERVICE_NAME="app-logging")
    with_us = run_python_process(main, env, launcher=True, args=[scenario])
    assert (with_us.returncode, with_us.stdout) == (0, without.stdout), with_us.stderr
    assert len(REFUSED_ARGUMENTS[scenario].findall(with_us.stderr)) == 1, with_us.stderr
    expected = _expected(scenario)
    entries = wait_for(lambda: len(stream.logs()) >= sum(expected.values()) and stream.logs(), what="records")
    assert Counter(e.body for e in entries) == expected
    [info] = [e for e in entries if e.body == "app shop.views INFO"]
    assert info.attributes.get("tenant") == "acme"
    assert re.fullmatch(r".*tests/apps/app_logging\.py:\d+ in main", info.code), info.code


def test_excluded_loggers_stay_out_of_the_stream_and_still_print(stream: RedisHandle) -> None:
    done = _run(stream, "non_propagating", "--tracestream", TRACESTREAM_LOG_EXCLUDE="shop.audit")
    assert done.returncode == 0, done.stderr
    assert "app shop.audit WARNING" in done.stdout
    expected = Counter(b for b in _expected("non_propagating").elements() if "shop.audit" not in b)
    entries = wait_for(lambda: len(stream.logs()) >= 4 and stream.logs(), what="records")
    assert Counter(e.body for e in entries) == expected


LOGURU_SINKS = ["loguru_intercepting_into_its_sink", "loguru_intercepting_into_an_enqueued_sink"]


@pytest.mark.parametrize("scenario", LOGURU_SINKS)
def test_what_we_keep_out_stays_out_when_loguru_hands_it_on(stream: RedisHandle, scenario: str) -> None:
    """loguru's InterceptHandler hands every stdlib record to loguru, whose sink meets those we
    kept out again: an excluded logger's, and those below the stream's level."""
    done = _run(stream, scenario, "--tracestream", TRACESTREAM_LOG_EXCLUDE="shop.views")
    assert done.returncode == 0, done.stderr
    assert "app shop.views INFO" in done.stderr and stream.logs() == []  # printed; the exit flushed the rest
    done = _run(stream, scenario, "--tracestream", TRACESTREAM_LOG_LEVEL="ERROR")
    assert done.returncode == 0, done.stderr
    assert sorted(e.body for e in stream.logs()) == ["app shop.views ERROR", "app shop.views failed"]


def test_the_configured_level_is_the_streams_floor(stream: RedisHandle) -> None:
    done = _run(stream, "no_handlers", "--tracestream", TRACESTREAM_LOG_LEVEL="ERROR")
    assert done.returncode == 0, done.stderr
    entries = wait_for(lambda: len(stream.logs()) >= 2 and stream.logs(), what="records")
    assert sorted(e.body for e in entries) == ["app shop.views ERROR", "app shop.views failed"]


SERVERS = {
    "uvicorn": (
        ["uvicorn", "tests.apps.zero_code_api:app", "--log-config", "tests/apps/log_configs/uvicorn.json"],
        "/",
        "hello from the api",
        '"GET / HTTP/1.1" 200',
    ),
    "gunicorn": (
        ["gunicorn", "--log-config", "tests/apps/log_configs/gunicorn.ini", "tests.apps.zero_code_wsgi:app"],
        "/hello",
        "hello from wsgi",
        '"GET /hello HTTP/1.1" 200',
    ),
}


@pytest.mark.parametrize("server", sorted(SERVERS))
def test_a_servers_log_config_keeps_app_records_and_each_request_once(
    stream: RedisHandle, server: str
) -> None:
    """`--log-config` replaces the server's logging after we are set up, under the launcher; for
    uvicorn, with the FastAPI app's logger not propagating, on a handler of its own. A request
    record stands for the FastAPI request's access line; the plain WSGI app's requests have
    none, so their access lines are what the stream has of them."""
    command, path, app_line, access_line = SERVERS[server]
    port = free_port()
    bind = ["--port", str(port)] if server == "uvicorn" else ["--bind", f"127.0.0.1:{port}"]
    env = stream.env(
        OTEL_SERVICE_NAME=server, OTEL_LOGS_EXPORTER="redis_stream", OTEL_TRACES_EXPORTER="redis_stream"
    )
    with serve(
        launched(bin_path(command[0]), *command[1:], *bind), env, http_ready(f"http://127.0.0.1:{port}/ready")
    ) as running:
        assert httpx.get(f"http://127.0.0.1:{port}{path}").status_code == 200
        wait_for(lambda: access_line in running.output(), what="the server's access line on its terminal")
        wait_for(lambda: [e for e in stream.logs() if e.body == app_line], what="the app's record")
        # uvicorn.json prints the app's INFO line on its own handler; gunicorn.ini's root is at WARNING
        assert (app_line in running.output()) is (server == "uvicorn")
    bodies = Counter(e.body for e in stream.logs())
    assert bodies[app_line] == 1
    access_lines = [body for body in bodies if access_line in body]
    assert len(access_lines) == (server == "gunicorn"), bodies
    assert all(count == 1 for count in bodies.values()), bodies


SQLALCHEMY_TUTORIAL = """
import logging, os
if os.environ.get("WITH_TRACESTREAM"):
    import tracestream
    tracestream.configure()
from sqlalchemy import create_engine, text
logging.basicConfig(format="%(levelname)s %(name)s %(message)s")
engine = create_engine("sqlite+pysqlite:///:memory:", echo=ECHO)  # SQLAlchemy's unified tutorial
with engine.connect() as conn:
    print(conn.execute(text("select 'hello world'")).all())
logging.getLogger("shop").warning("app line")
"""


@pytest.mark.parametrize("echo", [False, True])
def test_sqlalchemy_logs_its_statements_only_when_the_app_asks(stream: RedisHandle, echo: bool) -> None:
    """SQLAlchemy logs a statement and its parameters only where `isEnabledFor(INFO)` says yes:
    our yes must not make it log what `echo=False` keeps in. With `echo=True` it is the app's."""
    code = SQLALCHEMY_TUTORIAL.replace("ECHO", str(echo))
    without = run_python_process(code, stream.env())
    with_us = run_python_process(code, stream.env(WITH_TRACESTREAM="1"))
    assert with_us.returncode == without.returncode == 0, with_us.stderr
    assert _untimed(with_us.stdout + with_us.stderr) == _untimed(without.stdout + without.stderr)
    entries = wait_for(lambda: stream.logs(), what="the app's line")
    scopes = Counter(entry.scope.split(".")[0] for entry in entries)
    assert scopes["shop"] == 1
    assert (scopes["sqlalchemy"] > 0) is echo, scopes


# SQLAlchemy's ORM Quick Start model with a password and a token column; UNIQUE for its name.
QUICK_START_MODEL = """
import logging, os
from typing import Optional
if os.environ.get("WITH_TRACESTREAM"):
    import tracestream
    tracestream.configure()
from sqlalchemy import String, create_engine, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "user_account"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(30), unique=UNIQUE)
    password: Mapped[str]
    api_token: Mapped[Optional[str]]
"""
# The Quick Start, and its Core tutorial's "sending multiple parameters" (an executemany), under
# `echo=True`: each statement's parameters are logged on a line of their own, positional.
SQLALCHEMY_SECRETS = (
    QUICK_START_MODEL.replace("UNIQUE", "False")
    + """

engine = create_engine("sqlite://", echo=True)
Base.metadata.create_all(engine)
with Session(engine) as session:
    session.add_all([User(name="spongebob", password="hunter2", api_token="tok-sponge"),
                     User(name="sandy", password="s3cret-sandy", api_token=None)])
    session.commit()
    user = session.scalars(select(User).where(User.api_token == "tok-sponge")).one()
    user.password = "n3w-pass"
    session.commit()
with engine.begin() as conn:
    conn.execute(text("CREATE TABLE logins (name, password)"))
    conn.execute(
        text("INSERT INTO logins (name, password) VALUES (:name, :password)"),
        [{"name": "patrick", "password": "p4ss-patrick"}, {"name": "gary", "password": "meow-gary"}],
    )
"""
)
SECRETS = ("hunter2", "tok-sponge", "s3cret-sandy", "n3w-pass", "p4ss-patrick", "meow-gary")

# The same model without `echo`, its name unique, and a sign-up that fails on it: SQLAlchemy's
# error names the statement and prints its parameters, the password among them.
FAILED_SIGNUP = (
    QUICK_START_MODEL.replace("UNIQUE", "True")
    + """


engine = create_engine("sqlite://")
Base.metadata.create_all(engine)
for password in ("hunter2", "s3cret-again"):
    with Session(engine) as session:
        session.add(User(name="spongebob", password=password, api_token=None))
        try:
            session.commit()
        except IntegrityError:
            logging.getLogger("shop.signup").exception("sign-up failed")
"""
)


def test_a_failed_statements_parameters_bound_to_secret_columns_are_redacted(stream: RedisHandle) -> None:
    """An IntegrityError's message ends `[parameters: ('spongebob', 's3cret-again', None)]`: the
    record, its error copy, the issue and the digest all kept the password."""
    without = run_python_process(FAILED_SIGNUP, stream.env())
    with_us = run_python_process(FAILED_SIGNUP, stream.env(WITH_TRACESTREAM="1"))
    assert with_us.returncode == without.returncode == 0, with_us.stderr
    assert with_us.stdout + with_us.stderr == without.stdout + without.stderr
    assert "s3cret-again" in with_us.stderr  # the app's own terminal shows it, as without us
    (record,) = wait_for(stream.logs, what="the failed sign-up")
    assert record.exception_type == "sqlalchemy.exc.IntegrityError"
    assert "[parameters: ('spongebob', '[REDACTED]', None)]" in record.exception_message, (
        record.exception_message
    )
    with stream.client() as client:
        stored = "\n".join(
            str(value) for key in client.keys(f"{stream.stream}*") for value in _values(client, key)
        )
    assert "s3cret-again" not in stored and "[REDACTED]" in stored


def _values(client: Any, key: str) -> list[Any]:
    """Whatever `key` holds, as Redis returns it."""
    kind = client.type(key)
    if kind == "stream":
        return [fields for _, fields in client.xrange(key)]
    if kind == "hash":
        return [client.hgetall(key)]
    if kind == "list":
        return list(client.lrange(key, 0, -1))
    if kind == "zset":
        return list(client.zrange(key, 0, -1))
    return [client.get(key)] if kind == "string" else []


def test_sqlalchemy_parameters_bound_to_secret_columns_are_redacted(stream: RedisHandle) -> None:
    """The parameters' line names no column: the statement logged before it does. The app's
    terminal shows them as SQLAlchemy printed them, as without us."""
    without = run_python_process(SQLALCHEMY_SECRETS, stream.env())
    with_us = run_python_process(SQLALCHEMY_SECRETS, stream.env(WITH_TRACESTREAM="1"))
    assert with_us.returncode == without.returncode == 0, with_us.stderr
    assert _untimed(with_us.stdout + with_us.stderr) == _untimed(without.stdout + without.stderr)
    assert all(secret in with_us.stdout + with_us.stderr for secret in SECRETS)
    bodies = [
        e.body for e in wait_for(stream.logs, what="the engine's lines") if e.scope.startswith("sqlalchemy")
    ]
    stored = "\n".join(bodies)
    assert [secret for secret in SECRETS if secret in stored] == []
    parameters = [_untimed(body) for body in bodies if body.startswith("[") and "REDACTED" in body]
    assert parameters == [
        "[generated in (insertmanyvalues) 1/2 (ordered; batch not supported)] "
        "('spongebob', '[REDACTED]', '[REDACTED]')",
        "[insertmanyvalues 2/2 (ordered; batch not supported)] ('sandy', '[REDACTED]', None)",
        "[generated in] ('[REDACTED]',)",
        "[generated in] ('[REDACTED]', 1)",
        "[generated in] [('patrick', '[REDACTED]'), ('gary', '[REDACTED]')]",
    ]


def _untimed(output: str) -> str:
    """echo's own handler prints times, and how long each statement took to compile."""
    output = re.sub(r"(?m)^\d{4}-\d\d-\d\d [\d:,]+ ", "", output)
    return re.sub(r"(generated in|no key) [\d.]+s", r"\1", output)


# The Logging HOWTO's fileConfig example, then asyncio and concurrent.futures imported: a task's
# exception never retrieved, which asyncio's logger reports, and a future's callback that
# raises, which concurrent.futures' logger reports. The app uses OpenTelemetry's API.
LOGGING_BEFORE_ASYNCIO = '''
import os, sys, tempfile, textwrap
if os.environ.get("WITH_TRACESTREAM"):
    import tracestream
    tracestream.configure()
from opentelemetry import trace
import logging, logging.config
with tempfile.NamedTemporaryFile("w", suffix=".conf", delete=False) as file:
    file.write(textwrap.dedent("""
        [loggers]
        keys=root,simpleExample
        [handlers]
        keys=consoleHandler
        [formatters]
        keys=simpleFormatter
        [logger_root]
        level=DEBUG
        handlers=consoleHandler
        [logger_simpleExample]
        level=DEBUG
        handlers=consoleHandler
        qualname=simpleExample
        propagate=0
        [handler_consoleHandler]
        class=StreamHandler
        level=DEBUG
        formatter=simpleFormatter
        args=(sys.stdout,)
        [formatter_simpleFormatter]
        format=%(name)s - %(levelname)s - %(message)s
    """))
logging.config.fileConfig(file.name)
import asyncio, concurrent.futures, gc

async def fails():
    raise RuntimeError("background task failed")

async def main():
    asyncio.ensure_future(fails())
    await asyncio.sleep(0.05)

asyncio.run(main())
gc.collect()

def callback(future):
    raise ValueError("callback failed")

with concurrent.futures.ThreadPoolExecutor() as pool:
    pool.submit(int, "1").add_done_callback(callback)
logging.getLogger("simpleExample").info("done")
'''


@pytest.mark.parametrize("setup", ["configure", "launcher"])
def test_a_logging_config_before_asyncio_still_prints_its_errors(stream: RedisHandle, setup: str) -> None:
    """configure() imports redis-py, which imports asyncio, and the SDK, which imports
    concurrent.futures, whose loggers the app's fileConfig then disabled: "Task exception was
    never retrieved" and "exception calling callback" stopped printing, without a word (the
    second still did, where the app uses OpenTelemetry's API, or under the launcher)."""
    without = run_python_process(LOGGING_BEFORE_ASYNCIO, stream.env())
    if setup == "launcher":  # upstream's asyncio instrumentation puts frames of its own in the traceback
        env = stream.env(**LAUNCHER_ENV, OTEL_PYTHON_DISABLED_INSTRUMENTATIONS="asyncio")
        with_us = run_python_process(LOGGING_BEFORE_ASYNCIO, env, launcher=True)
    else:
        with_us = run_python_process(LOGGING_BEFORE_ASYNCIO, stream.env(WITH_TRACESTREAM="1"))
    assert "asyncio - ERROR - Task exception was never retrieved" in without.stdout
    assert "concurrent.futures - ERROR - exception calling callback for" in without.stdout
    printed = [re.sub(r"0x[0-9a-f]+", "0x…", done.stdout) for done in (without, with_us)]  # a future's
    assert (with_us.returncode, printed[1]) == (0, printed[0])
    assert "tracestream:" not in with_us.stderr and (setup == "launcher" or with_us.stderr == without.stderr)
    errors = wait_for(lambda: len(stream.logs()) >= 2 and stream.logs(), what="both errors")
    assert {(e.scope, e.exception_type) for e in errors} >= {
        ("asyncio", "RuntimeError"),
        ("concurrent.futures", "ValueError"),
    }


# The logging.config docs' dictConfig schema, a filter on a logger and one on a handler: the app's
# redacting filter, which rewrites the message as the cookbook's "Imparting contextual information
# in handlers" does.
REDACTING_FILTERS = """
import logging, logging.config, re, sys
if "--tracestream" in sys.argv:
    import tracestream
    tracestream.configure()

class Redacting(logging.Filter):
    PATTERNS = [re.compile(r"\\b\\d{3}-\\d{2}-\\d{4}\\b"), re.compile(r"[\\w.]+@[\\w.]+")]

    def filter(self, record):
        message = record.getMessage()
        for pattern in self.PATTERNS:
            message = pattern.sub("[MASKED]", message)
        record.msg, record.args = message, None
        return True

plain = {"class": "logging.StreamHandler", "stream": "ext://sys.stdout", "formatter": "plain"}
logging.config.dictConfig({
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"redact": {"()": Redacting}},
    "formatters": {"plain": {"format": "%(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": plain, "redacting_console": {**plain, "filters": ["redact"]}},
    "loggers": {
        "billing": {"filters": ["redact"]},
        "audit": {"handlers": ["redacting_console"], "propagate": False},
    },
    "root": {"level": "INFO", "handlers": ["console"]},
})
logging.getLogger("billing").info("customer %s ssn %s", "bob@example.com", "123-45-6789")
logging.getLogger("audit").info("customer %s ssn %s", "eve@example.com", "987-65-4321")
"""


def test_a_loggers_redacting_filter_applies_to_the_stream_and_a_handlers_does_not(
    stream: RedisHandle,
) -> None:
    """Records are taken at the logger, after its filters and before its handlers' (as upstream's
    LoggingHandler on root and Sentry's integration see them): docs/scrubbing.md tells the app
    to redact on the logger, or with tracestream's own rules."""
    without = run_python_process(REDACTING_FILTERS, stream.env())
    with_us = run_python_process(REDACTING_FILTERS, stream.env(), args=["--tracestream"])
    assert (with_us.returncode, with_us.stdout, with_us.stderr) == (0, without.stdout, without.stderr)
    assert (
        without.stdout
        == "INFO billing customer [MASKED] ssn [MASKED]\nINFO audit customer [MASKED] ssn [MASKED]\n"
    )
    entries = wait_for(lambda: len(stream.logs()) >= 2 and stream.logs(), what="both records")
    assert {e.scope: e.body for e in entries} == {
        "billing": "customer [MASKED] ssn [MASKED]",
        "audit": "customer eve@example.com ssn 987-65-4321",
    }


def test_a_class_put_in_a_module_its_package_imported_is_no_hold_but_an_import_renamed_is() -> None:
    """An instrumentation patches the library it imported (`flask.Flask = _InstrumentedFlask`):
    that is no sign the library holds the instrumentation. redis-py's `from async_timeout
    import timeout as async_timeout` is an import, and holds async_timeout."""
    library, instrumentation, client = (
        ModuleType("library"),
        ModuleType("instrumentation"),
        ModuleType("client"),
    )
    instrumented = type("_InstrumentedApp", (), {"__module__": "instrumentation"})
    timeout = type("timeout", (), {"__module__": "library"})
    library.App = instrumented
    instrumentation.library = library
    client.async_timeout = timeout
    holders = _holders_by_package(
        [("library", library), ("instrumentation", instrumentation), ("client", client)]
    )
    assert holders == {"library": {"instrumentation", "client"}, "instrumentation": set(), "client": set()}


def test_a_function_relabelled_with_another_module_is_no_hold() -> None:
    """attrs on Python 3.13 sets its module-level `evolve` as each class's `__replace__` and gives
    it the class's `__module__`: `attr.evolve` then names the module of the last attrs class made
    (aiohttp's), which attrs does not hold. Counted as a hold, aiohttp and attrs held each other,
    and under the launcher an app's `fileConfig` disabled asyncio's logger."""
    attr, aiohttp = ModuleType("attr"), ModuleType("aiohttp")
    namespace: dict[str, object] = {"__name__": "attr"}
    exec("def evolve(inst, **changes): return inst", namespace)
    evolve = namespace["evolve"]
    evolve.__module__ = "aiohttp.web_ws"  # type: ignore[attr-defined]
    attr.evolve = evolve
    aiohttp.attr = attr
    holders = _holders_by_package([("attr", attr), ("aiohttp", aiohttp)])
    assert holders == {"attr": {"aiohttp"}, "aiohttp": set()}


WORKER_LINE = re.compile(r"Worker (?:started|finished): Process-\d")


@pytest.mark.parametrize("start", ["fork", "spawn"])
def test_records_a_listener_process_handles_for_its_workers_are_stored_once(
    stream: RedisHandle, tmp_path: Path, start: str
) -> None:
    """The cookbook's workers send records to a listener process, which hands each to
    `Logger.handle()`: the worker took it already, with its trace."""

    def run(log_file: Path, *flags: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "tests.apps.cookbook_processes", str(log_file), start, *flags]
        env = stream.env(OTEL_SERVICE_NAME="cookbook")
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert done.returncode == 0, done.stderr
        return done

    without = run(tmp_path / "bare.log")
    with_us = run(tmp_path / "traced.log", "--tracestream")
    printed = [sorted(WORKER_LINE.findall(done.stdout)) for done in (without, with_us)]
    assert printed[0] == printed[1] and len(printed[0]) == 6  # workers print at once: lines interleave
    assert with_us.stderr == without.stderr == ""
    written = [sorted((tmp_path / name).read_text().splitlines()) for name in ("bare.log", "traced.log")]
    assert written[0] == written[1] and len(written[0]) == 15  # five levels from three workers

    entries = stream.logs()  # every process has exited: what it wrote is there
    assert Counter(e.body for e in entries) == Counter(
        f"message from Process-{worker} no. {number}" for worker in (2, 3, 4) for number in (1, 2, 3, 4)
    )
    assert all(len(e.trace_id) == 32 for e in entries)


# The logging cookbook's "Dealing with handlers that block": a `QueueHandler` on root, and a
# `QueueListener` handing what the queue carries to the handler that does the work; here the
# queue is a multiprocessing one (as Python 3.12's `queue_handler` in `dictConfig` may name).
# The handler prints every field of a record whose name starts with "_", as JSON formatters
# that print a record's extra fields do.
QUEUE_LISTENER = """
import logging, logging.handlers, multiprocessing, sys
if "--tracestream" in sys.argv:
    import tracestream
    tracestream.configure()

class EveryField(logging.Formatter):
    def format(self, record):
        return " ".join([record.getMessage(), *sorted(k for k in vars(record) if k.startswith("_"))])

queue = multiprocessing.Queue(-1)
root = logging.getLogger()
root.addHandler(logging.handlers.QueueHandler(queue))
console = logging.StreamHandler(sys.stdout)
console.setFormatter(EveryField())
listener = logging.handlers.QueueListener(queue, console)
listener.start()
logging.getLogger("shop").warning("look out: %s", "the queue")
listener.stop()
"""


def test_a_queue_listener_on_a_multiprocessing_queue_prints_what_it_printed(stream: RedisHandle) -> None:
    env = stream.env(OTEL_SERVICE_NAME="queues")
    without = run_python_process(QUEUE_LISTENER, env)
    with_us = run_python_process(QUEUE_LISTENER, env, args=["--tracestream"])
    assert (with_us.returncode, with_us.stdout, with_us.stderr) == (0, without.stdout, without.stderr)
    assert without.stdout == "look out: the queue\n"
    assert [(e.body, e.scope) for e in stream.logs()] == [("look out: the queue", "shop")]


# The cookbook's network logging, sender and receiver in one process: the receiver hands each
# record unpickled from the socket to its logger's `handle()`. The sender's console line shows
# the record's fields as a formatter that prints every field would.
SOCKET_RECEIVER = """
import logging, logging.handlers, pickle, socketserver, struct, sys, threading
import tracestream
tracestream.configure()

class LogRecordStreamHandler(socketserver.StreamRequestHandler):
    def handle(self):
        while True:
            chunk = self.connection.recv(4)
            if len(chunk) < 4:
                break
            slen = struct.unpack(">L", chunk)[0]
            chunk = self.connection.recv(slen)
            while len(chunk) < slen:
                chunk = chunk + self.connection.recv(slen - len(chunk))
            record = logging.makeLogRecord(pickle.loads(chunk))
            logging.getLogger("received." + record.name).handle(record)
            handled.set()

handled = threading.Event()

server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), LogRecordStreamHandler)
threading.Thread(target=server.serve_forever, daemon=True).start()

class EveryField(logging.Formatter):
    def format(self, record):
        return " ".join(sorted(k for k in vars(record) if k.startswith("_")))

console = logging.StreamHandler(sys.stdout)
console.setFormatter(EveryField())
sender = logging.getLogger("sent")
sender.propagate = False
sender.addHandler(logging.handlers.SocketHandler(*server.server_address))
sender.addHandler(console)
sender.warning("sent over a socket")
sender.handlers[0].close()
assert handled.wait(10), "the receiver never handled the record"
"""


def test_a_record_a_socket_receiver_hands_on_is_stored_once(stream: RedisHandle) -> None:
    done = run_python_process(SOCKET_RECEIVER, stream.env(OTEL_SERVICE_NAME="sockets"))
    assert done.returncode == 0, done.stderr
    assert done.stdout == "\n"  # the sender's own handlers see no field of ours
    entries = stream.logs()
    assert [(e.body, e.scope) for e in entries] == [("sent over a socket", "sent")]

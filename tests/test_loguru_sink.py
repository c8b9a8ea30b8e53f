"""loguru into the stream with no sink code: under configure() and the launcher, each message once,
the app's output, handler ids and `logger.remove()` as without tracestream."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.support import RedisHandle, run_python_process, wait_for

# loguru's README: the default stderr sink, `logger.info` and `@logger.catch`; then the usual
# "remove then add my own" recipe, whose handler ids the app prints.
LOGURU_README = """
import os, sys
if os.environ.get("TRACED") == "configure-first":
    import tracestream
    tracestream.configure()
from loguru import logger
if os.environ.get("TRACED") == "configure-after":
    import tracestream
    tracestream.configure()
logger.info("That's it, beautiful and simple logging!")

@logger.catch
def my_function(x, y, z):
    return 1 / (x + y + z)

my_function(0, 0, 0)
logger.remove()
print("handler id", logger.add(sys.stderr, format="{level} | {message}"), flush=True)
logger.warning("after the app's own sink")
print("handler id", logger.add(sys.stdout, format="{message}", level="ERROR"), flush=True)
logger.remove(1)
logger.info("with no sink of the app's")
"""

# and the addresses in `diagnose`'s values, which Python 3.13 shows for `-c` code too
_TIMES_AND_IDS = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}|\(\d+\)|0x[0-9a-f]+")


def _printed(done: subprocess.CompletedProcess[str]) -> tuple[int, str, str]:
    """What the app printed, without loguru's timestamps and its process and thread ids."""
    return done.returncode, done.stdout, _TIMES_AND_IDS.sub("", done.stderr)


def _bodies(stream: RedisHandle, count: int) -> list[str]:
    entries = wait_for(lambda: len(stream.logs()) >= count and stream.logs(), what=f"{count} records")
    return [entry.body for entry in entries]


README_BODIES = [
    "That's it, beautiful and simple logging!",
    "An error has been caught in function '<module>', process 'MainProcess'",
    "after the app's own sink",
    "with no sink of the app's",
]


@pytest.mark.parametrize("traced", ["configure-first", "configure-after"])
def test_loguru_readme_reaches_the_stream_once_and_prints_as_before(stream: RedisHandle, traced: str) -> None:
    bare = run_python_process(LOGURU_README, stream.env())
    done = run_python_process(LOGURU_README, stream.env(OTEL_SERVICE_NAME="readme", TRACED=traced))
    assert _printed(done) == _printed(bare)
    assert bare.stdout == "handler id 1\nhandler id 2\n"
    assert "ZeroDivisionError: division by zero" in bare.stderr
    entries = wait_for(lambda: len(stream.logs()) >= 4 and stream.logs(), what="four loguru records")
    bodies = [entry.body.split(" (")[0] for entry in entries]
    assert bodies == README_BODIES
    caught = entries[1]
    assert (caught.severity, caught.exception_type) == ("ERROR", "ZeroDivisionError")
    assert [entry.severity for entry in entries] == ["INFO", "ERROR", "WARN", "INFO"]
    assert stream.logs() == entries


# Our docs until now: the app adds otel_sink itself. It stands in for ours while it is there.
LOGURU_OWN_SINK = """
import sys, tracestream
from loguru import logger
from tracestream.integrations.loguru import otel_sink
telemetry = tracestream.configure()
logger.remove()
logger.add(sys.stderr, format="{message}")
own = logger.add(otel_sink, level="INFO")
logger.info("with the app's sink")
logger.remove(own)
logger.info("after the app removed it")
logger.configure(handlers=[{"sink": otel_sink, "level": "WARNING"}])
logger.info("below the app's sink's level")
logger.warning("at the app's sink's level")
"""


def test_the_apps_own_otel_sink_writes_each_message_once(stream: RedisHandle) -> None:
    done = run_python_process(LOGURU_OWN_SINK, stream.env(OTEL_SERVICE_NAME="own"))
    assert (done.returncode, done.stderr) == (0, "with the app's sink\nafter the app removed it\n")
    expected = ["with the app's sink", "after the app removed it", "at the app's sink's level"]
    assert _bodies(stream, 3) == expected
    assert len(stream.logs()) == 3


HANDLERS_LISTED = """
import sys, tracestream
tracestream.configure()
from loguru import logger
logger.remove()
logger.add(sys.stderr, format="{message}")
print(logger)
"""


def test_loguru_lists_our_sink_apart_from_the_apps_handlers(stream: RedisHandle) -> None:
    """Ours showed the id of the app's first handler: `id=1` twice in `print(logger)`."""
    done = run_python_process(HANDLERS_LISTED, stream.env())
    assert done.returncode == 0, done.stderr
    assert re.findall(r"\(id=(-?\d+), level=\d+, sink=([^)]+)\)", done.stdout) == [
        ("1", "<stderr>"),
        ("-1", "otel_sink"),
    ]


# loguru's docs, "Entirely compatible with standard logging": warnings forwarded into `logging`
# (for a handler there), the rest only in loguru.
LOGURU_PROPAGATED = """
import logging, tracestream
from loguru import logger
tracestream.configure()
class PropagateHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        if logging.getLogger(record.name).isEnabledFor(record.levelno):
            logging.getLogger(record.name).handle(record)
logger.add(PropagateHandler(), format="{message}", level="WARNING")
for number in range(3):
    logger.info("order {} paid", number)
    logger.bind(sku=f"A-{number}").warning("stock {} low", number)
"""


def test_loguru_forwarded_into_logging_is_stored_once(stream: RedisHandle) -> None:
    """The stored copy, `logging`'s, had what was bound as one `extra` map: `sku` could not be
    searched for, as it can where loguru's messages stay in loguru."""
    done = run_python_process(LOGURU_PROPAGATED, stream.env(OTEL_SERVICE_NAME="propagated"))
    assert done.returncode == 0, done.stderr
    expected = [text for n in range(3) for text in (f"order {n} paid", f"stock {n} low")]
    assert _bodies(stream, 6) == expected
    assert len(stream.logs()) == 6
    warned = [entry.attributes for entry in stream.logs() if entry.severity == "WARN"]
    assert warned == [{"sku": f"A-{number}"} for number in range(3)]


def test_loguru_under_the_launcher_with_no_code(stream: RedisHandle) -> None:
    env = stream.env(
        OTEL_SERVICE_NAME="readme",
        OTEL_TRACES_EXPORTER="redis_stream",
        OTEL_LOGS_EXPORTER="redis_stream",
        OTEL_METRICS_EXPORTER="none",
    )
    bare = run_python_process(LOGURU_README, env)
    launched = run_python_process(LOGURU_README, env, launcher=True)
    returncode, stdout, stderr = _printed(launched)
    first = stderr.rindex("\n", 0, stderr.index(" | INFO ")) + 1  # the launcher's own lines come first
    assert (returncode, stdout, stderr[first:]) == _printed(bare)
    entries = wait_for(lambda: len(stream.logs()) >= 4 and stream.logs(), what="four loguru records")
    assert [entry.body.split(" (")[0] for entry in entries] == README_BODIES
    assert stream.logs() == entries


LOGURU_LEVELS = """
import tracestream
from loguru import logger
from tracestream.integrations.loguru import otel_sink
tracestream.configure()
logger.add(otel_sink)
logger.success("payment accepted")
logger.level("NOTICE", no=25)
logger.log("NOTICE", "stock running low")
logger.critical("disk full")
"""


def test_loguru_level_names_are_the_severity_text(stream: RedisHandle) -> None:
    done = run_python_process(LOGURU_LEVELS, stream.env(OTEL_SERVICE_NAME="levels"))
    assert done.returncode == 0, done.stderr
    entries = wait_for(lambda: len(stream.logs()) >= 3 and stream.logs(), what="three records")
    assert [(e.body, e.severity, e.severity_number) for e in entries] == [
        ("payment accepted", "SUCCESS", 12),
        ("stock running low", "NOTICE", 12),
        ("disk full", "FATAL", 21),
    ]


# loguru's README: "the message is formatted with the keyword arguments", which it also keeps.
LOGURU_KEYWORDS = """
import tracestream
tracestream.configure()
from loguru import logger
logger.info("login {user} with {password} ({attempt})", user="spongebob", password="hunter2-kw", attempt=1)
"""


def test_a_secret_keyword_argument_is_redacted_in_the_message_it_was_formatted_into(
    stream: RedisHandle,
) -> None:
    """The attribute `password` was redacted, and its value stayed in the record's body."""
    done = run_python_process(LOGURU_KEYWORDS, stream.env(OTEL_SERVICE_NAME="kw"))
    assert done.returncode == 0, done.stderr
    assert "login spongebob with hunter2-kw (1)" in done.stderr  # printed as loguru formats it
    (entry,) = wait_for(stream.logs, what="the login line")
    assert entry.body == "login spongebob with [REDACTED] (1)"
    assert entry.attributes["password"] == "[REDACTED]" and entry.attributes["user"] == "spongebob"


# A value `str()` refuses (an int past 4,300 digits) bound under a secret's name.
LOGURU_HUGE_SECRET = """
import tracestream
tracestream.configure()
from loguru import logger
logger.bind(pin=10**5000).info("checked")
"""


def test_a_bound_value_str_refuses_changes_nothing_loguru_prints(stream: RedisHandle) -> None:
    """Our sink looked for the value's text in the message, and `str()` raised in it: loguru
    printed its "Logging error" report where the app printed nothing more."""
    done = run_python_process(LOGURU_HUGE_SECRET, stream.env(OTEL_SERVICE_NAME="huge"))
    assert done.returncode == 0 and "- checked" in done.stderr, done.stderr
    assert "Logging error" not in done.stderr, done.stderr

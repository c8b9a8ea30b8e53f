"""The stdlib bridge keeps a record as it was when logged, whatever the app does afterwards."""

from __future__ import annotations

import json
import uuid
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path

from tests.otlp_receiver import OtlpReceiver, any_value
from tests.pipelines import PrivatePipeline
from tests.support import RedisHandle, run_python, run_python_process, wait_for
from tracestream.settings import Settings


def test_extra_values_changed_after_logging_are_exported_as_logged(stream: RedisHandle) -> None:
    """The worker encodes a batch tens of milliseconds later; the app changes its values at once."""
    pipeline = PrivatePipeline(Settings(redis_url=stream.url, stream=stream.stream))
    try:
        cart = {"items": 1, "total": 12}
        tags = ["new"]
        pipeline.logger.info("cart of %d item(s)", cart["items"], extra={"cart": cart, "tags": tags})
        cart["items"], cart["coupon"] = 2, "FREE"
        tags.append("paid")
        pipeline.flush()
        entry = wait_for(lambda: stream.logs(), what="the record")[0]
    finally:
        pipeline.close()
    assert entry.body == "cart of 1 item(s)"
    assert entry.attributes["cart"] == {"items": 1, "total": 12}
    assert entry.attributes["tags"] == ["new"]


def test_a_dict_or_list_message_is_stored_as_json_as_logged(stream: RedisHandle) -> None:
    """python-json-logger's README logs a dict as the message (`logger.info({"special": "value",
    "run": 12})`): it was stored as the dict's repr, which no reader can take apart. With
    arguments, a message is what logging formats it to."""
    pipeline = PrivatePipeline(Settings(redis_url=stream.url, stream=stream.stream))
    try:
        order = {
            "special": "value",
            "run": 12,
            "paid": date(2026, 12, 5),
            "amount": Decimal("9.99"),
            "lines": [1],
        }
        pipeline.logger.info(order)
        pipeline.logger.info(["a", 1, None])
        pipeline.logger.info({"price": "%d"}, 5)
        order["run"], order["lines"] = 13, order["lines"] + [2]
        pipeline.flush()
        entries = wait_for(lambda: len(stream.logs()) >= 3 and stream.logs(), what="the records")
    finally:
        pipeline.close()
    assert [json.loads(entry.body) for entry in entries[:2]] == [
        {"special": "value", "run": 12, "paid": "2026-12-05", "amount": "9.99", "lines": [1]},
        ["a", 1, None],
    ]
    assert entries[2].body == "{'price': '5'}"


MAP_MESSAGE = """
import datetime, logging, tracestream
telemetry = tracestream.configure(service_name="maps", logs_exporter="redis_stream,otlp")
logging.getLogger("shop").warning({"special": "value", "run": 12, "paid": {"on": datetime.date(2026, 12, 5)}})
telemetry.force_flush()
"""


def test_a_map_message_reaches_otlp_as_a_map(stream: RedisHandle) -> None:
    """As upstream's LoggingHandler hands it on; a value OTLP cannot hold (a date inside it) is
    stored as in Redis, where OTLP's encoder would refuse the whole batch."""
    with OtlpReceiver() as receiver:
        run_python(MAP_MESSAGE, stream.env(OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url))
        [received] = wait_for(lambda: receiver.logs, what="the record over OTLP")
    [entry] = stream.logs()
    expected = {"special": "value", "run": 12, "paid": {"on": "2026-12-05"}}
    assert any_value(received.record.body) == json.loads(entry.body) == expected


# Under the launcher with upstream's log correlation on, as the OTel docs show it; uvicorn's
# lines carry their message again with ANSI colours.
CORRELATED = """
import logging
from opentelemetry import trace
with trace.get_tracer("t").start_as_current_span("checkout"):
    logging.getLogger("shop").warning(
        "order %d paid", 7, extra={"order": 7, "color_message": "order \\x1b[1m%d\\x1b[0m paid"}
    )
"""


def test_attributes_that_repeat_the_record_are_left_out(stream: RedisHandle) -> None:
    env = stream.env(
        OTEL_PYTHON_LOG_CORRELATION="true",
        OTEL_TRACES_EXPORTER="redis_stream",
        OTEL_LOGS_EXPORTER="redis_stream",
        OTEL_METRICS_EXPORTER="none",
    )
    run_python(CORRELATED, env, launcher=True)
    [paid] = wait_for(lambda: stream.logs(), what="the record")
    assert (paid.body, paid.attributes) == ("order 7 paid", {"order": 7})
    assert len(paid.trace_id) == 32


def test_ids_times_and_amounts_are_stored_as_the_app_prints_them(stream: RedisHandle) -> None:
    """python-json-logger's cookbook passes `uuid4()` in `extra=`: stored as its repr
    (`UUID('…')`), `-a request_id=<the id the app printed>` found nothing."""
    pipeline = PrivatePipeline(Settings(redis_url=stream.url, stream=stream.stream))
    request_id = uuid.uuid4()
    paid_at = datetime(2026, 12, 5, 14, 30, tzinfo=timezone.utc)
    try:
        pipeline.logger.info(
            "paid",
            extra={
                "request_id": request_id,
                "paid_at": paid_at,
                "amount": Decimal("12.50"),
                "order": object(),
            },
        )
        pipeline.flush()
        entry = wait_for(lambda: stream.logs(), what="the record")[0]
    finally:
        pipeline.close()
    assert entry.attributes["request_id"] == str(request_id)
    assert entry.attributes["paid_at"] == "2026-12-05T14:30:00+00:00"
    assert entry.attributes["amount"] == "12.50"
    assert entry.attributes["order"].startswith("<object object at 0x")  # anything else: its repr


def test_a_stack_asked_for_is_stored_as_the_app_prints_it(stream: RedisHandle) -> None:
    pipeline = PrivatePipeline(Settings(redis_url=stream.url, stream=stream.stream))
    try:
        pipeline.logger.warning("where am I", stack_info=True)
        pipeline.flush()
        entry = wait_for(lambda: stream.logs(), what="the record")[0]
    finally:
        pipeline.close()
    stack = entry.attributes["code.stacktrace"]
    assert stack.startswith("Stack (most recent call last):\n")
    assert "chars of outer frames left out]" in stack  # pytest's frames: past the attribute limit
    assert "in test_a_stack_asked_for_is_stored_as_the_app_prints_it" in stack
    assert entry.body == "where am I"


# An app that parses Python while its exceptions are exported, as pytest does when it formats a
# failure. Objects whose `__del__` runs Python code let the interpreter switch threads inside
# `ast.parse`, as a test suite's garbage does.
PARSING_WHILE_EXPORTING = """
import ast, logging, threading, time
import tracestream
telemetry = tracestream.configure()

class Garbage:
    def __init__(self): self.me = self
    def __del__(self): sum(range(50))

def lookup():
    orders = {"open": {"id": 1}}
    return orders["open"]["missing"] + orders["open"]["id"] * 2

log = logging.getLogger("shop")
log.addHandler(logging.NullHandler())  # only the export thread formats the exceptions
log.propagate = False
done = threading.Event()
def fail_repeatedly():
    while not done.is_set():
        try:
            lookup()
        except KeyError:
            log.exception("lookup failed")
        time.sleep(0.002)
threading.Thread(target=fail_repeatedly, daemon=True).start()
source = open(ast.__file__).read()
deadline = time.monotonic() + 2
while time.monotonic() < deadline:
    [Garbage() for _ in range(20)]
    ast.parse(source)
done.set()
telemetry.force_flush()
print("parsed")
"""


def test_exporting_exceptions_never_breaks_the_apps_own_parsing(stream: RedisHandle, tmp_path: Path) -> None:
    """CPython 3.11 before 3.11.8 (gh-106905) raised SystemError in one of two threads calling
    `ast.parse` at once, and formatting a traceback parses each frame's line there: pytest
    aborted with INTERNALERROR beside the export thread. A script, so its lines can be shown."""
    script = tmp_path / "parsing_app.py"
    script.write_text(PARSING_WHILE_EXPORTING)
    done = run_python_process(script, stream.env())
    assert (done.returncode, done.stdout) == (0, "parsed\n"), done.stderr
    failed = [entry for entry in stream.logs() if entry.body == "lookup failed"]
    assert failed and all(entry.exception_type == "KeyError" for entry in failed)
    assert 'return orders["open"]["missing"]' in failed[0].exception_stacktrace

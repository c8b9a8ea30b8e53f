"""The record detail panel and the compact tail, in headless Chromium against a real console.

Records come from an app process that calls `configure()` and logs a real exception, so the
stack trace has the app's own frames and the standard library's (json) to tell apart.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, ViewportSize

from tests import test_console_browser as browser_tests
from tests.support import ROOT, wait_for
from tests.test_console_browser import XSS, _screenshot
from tests.test_console_live import TOKEN, ConsoleProcess, Emitter
from tracestream.error_issues import list_issues

# The browser page tests' fixtures: Chromium per module, a console over a stream of this module's own.
browser = browser_tests.browser
console = browser_tests.console

# An app as a user writes one: configure(), a span per checkout, logger.exception on failure.
APP = """
import json, logging, sys
from opentelemetry import trace
from tracestream import configure

service, marker, scope, hostile, filler = sys.argv[1:6]
telemetry = configure(service_name=service)
log = logging.getLogger(scope)
tracer = trace.get_tracer("shop")


def parse_order(text):
    return json.loads(text)


def checkout():
    with tracer.start_as_current_span("checkout"):
        try:
            parse_order(hostile)
        except ValueError:
            log.exception("%s order rejected %s", marker, hostile, extra={"order.note": hostile, hostile: 7})
        print(format(trace.get_current_span().get_span_context().trace_id, "032x"))


checkout()
for i in range(int(filler)):
    log.info("%s filler %d with a long message " + "and more words " * 20, marker, i,
             extra={"shop.cart": i, "shop.user": "someone@example.com", "shop.region": "eu-west-1"})
telemetry.force_flush()
"""
FULL_HD: ViewportSize = {"width": 1920, "height": 1080}


@pytest.fixture
def page(browser: Browser, console: ConsoleProcess) -> Iterator[Page]:
    context = browser.new_context(viewport=FULL_HD)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    response = tab.goto(console.url + "?token=" + TOKEN)
    assert response is not None and response.ok
    yield tab
    context.close()
    assert errors == [], "no script errors"


def run_app(
    console: ConsoleProcess,
    tmp_path: Path,
    service: str,
    marker: str,
    *,
    scope: str = "shop",
    filler: int = 0,
) -> str:
    """Runs the app once; returns the trace id of its failed checkout."""
    app = tmp_path / "shop_app.py"
    app.write_text(APP)
    hostile = f"{{not json {XSS}"
    done = subprocess.run(
        [sys.executable, str(app), service, marker, scope, hostile, str(filler)],
        env=console.handle.env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def open_live(page: Page, console: ConsoleProcess, query: str) -> None:
    page.goto(console.url + query)
    page.wait_for_selector("#status.live", timeout=5000)


def assert_detail_shows_the_stack_trace(page: Page, marker: str, app_file: str) -> None:
    panel = page.locator("#detail")
    panel.wait_for(state="visible", timeout=5000)
    assert marker in panel.locator(".detail-body").inner_text()
    exception = panel.locator(".exception").first.inner_text()
    assert exception.startswith("json.decoder.JSONDecodeError: Expecting property name")
    app_frames = panel.locator(".stack .frame.app").all_inner_texts()
    library_frames = panel.locator(".stack .frame.lib").all_inner_texts()
    assert [frame.split(", in ")[1].split("\n")[0] for frame in app_frames] == ["checkout", "parse_order"]
    assert all(app_file in frame for frame in app_frames)
    assert library_frames and all("/json/" in frame for frame in library_frames)
    assert "parse_order(hostile)" in app_frames[0], "the source line stays under its frame"


def test_detail_opens_from_live_search_and_trace_with_the_stack_trace(
    page: Page, console: ConsoleProcess, tmp_path: Path
) -> None:
    marker = uuid.uuid4().hex[:8]
    service = f"shop-{marker}"
    open_live(page, console, f"?text={marker}")
    trace_id = run_app(console, tmp_path, service, marker)
    app_file = str(tmp_path / "shop_app.py")

    row = page.locator("#records tr.record", has_text=f"{marker} order rejected")
    row.wait_for(timeout=5000)
    assert row.locator(".attrs").is_hidden(), "attributes show on demand"
    row.locator("button.attrs-toggle").click()
    assert "order.note=" in row.locator(".attrs").inner_text()
    assert page.locator("#detail").is_hidden(), "the toggle does not open the detail"
    row.locator("td.body .msg").click()
    assert_detail_shows_the_stack_trace(page, marker, app_file)
    panel = page.locator("#detail")
    assert panel.locator("table.kv th", has_text="order.note").count() == 1
    assert service in panel.locator("table.kv").nth(1).inner_text(), "the resource"
    assert panel.locator("a.to-trace").get_attribute("href") == f"trace?id={trace_id}"
    with console.handle.client() as client:
        (issue,) = list_issues(client, console.handle.stream, service=service)
    assert panel.locator("a.to-issue").get_attribute("href") == f"errors?fingerprint={issue.fingerprint}"
    panel.locator("button.lib-toggle").click()
    assert panel.locator(".stack .frame.lib").first.is_hidden()
    page.keyboard.press("Escape")
    assert panel.is_hidden()

    row.locator("td.body .msg").click()
    panel.locator("a.to-around").click()  # the same service, a minute either side
    page.wait_for_url("**/search?service=*", timeout=5000)
    assert page.input_value("input[name=service]") == service
    page.locator("#records tr.record", has_text=f"{marker} order rejected").wait_for(timeout=5000)

    page.goto(console.url + f"search?text={marker}")
    page.locator("#records tr.record", has_text=f"{marker} order rejected").locator(".msg").click()
    assert_detail_shows_the_stack_trace(page, marker, app_file)

    page.goto(console.url + f"trace?id={trace_id}")
    page.locator("tr.log", has_text=f"{marker} order rejected").locator(".msg").click()
    assert_detail_shows_the_stack_trace(page, marker, app_file)
    page.set_viewport_size({"width": 1280, "height": 720})  # as the other screenshots
    _screenshot(page, "detail")


def test_xss_payloads_in_every_detail_field_stay_inert(
    page: Page, console: ConsoleProcess, tmp_path: Path
) -> None:
    marker = uuid.uuid4().hex[:8]
    open_live(page, console, f"?text={marker}")
    run_app(console, tmp_path, XSS, marker, scope=XSS)
    row = page.locator("#records tr.record", has_text=f"{marker} order rejected")
    row.wait_for(timeout=5000)
    row.locator("button.attrs-toggle").click()
    row.locator(".msg").click()
    panel = page.locator("#detail")
    panel.wait_for(state="visible", timeout=5000)
    text = panel.inner_text()
    assert f"order rejected {{not json {XSS}" in text  # the body
    assert text.count(XSS) >= 7, "body, stack, attribute key and value, service, resource, scope"
    assert panel.locator("table.kv th", has_text=XSS).count() == 1, "an attribute named with the payload"
    assert str(panel.locator("a.to-around").get_attribute("href")).startswith("search?service=%3Cimg+src")
    assert page.locator("img").count() == 0
    assert page.evaluate("() => window.__xss") is None


def test_a_full_hd_screen_holds_at_least_25_tail_rows(
    page: Page, console: ConsoleProcess, tmp_path: Path
) -> None:
    marker = uuid.uuid4().hex[:8]
    open_live(page, console, f"?text={marker}")
    run_app(console, tmp_path, "shop", marker, filler=40)
    page.locator("#records tr.record").nth(40).wait_for(timeout=5000)
    visible = page.evaluate(
        """() => [...document.querySelectorAll('#records tr.record')]
             .filter((row) => row.getBoundingClientRect().bottom <= window.innerHeight).length"""
    )
    assert visible >= 25, f"{visible} rows fit 1920x1080"


def test_rows_are_in_timestamp_order_whatever_order_they_arrive_in(
    page: Page, console: ConsoleProcess
) -> None:
    """A batch held back by one service reaches the stream after newer records of another."""
    marker = uuid.uuid4().hex[:8]
    open_live(page, console, f"?text={marker}")
    now_ns = time.time_ns()
    late, early = Emitter(console.handle, "prompt"), Emitter(console.handle, "delayed")
    late.log(f"{marker} newest", timestamp_ns=now_ns)
    early.log(f"{marker} oldest", timestamp_ns=now_ns - 5_000_000_000)
    late.log(f"{marker} middle", timestamp_ns=now_ns - 1_000_000_000)
    expected = [f"{marker} newest", f"{marker} middle", f"{marker} oldest"]
    page.locator("#records tr.record").nth(2).wait_for(timeout=5000)
    assert page.locator("#records .msg").all_inner_texts() == expected
    page.goto(console.url + f"search?text={marker}")
    page.locator("#records tr.record").nth(2).wait_for(timeout=5000)
    assert page.locator("#records .msg").all_inner_texts() == expected


def test_one_record_by_stream_id_even_once_trimmed(console: ConsoleProcess, tmp_path: Path) -> None:
    marker = uuid.uuid4().hex[:8]
    run_app(console, tmp_path, "shop", marker)
    logs = wait_for(lambda: [e for e in console.handle.logs() if marker in e.body], what="the app's record")
    api = console.url + "api/record/"
    error_id = logs[0].stream_id
    record = httpx.get(api + error_id, headers=console.headers()).json()
    assert record["id"] == error_id and record["exception_type"] == "json.decoder.JSONDecodeError"
    assert "parse_order" in record["exception_stacktrace"] and record["fingerprint"]
    with console.handle.client() as client:
        assert client.xdel(console.handle.stream, error_id) == 1  # as retention trims it
    assert httpx.get(api + error_id, headers=console.headers()).json() == record, "read from its copy"
    missing = httpx.get(api + "1-0", headers=console.headers())
    assert missing.status_code == 404 and "no record 1-0" in missing.text
    bad = httpx.get(api + "yesterday", headers=console.headers())
    assert bad.status_code == 400 and "invalid stream id 'yesterday'" in bad.text

"""The console in headless Chromium (Debian's, through playwright) against a real console process."""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry._logs import SeverityNumber
from opentelemetry.context import Context
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context
from playwright.sync_api import Browser, Page, sync_playwright

from tests.support import RedisHandle
from tests.test_console_live import TOKEN, ConsoleProcess, Emitter
from tests.test_query import FixedIds
from tracestream.embedded_redis import EmbeddedRedis

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
XSS = "<img src=x onerror=window.__xss=1>"
# Set to a directory (e.g. docs) to save a screenshot of every page the tests visit.
SCREENSHOTS = os.environ.get("SCREENSHOTS_DIR", "")


@pytest.fixture(scope="module")
def console(redis_server: EmbeddedRedis) -> Iterator[ConsoleProcess]:
    with ConsoleProcess.on_fresh_stream(redis_server) as process:
        yield process


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        # launch() gives every run a fresh temporary profile.
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser, console: ConsoleProcess) -> Iterator[Page]:
    """A signed-in tab: the token is exchanged for a cookie on the first visit."""
    context = browser.new_context(viewport={"width": 1280, "height": 720})
    tab = context.new_page()
    response = tab.goto(console.url + "?token=" + TOKEN)
    assert response is not None and response.ok and "token" not in tab.url
    yield tab
    context.close()


def _open_live(page: Page, console: ConsoleProcess, query: str = "") -> None:
    page.goto(console.url + query)
    page.wait_for_selector("#status.live", timeout=5000)


def _rows_with(page: Page, text: str) -> int:
    return int(page.locator("#records tr", has_text=text).count())


def _screenshot(page: Page, name: str) -> None:
    if SCREENSHOTS:
        page.screenshot(path=str(Path(SCREENSHOTS) / f"console-{name}.png"), full_page=False)


def test_logged_record_appears_on_the_live_page_within_a_second(page: Page, console: ConsoleProcess) -> None:
    _open_live(page, console)
    page.evaluate(
        """() => { window.__arrivals = {};
        new MutationObserver(() => { for (const row of document.querySelectorAll('#records tr'))
          if (!(row.textContent in window.__arrivals)) window.__arrivals[row.textContent] = Date.now(); })
        .observe(document.getElementById('records'), { childList: true }); }"""
    )
    emitter = Emitter(console.handle, "checkout")
    marker = f"order placed {uuid.uuid4().hex[:8]}"
    sent_ms = time.time() * 1000
    emitter.log(marker, SeverityNumber.WARN, {"order.id": 42})
    page.locator("#records tr", has_text=marker).wait_for(timeout=1000)
    arrived_ms = page.evaluate(
        f"() => Object.entries(window.__arrivals).find(([t]) => t.includes('{marker}'))[1]"
    )
    assert arrived_ms - sent_ms < 1000
    row = page.locator("#records tr", has_text=marker)
    row.locator("button.attrs-toggle").click()  # attributes show on demand
    assert row.locator("td.sev-warn").inner_text() == "WARN" and "order.id=42" in row.inner_text()
    _screenshot(page, "live")


def test_filter_hides_non_matching_records(page: Page, console: ConsoleProcess) -> None:
    marker = uuid.uuid4().hex[:8]
    _open_live(page, console)
    page.fill("input[name=service]", "billing")
    page.select_option("select[name=severity]", "ERROR")
    page.click("button[type=submit]")
    page.wait_for_selector("#status.live", timeout=5000)
    assert "service=billing" in page.url
    billing, orders = Emitter(console.handle, "billing"), Emitter(console.handle, "orders")
    orders.log(f"{marker} wrong service", SeverityNumber.ERROR)
    billing.log(f"{marker} too quiet", SeverityNumber.INFO)
    billing.log(f"{marker} card declined", SeverityNumber.ERROR)
    page.locator("#records tr", has_text=f"{marker} card declined").wait_for(timeout=2000)
    assert _rows_with(page, marker) == 1


def test_trace_link_opens_the_waterfall_with_spans_from_two_services(
    page: Page, console: ConsoleProcess
) -> None:
    marker = uuid.uuid4().hex[:8]
    _open_live(page, console, f"?text={marker}")
    frontend, backend = Emitter(console.handle, "frontend"), Emitter(console.handle, "backend")
    with frontend.tracer.start_as_current_span("GET /checkout") as root:
        frontend.log(f"{marker} checkout started", span=root)
        with backend.tracer.start_as_current_span("charge card") as child:
            backend.log(f"{marker} card charged", SeverityNumber.WARN, span=child)
        frontend.log(f"{marker} checkout done", span=root)
    trace_id = format(root.get_span_context().trace_id, "032x")
    row = page.locator("#records tr", has_text=f"{marker} checkout started")
    row.wait_for(timeout=2000)
    row.locator("a.trace-link").click()
    page.wait_for_url(f"**/trace?id={trace_id}", timeout=5000)
    page.locator("tr.span").nth(1).wait_for(timeout=5000)
    spans = page.locator("tr.span")
    assert spans.locator("td.service").all_inner_texts() == ["frontend", "backend"]
    assert spans.locator("td.span-name").all_inner_texts() == ["GET /checkout", "charge card"]
    # in time order, as `tracestream trace` draws it: the root's last line after its child span
    rows = page.locator(".waterfall tbody tr").all_inner_texts()
    assert [text for row in rows for text in ("started", "charged", "done") if text in row] == [
        "started",
        "charged",
        "done",
    ], rows
    assert len(rows) == 5 and "charge card" in rows[2] and "checkout done" in rows[4]
    assert "2 spans across 2 services, 3 log records" in page.inner_text("h2")
    _screenshot(page, "trace")


def test_xss_payloads_render_as_text_and_never_run(page: Page, console: ConsoleProcess) -> None:
    _open_live(page, console)
    marker = uuid.uuid4().hex[:8]
    hostile = Emitter(console.handle, XSS)
    with hostile.tracer.start_as_current_span(XSS) as span:
        hostile.log(f"{marker} {XSS}", SeverityNumber.ERROR, {XSS: XSS}, span=span)
    row = page.locator("#records tr", has_text=marker)
    row.wait_for(timeout=2000)
    row.locator("button.attrs-toggle").click()
    text = row.inner_text()
    assert f"{marker} {XSS}" in text and f"{XSS}={XSS}" in text
    assert row.locator("td.service").inner_text() == XSS
    row.locator("a.trace-link").click()
    page.locator("tr.span").wait_for(timeout=5000)
    assert page.locator("tr.span td.span-name").inner_text() == XSS
    assert page.locator("tr.span td.service").inner_text() == XSS
    assert f"{marker} {XSS}" in page.locator("tr.log").inner_text()
    assert page.locator("main img").count() == 0
    assert page.evaluate("() => window.__xss") is None


def test_bidi_controls_show_as_escapes_and_reorder_nothing(page: Page, console: ConsoleProcess) -> None:
    """U+202E turns what follows it around (`invoice\u202efdp.exe` reads as `invoiceexe.pdf`):
    shown as the CLI shows it, in rows and in the tab title of an error issue."""
    _open_live(page, console)
    marker = uuid.uuid4().hex[:8]
    Emitter(console.handle, "bill\u202eing").log(f"{marker} invoice\u202efdp.exe sent")
    row = page.locator("#records tr", has_text=marker)
    row.wait_for(timeout=2000)
    text = row.inner_text()
    assert "invoice\\u202efdp.exe sent" in text and "bill\\u202eing" in text
    assert "\u202e" not in text
    error = {"exception.type": "PermissionError", "exception.message": f"{marker} for \u2066admin\u2069"}
    Emitter(console.handle, "billing").log(f"{marker} denied", SeverityNumber.ERROR, error)
    page.goto(console.url + "errors")
    page.locator("a.issue-link", has_text=marker).click(timeout=5000)
    page.locator("#issue .issue-title").wait_for(timeout=5000)
    assert page.title() == f"PermissionError: {marker} for \\u2066admin\\u2069 · Errors · tracestream"


def test_a_long_service_name_is_cut_and_every_message_stays_on_screen(
    page: Page, console: ConsoleProcess
) -> None:
    """One unbroken name of 400 characters made the live table 3,639 px wide at 1,280."""
    _open_live(page, console)
    marker = uuid.uuid4().hex[:8]
    long_name = "payments-" + "x" * 400
    Emitter(console.handle, long_name).log(f"{marker} from the long name")
    Emitter(console.handle, "cart").log(f"{marker} from the short name")
    for text in ("long", "short"):
        page.locator("#records tr", has_text=f"{marker} from the {text} name").wait_for(timeout=2000)
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 1280
    for row in page.locator("#records tr", has_text=marker).all():
        box = row.locator(".msg").bounding_box()
        assert box is not None and box["x"] + box["width"] <= 1280 and box["width"] > 100
    cell = page.locator("#records tr", has_text=f"{marker} from the long name").locator("td.service")
    assert cell.get_attribute("title") == long_name


def test_dropped_connection_and_pause_resume_with_no_gap_or_duplicate(
    page: Page, console: ConsoleProcess
) -> None:
    marker = uuid.uuid4().hex[:8]
    _open_live(page, console, f"?text={marker}")
    emitter = Emitter(console.handle, "orders")
    emitter.log(f"{marker} 0")
    page.locator("#records tr", has_text=f"{marker} 0").wait_for(timeout=2000)
    console.stop(kill=True)  # the connection drops mid-stream
    page.wait_for_selector("#status.error", timeout=5000)
    for i in range(1, 4):
        emitter.log(f"{marker} {i}")  # written while nobody is connected
    console.start()
    emitter.log(f"{marker} 4")
    page.locator("#records tr", has_text=f"{marker} 4").wait_for(timeout=8000)
    page.click("#pause")
    page.wait_for_selector("#status:has-text('paused')", timeout=2000)
    emitter.log(f"{marker} 5")  # written while paused: shown on resume, from where the page stopped
    page.click("#pause")
    page.locator("#records tr", has_text=f"{marker} 5").wait_for(timeout=5000)
    for i in range(6):
        assert _rows_with(page, f"{marker} {i}") == 1, f"record {i} must appear exactly once"


def test_token_is_enforced(browser: Browser, console: ConsoleProcess) -> None:
    context = browser.new_context()
    try:
        tab = context.new_page()
        response = tab.goto(console.url)
        assert response is not None and response.status == 401
        assert "needs its token" in tab.inner_text("body")
        response = tab.goto(console.url + "?token=wrong")
        assert response is not None and response.status == 401
        response = tab.goto(console.url + "search?token=" + TOKEN)
        assert response is not None and response.ok and tab.url == console.url + "search"
        (cookie,) = context.cookies()
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    finally:
        context.close()


def test_search_page_filters_and_pages_without_script_errors(page: Page, console: ConsoleProcess) -> None:
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    marker = uuid.uuid4().hex[:8]
    emitter = Emitter(console.handle, "search-page")
    with emitter.tracer.start_as_current_span("lookup") as span:
        for i in range(3):
            emitter.log(f"{marker} result {i}", SeverityNumber.ERROR, {"attempt": i}, span=span)
    page.goto(console.url + f"search?text={marker}&limit=2")
    page.locator("#records tr.record").nth(1).wait_for(timeout=5000)
    assert page.locator("#records td.body").all_inner_texts()[0].startswith(f"{marker} result 2")
    page.click("#older")
    page.wait_for_selector("#page-info:has-text('page 2, 1 records')", timeout=5000)
    assert page.locator("#records tr.record td.body").inner_text().startswith(f"{marker} result 0")
    assert page.locator("#records a.trace-link").get_attribute("href") == (
        f"trace?id={span.get_span_context().trace_id:032x}"
    )
    page.click("#first")
    page.wait_for_selector("#page-info:has-text('page 1, 2 records')", timeout=5000)
    _screenshot(page, "search")
    assert errors == []


# A load that takes 300 ms, refreshed every 100 ms: how many ran, and whether two ever overlapped.
OVERLAPPING_LOADS = """async () => {
  let running = 0, runs = 0, overlapped = false;
  TS.refreshEvery(100, async () => {
    running += 1; runs += 1; overlapped = overlapped || running > 1;
    await new Promise((done) => setTimeout(done, 300));
    running -= 1;
  });
  await new Promise((done) => setTimeout(done, 1500));
  return { runs, overlapped };
}"""


def test_a_page_that_refreshes_asks_again_only_once_its_answer_came(
    page: Page, console: ConsoleProcess
) -> None:
    """Services and Alerts refreshed every 5 s whether or not the last answer had come: over 1.5
    million records Services took 16 s, and one open tab kept three requests running on Redis
    for as long as it stayed open."""
    asked: list[str] = []
    page.on("request", lambda request: asked.append(request.url) if "api/services" in request.url else None)
    page.goto(console.url + "services")
    loads = page.evaluate(OVERLAPPING_LOADS)
    assert loads["overlapped"] is False and loads["runs"] >= 2, loads  # 4 when the machine is idle
    page.wait_for_timeout(5500)
    assert len(asked) >= 2, "and it refreshes"


def test_services_and_stats_pages_show_the_summary(page: Page, console: ConsoleProcess) -> None:
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    emitter = Emitter(console.handle, "inventory")
    where = {"code.file.path": "inventory.py", "code.line.number": 7, "code.function.name": "lookup"}
    for _ in range(3):
        emitter.log("stock lookup failed", SeverityNumber.ERROR, where)  # one group: same code location
    emitter.log("stock checked", SeverityNumber.INFO)
    page.goto(console.url + "services")
    row = page.locator("#services tr", has_text="inventory")
    row.wait_for(timeout=5000)
    assert row.locator("td").nth(3).inner_text() == "3", "errors in the last hour"
    _screenshot(page, "services")
    page.goto(console.url + "stats?since=15m")
    group = page.locator("#groups tr", has_text="stock lookup failed")
    group.wait_for(timeout=5000)
    assert group.locator("td").first.inner_text() == "3" and "inventory.py:7 in lookup" in group.inner_text()
    assert page.locator("#chart svg rect").count() >= 2, "bars for ERROR and INFO"
    _screenshot(page, "stats")
    page.goto(console.url)
    page.wait_for_selector("#status.live", timeout=5000)
    page.locator("#records tr", has_text="stock checked").wait_for(timeout=5000)
    _screenshot(page, "live")
    assert errors == []
    assert requested and all(url.startswith(console.url) for url in requested), "no CDN, nothing off-site"


def test_spans_whose_parents_form_a_cycle_show_with_a_mark(page: Page, console: ConsoleProcess) -> None:
    emitter = Emitter(console.handle, "cyclic")
    emitter.tracer_provider.id_generator = FixedIds([0xA1, 0xB2, 0xC3])
    tracer = emitter.tracer_provider.get_tracer("cycle")
    trace_id = uuid.uuid4().int

    def under(span_id: int) -> Context:
        parent = SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(1))
        return set_span_in_context(NonRecordingSpan(parent))

    for name, parent_id in (("first", 0xB2), ("second", 0xA1), ("outside", 0x99)):
        tracer.start_span(name, context=under(parent_id)).end()
    page.goto(console.url + f"trace?id={trace_id:032x}")
    page.locator("tr.span").nth(2).wait_for(timeout=5000)
    names = page.locator("tr.span td.span-name")
    assert names.all_inner_texts() == ["firstparent cycle", "second", "outside"]  # the mark is on "first"
    assert page.locator("tr.span .cycle").count() == 1
    assert names.first.locator(".cycle").get_attribute("title") == f"its parent {0xB2:016x} descends from it"


def test_the_live_page_says_when_redis_is_unreachable_and_resumes(browser: Browser) -> None:
    server = EmbeddedRedis().start()
    console = ConsoleProcess(RedisHandle(server.url, "browser-outage"), token=None).start()
    context = browser.new_context()
    try:
        tab = context.new_page()
        _open_live(tab, console)
        server.stop()
        tab.wait_for_selector("#status.error:has-text('Redis unreachable, retrying')", timeout=5000)
        server.start()
        tab.wait_for_selector("#status.live:has-text('live')", timeout=10000)
        Emitter(console.handle, "orders").log("back again")
        tab.locator("#records tr", has_text="back again").wait_for(timeout=5000)
    finally:
        context.close()
        console.stop()
        server.close()


def test_the_trace_and_stats_pages_say_their_times_are_utc(browser: Browser, console: ConsoleProcess) -> None:
    """In a browser in Kolkata the times are UTC, as everywhere in the console; the trace list's
    start, the trace view's record times and the stats chart's labels did not say so."""
    context = browser.new_context(timezone_id="Asia/Kolkata", locale="ja-JP")
    try:
        tab = context.new_page()
        tab.goto(console.url + "?token=" + TOKEN)
        emitter = Emitter(console.handle, "zones")
        written_ns = time.time_ns()
        with emitter.tracer.start_as_current_span("GET /zones") as span:
            emitter.log("inside the zone span", span=span, timestamp_ns=written_ns)
        tab.goto(console.url + "trace?service=zones")
        tab.locator("#trace-list tr.trace-row", has_text="GET /zones").wait_for(timeout=5000)
        assert tab.locator("#trace-list th").first.inner_text() == "start (UTC)"
        tab.locator("#trace-list tr.trace-row", has_text="GET /zones").click()
        record = tab.locator("tr.log", has_text="inside the zone span")
        record.wait_for(timeout=5000)
        assert tab.locator(".waterfall th").first.inner_text() == "service / time (UTC)"
        utc = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(written_ns // 10**9))
        assert record.locator("td.time").inner_text().startswith(utc)
        tab.goto(console.url + "stats?since=15m")
        tab.locator("#chart svg rect").first.wait_for(timeout=5000)
        assert tab.locator("#chart svg > text").nth(1).text_content().endswith(" UTC")  # under the first bar
        titles = tab.locator("#chart svg rect title").all_text_contents()
        assert titles and all(re.fullmatch(r"\d\d:\d\d UTC \w+: [\d,~]+", title) for title in titles), titles
    finally:
        context.close()

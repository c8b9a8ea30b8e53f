"""The Trace tab's list of recent traces, in headless Chromium against a real console process."""

from __future__ import annotations

import httpx
import pytest
from opentelemetry.trace import SpanKind
from playwright.sync_api import Page

from tests import test_console_browser as browser_tests
from tests.seeded_records import tracer_provider
from tests.test_console_browser import XSS, _screenshot
from tests.test_console_live import ConsoleProcess
from tests.test_trace_list import NOW_NS, _root, _trace_id
from tracestream.timeparse import iso_utc

# The browser page tests' fixtures: Chromium per module, a signed-in tab on a console over this
# module's own stream.
browser = browser_tests.browser
console = browser_tests.console
page = browser_tests.page


@pytest.fixture(scope="module")
def traces(console: ConsoleProcess) -> dict[str, str]:
    """Four local roots of three services (one named in markup) and a span under one of them;
    `since_150s`: 150 s before the time their starts count back from (`NOW_NS`, taken when that module
    was imported), as an absolute time: a relative one would drift with every test that runs before."""
    shop, billing, hostile = (tracer_provider(console.handle, name) for name in ("shop", "billing", XSS))
    found = {
        "cart": _root(shop, "GET /cart", ago_min=4, ms=40, attributes={"http.route": "/cart"}),
        "checkout": _root(
            shop, "POST /checkout", ago_min=3, ms=700, attributes={"http.route": "/checkout"}, error=True
        ),
        "charge": _root(
            billing,
            "run/charge",
            ago_min=2,
            ms=300,
            kind=SpanKind.CONSUMER,
            attributes={"celery.task_name": "charge"},
        ),
        "hostile": _root(hostile, XSS, ago_min=1, ms=10),  # named by its span: a route is rooted
    }
    _root(shop, "SELECT carts", ago_min=4, ms=30, kind=SpanKind.CLIENT, parent=found["cart"])
    for provider in (shop, billing, hostile):
        provider.shutdown()
    ids = {name: _trace_id(span) for name, span in found.items()}
    return {**ids, "since_150s": iso_utc(NOW_NS - 150 * 10**9)}


def _listed(page: Page) -> list[str]:
    """The names in the list once it has loaded, top to bottom."""
    page.wait_for_function(
        "() => document.getElementById('trace-list-status').textContent === ''", timeout=5000
    )
    return [str(name) for name in page.locator("#trace-list tr.trace-row td.trace-name").all_inner_texts()]


def _apply(page: Page, **fields: str) -> list[str]:
    for name, value in fields.items():
        if name == "sort":
            page.select_option("#trace-list-filters select[name=sort]", value)
        elif name == "errors":
            page.set_checked("#trace-list-filters input[name=errors]", value == "1")
        else:
            page.fill(f"#trace-list-filters input[name={name}]", value)
    page.click("#trace-list-filters button[type=submit]")
    return _listed(page)


def test_the_trace_tab_lists_filters_and_sorts_recent_traces(
    page: Page, console: ConsoleProcess, traces: dict[str, str]
) -> None:
    page.goto(console.url + "trace")
    assert _listed(page) == [XSS, "charge", "/checkout error", "/cart"]
    assert page.locator("#trace-list tr.trace-row td.service").first.inner_text() == XSS
    assert page.evaluate("() => window.__xss") is None and page.locator("#trace-list img").count() == 0
    _screenshot(page, "traces")
    assert _apply(page, service="shop") == ["/checkout error", "/cart"]
    assert "service=shop" in page.url
    assert _apply(page, errors="1") == ["/checkout error"]
    assert _apply(page, service="", errors="0", sort="slowest") == ["/checkout error", "charge", "/cart", XSS]
    assert _apply(page, min_duration="100ms") == ["/checkout error", "charge"]
    assert _apply(page, min_duration="", name="car") == ["/cart"]
    page.reload()  # the filters live in the address bar
    assert _listed(page) == ["/cart"] and page.input_value("input[name=name]") == "car"
    assert _apply(page, name="", since=traces["since_150s"], sort="newest") == [XSS, "charge"]
    _apply(page, since="", min_duration="soon")
    assert "bad minimum duration 'soon'" in page.locator("#trace-list").inner_text()


def test_clicking_a_trace_opens_its_waterfall(
    page: Page, console: ConsoleProcess, traces: dict[str, str]
) -> None:
    page.goto(console.url + "trace?service=shop")
    assert _listed(page) == ["/checkout error", "/cart"]
    page.locator("#trace-list tr.trace-row", has_text="/cart").click()
    page.wait_for_url(f"**/trace?id={traces['cart']}")
    page.locator("tr.span td.span-name", has_text="SELECT carts").wait_for(timeout=5000)
    assert page.locator("#trace-list-section").is_hidden()
    assert [str(name) for name in page.locator("tr.span td.span-name").all_inner_texts()] == [
        "GET /cart",
        "SELECT carts",
    ]


def test_the_api_lists_and_names_a_bad_filter(console: ConsoleProcess, traces: dict[str, str]) -> None:
    url = console.url + "api/traces"
    found = httpx.get(url, params={"service": "shop", "errors": "1"}, headers=console.headers()).json()[
        "traces"
    ]
    assert [(t["trace_id"], t["name"], t["duration_ms"], t["error"]) for t in found] == [
        (traces["checkout"], "/checkout", 700.0, True)
    ]
    for params, named in (
        ({"sort": "oldest"}, "'oldest'"),
        ({"limit": "0"}, "bad limit 0"),
        ({"since": "later"}, "'later'"),
    ):
        bad = httpx.get(url, params=params, headers=console.headers())
        assert bad.status_code == 400 and named in bad.text

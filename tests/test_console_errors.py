"""The console's Errors page (issue 17) and its estimated counts (issue 19), in headless Chromium
against a real console. The issue comes from real processes: a FastAPI app under uvicorn enqueues a
Celery task that fails in a prefork worker under the launcher (tests/test_error_issues.py's shop)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from opentelemetry._logs import SeverityNumber
from playwright.sync_api import Page

from tests import test_console_acl, test_console_detail, test_error_issues
from tests import test_console_browser as browser_tests
from tests.seeded_records import RecordWriter
from tests.support import RedisHandle, wait_for
from tests.test_cli import run
from tests.test_console_browser import XSS, _screenshot
from tests.test_console_live import ConsoleProcess, Emitter
from tests.test_error_issues import ROUTE, Shop
from tracestream.embedded_redis import EmbeddedRedis
from tracestream.error_issues import ErrorIssue, list_issues
from tracestream.exporters.encoding import exception_fields
from tracestream.settings import SAMPLE_WEIGHT

browser = browser_tests.browser
page = test_console_detail.page  # a signed-in Chromium tab that fails the test on a script error
shop = test_error_issues.shop
acl_redis, reader = test_console_acl.acl_redis, test_console_acl.reader  # the documented read-only user


@pytest.fixture(scope="module")
def console(shop: Shop) -> Iterator[ConsoleProcess]:
    """A console over the shop's stream."""
    process = ConsoleProcess(shop[0]).start()
    yield process
    process.stop()


def _issue(console: ConsoleProcess, type_: str, count: int) -> ErrorIssue:
    """The one issue of exception type `type_`, once it counts `count` records."""

    def found() -> ErrorIssue | None:
        with console.handle.client() as client:
            issues = [issue for issue in list_issues(client, console.handle.stream) if issue.type == type_]
        assert len(issues) <= 1, issues
        return issues[0] if issues and issues[0].count >= count else None

    issue = wait_for(found, timeout=60, what=f"the {type_ or 'untyped'} issue at {count}")
    assert issue is not None
    return issue


def _checkout(shop: Shop, console: ConsoleProcess, order: int, count: int) -> ErrorIssue:
    httpx.post(f"{shop[1]}/checkout/{order}", timeout=10).raise_for_status()
    return _issue(console, "ValueError", count)


def test_a_task_error_from_a_route_is_listed_resolved_and_reopened_as_a_regression(
    page: Page, console: ConsoleProcess, shop: Shop
) -> None:
    issue = _checkout(shop, console, 1, 1)
    page.goto(console.url + "errors")
    row = page.locator("tr.issue-row", has_text="ValueError: order 1 is broken")
    row.wait_for(timeout=5000)
    assert page.locator("tr.issue-row", has_text="ValueError").count() == 1, "one issue"
    assert row.locator("td.chain").inner_text() == f"{ROUTE} (1)"
    assert row.locator("td.service").inner_text() == "worker"
    assert row.locator("td.num").inner_text() == "1"
    assert row.locator(".issue-status").inner_text() == "open" and row.locator(".regression").count() == 0
    assert row.locator(".sparkline rect").count() == 24
    assert "tracestream errors resolve FINGERPRINT" in page.inner_text(".read-only")
    assert page.locator("main button", has_text="resolve").count() == 0, "read-only: no resolve button"

    assert run(console.handle, "errors", "resolve", issue.fingerprint).returncode == 0
    page.goto(console.url + "errors?status=resolved")
    page.locator("tr.issue-row .issue-status.resolved").wait_for(timeout=5000)
    assert page.input_value("select[name=status]") == "resolved"

    _checkout(shop, console, 2, 2)
    page.select_option("select[name=status]", "open")
    page.click("button[type=submit]")
    page.locator("tr.issue-row .regression").wait_for(timeout=5000)
    assert "status=open" in page.url
    row = page.locator("tr.issue-row", has_text="ValueError")
    assert row.locator(".issue-status").inner_text() == "open"
    assert (
        row.locator("td.num").inner_text() == "2" and row.locator("td.chain").inner_text() == f"{ROUTE} (2)"
    )
    page.set_viewport_size({"width": 1280, "height": 720})  # as the other screenshots
    _screenshot(page, "errors")

    row.locator("a.issue-link").click()
    page.wait_for_url(f"**/errors?fingerprint={issue.fingerprint}", timeout=5000)
    single = page.locator("#issue")
    single.locator(".stack").wait_for(timeout=5000)
    assert page.locator("#issue-list").is_hidden()
    assert single.locator(".issue-title").inner_text() == "ValueError: order 1 is broken"
    assert single.locator(".regression").count() == 1
    assert single.locator("tr.chain-link td").all_inner_texts() == [ROUTE, "2"]
    assert (
        single.locator("tr.chain-link a").get_attribute("href") == "trace?name=%2Fcheckout%2F%7Border_id%7D"
    )
    newest = _issue(console, "ValueError", 2)
    samples = single.locator("a.sample-trace")
    assert samples.count() == 2 and samples.first.inner_text() == newest.trace_id
    assert samples.first.get_attribute("href") == f"trace?id={newest.trace_id}"
    assert "order 2 is broken" in single.locator("tr.record").inner_text(), "the newest record"
    assert single.locator("div.exception").inner_text() == "ValueError: order 2 is broken"
    app_frames = single.locator(".stack .frame.app").all_inner_texts()
    assert any("celery_app.py" in frame and "in fail" in frame for frame in app_frames)
    assert single.locator(".stack .frame.lib").count() > 0, "celery's own frames told apart"
    page.set_viewport_size({"width": 1280, "height": 1150})  # down to the stack trace
    _screenshot(page, "error-issue")
    single.locator("tr.record td.body").click()
    page.locator("#detail .stack").wait_for(timeout=5000)  # the detail panel opens from it too
    page.keyboard.press("Escape")
    samples.first.click()
    page.wait_for_url(f"**/trace?id={newest.trace_id}", timeout=5000)
    page.locator("tr.span").first.wait_for(timeout=5000)


def test_xss_payloads_in_every_issue_field_stay_inert(page: Page, console: ConsoleProcess) -> None:
    marker = uuid.uuid4().hex[:8]
    hostile = Emitter(console.handle, XSS)
    error = {
        "exception.type": f"{XSS}Error",
        "exception.message": f"{marker} {XSS}",
        "exception.stacktrace": f'Traceback:\n  File "/srv/{XSS}.py", line 1, in {XSS}\n',
        "http.route": f"/{XSS}",
    }
    hostile.log(f"{marker} {XSS}", SeverityNumber.ERROR, error)
    issue = _issue(console, f"{XSS}Error", 1)
    page.goto(console.url + "errors")
    row = page.locator("tr.issue-row", has_text=marker)
    row.wait_for(timeout=5000)
    assert row.locator("a.issue-link").inner_text() == f"{XSS}Error: {marker} {XSS}"
    assert row.locator("td.service").inner_text() == XSS
    assert row.locator("td.chain").inner_text() == f"/{XSS} (1)"
    page.goto(console.url + f"errors?fingerprint={issue.fingerprint}")
    page.locator("#issue .stack").wait_for(timeout=5000)
    text = page.inner_text("#issue")
    assert text.count(XSS) >= 6, "title, service, route, record, exception, stack"
    page.goto(console.url + f"errors?service={XSS}")
    page.locator("tr.issue-row", has_text=marker).wait_for(timeout=5000)
    assert page.input_value("input[name=service]") == XSS
    assert page.locator("main img").count() == 0
    assert page.evaluate("() => window.__xss") is None


class PodsError(Exception):
    pass


def test_an_issue_past_fifty_instances_says_what_it_counted_together(
    page: Page, console: ConsoleProcess
) -> None:
    writer = RecordWriter(console.handle)
    try:
        raise PodsError("every pod fails")
    except PodsError as raised:
        error = exception_fields(PodsError, raised, raised.__traceback__)
    writer.write(
        *(writer.row("boom", severity="ERROR", exception=error, instance=f"pod-{n:02}") for n in range(52))
    )
    issue = _issue(console, error[0], 52)
    page.goto(console.url + f"errors?fingerprint={issue.fingerprint}")
    facts = page.locator("#issue .issue-facts tr", has_text="instances")
    facts.wait_for(timeout=5000)
    text = facts.locator("td").inner_text()
    assert text.count("pod-") == 50 and text.endswith(", and 2 records since those (not counted by instance)")
    writer.close()


def test_stats_and_services_link_to_errors_and_mark_estimates(page: Page, console: ConsoleProcess) -> None:
    service = f"inventory-{uuid.uuid4().hex[:6]}"
    emitter = Emitter(console.handle, service)
    where = {"code.file.path": "inventory.py", "code.line.number": 7, "code.function.name": "lookup"}
    for _ in range(3):
        emitter.log("stock 12 lookup failed", SeverityNumber.ERROR, where)
    for _ in range(3):  # kept from traces sampled at 10%: each stands for ten
        emitter.log("stock checked", SeverityNumber.INFO, {SAMPLE_WEIGHT: 10.0})
    issue = _issue(console, "", 3)

    page.goto(console.url + "services")
    row = page.locator("tr.service-row", has_text=service)
    row.wait_for(timeout=5000)
    assert row.locator("a.to-search").get_attribute("href") == f"search?service={service}"
    rate = row.locator("abbr.estimated")
    assert rate.inner_text().startswith("~") and "about 33 records in the last hour from 6 stored" in str(
        rate.get_attribute("title")
    )
    row.locator("a.to-errors").click()
    page.wait_for_url(f"**/errors?service={service}", timeout=5000)
    page.locator("tr.issue-row", has_text="stock 12 lookup failed").wait_for(timeout=5000)
    assert page.locator("tr.issue-row").count() == 1

    page.goto(console.url + f"stats?since=15m&service={service}")
    info = page.locator(".severity-total[data-severity=INFO]")
    info.wait_for(timeout=5000)
    assert info.inner_text() == "■ INFO ~30" and info.locator("abbr.estimated").count() == 1
    assert page.locator(".severity-total[data-severity=ERROR]").inner_text() == "■ ERROR 3", (
        "errors are exact"
    )
    group = page.locator("#groups tr.error-group", has_text="stock 12 lookup failed")
    assert group.locator("a.to-search").get_attribute("href") == f"search?service={service}"
    group.locator("a.to-issue").click()
    page.wait_for_url(f"**/errors?fingerprint={issue.fingerprint}", timeout=5000)
    page.locator("#issue .issue-title", has_text="stock 12 lookup failed").wait_for(timeout=5000)


def test_the_errors_api_names_bad_input(console: ConsoleProcess) -> None:
    api = console.url + "api/errors"
    for query, said in (
        ("?status=closed", "status='closed' is invalid"),
        ("?since=last+tuesday", "since='last tuesday' is invalid"),
        ("?limit=0", "limit='0' is invalid"),
        ("/nothex", "invalid fingerprint 'nothex'"),
    ):
        answer = httpx.get(api + query, headers=console.headers())
        assert answer.status_code == 400 and said in answer.text, answer.text
    missing = httpx.get(api + "/0123456789abcdef", headers=console.headers())
    assert missing.status_code == 404 and "no error issue 0123456789abcdef" in missing.text
    assert httpx.get(api + "?status=ignored", headers=console.headers()).json() == {"issues": []}


def test_the_errors_page_reads_through_the_read_only_user(
    reader: RedisHandle, acl_redis: EmbeddedRedis
) -> None:
    console = ConsoleProcess(reader, token=None).start()
    try:
        (issue,) = httpx.get(console.url + "api/errors").json()["issues"]
        assert (issue["message"], issue["count"], issue["status"]) == ("card declined", 1, "open")
        found = httpx.get(console.url + f"api/errors/{issue['fingerprint']}").json()
        assert found["issue"] == issue and found["newest_record"]["body"] == "card declined"
        assert httpx.get(console.url + "errors").status_code == 200
        (group,) = httpx.get(console.url + "api/stats").json()["top_errors"]
        assert group["fingerprint"] == issue["fingerprint"]
        with acl_redis.client() as admin:  # a reader user set up before error issues existed
            admin.execute_command("ACL", "SETUSER", "reader", "-hmget", "-hgetall")
        refused = httpx.get(console.url + "api/errors")
        assert refused.status_code == 502 and "Redis refused" in refused.text
        (group,) = httpx.get(console.url + "api/stats").json()["top_errors"]
        assert group["fingerprint"] is None, "Stats still answers, its groups linking to their service"
    finally:
        console.stop()


def test_stats_since_the_streams_start_answers_its_records_not_every_minute_since_1970(
    console: ConsoleProcess,
) -> None:
    """A time before 1970 means the stream's start: the chart starts at its first record, not
    at 29 million empty minutes (which took the console's memory and its event loop)."""

    def minutes(since: str) -> list[dict[str, Any]]:
        answer = httpx.get(console.url + f"api/stats?since={since}", headers=console.headers(), timeout=10)
        assert answer.status_code == 200, answer.text
        found: list[dict[str, Any]] = answer.json()["minutes"]
        return found

    day, ever = minutes("24h"), minutes("1970-01-01")
    assert len(day) >= 24 * 60 and len(ever) <= 3  # the shop's records are minutes old
    assert sum(sum(m["counts"].values()) for m in ever) == sum(sum(m["counts"].values()) for m in day) > 0


def test_the_stats_api_honours_until_and_refuses_a_reversed_range(
    stream: RedisHandle, writer: RecordWriter
) -> None:
    """As `tracestream stats` does: a window that ended before the records were written counts none
    of them, and one that ends before it starts is a 400 naming both ends, as for a search."""
    writer.log("card declined", severity="ERROR", exception=("ValueError", "declined", "Traceback"))
    console = ConsoleProcess(stream).start()
    try:

        def get(query: str) -> httpx.Response:
            return httpx.get(console.url + "api/" + query, headers=console.headers(), timeout=10)

        assert [group["count"] for group in get("stats?since=1h").json()["top_errors"]] == [1]
        ended = get("stats?since=1h&until=30m").json()
        assert ended["top_errors"] == [] and sum(sum(m["counts"].values()) for m in ended["minutes"]) == 0
        assert len(ended["minutes"]) in (30, 31), "the window's minutes, up to its end"
        for query, since, until in (("stats", "2h", "3h"), ("search", "1h", "2h")):
            answer = get(f"{query}?since={since}&until={until}")
            assert (answer.status_code, answer.text) == (
                400,
                f"reversed time range: since {since!r} is after until {until!r}\n",
            ), query
    finally:
        console.stop()

"""The console's Alerts page in headless Chromium, over what a real runner wrote: rule states, the
last evaluation, notifications with trace links and a delivery given up on; hostile text stays text."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import orjson
import pytest
import yaml
from playwright.sync_api import Browser, Page

from tests.seeded_records import RecordWriter
from tests.support import VENV_BIN, RedisHandle, wait_for
from tests.test_alerts import SECRET_PASSWORD, SECRET_TOKEN, running
from tests.test_console_acl import READER_ACL
from tests.test_console_browser import XSS, _screenshot, browser, console  # noqa: F401 - fixtures
from tests.test_console_live import TOKEN, ConsoleProcess
from tracestream.alerts.status import alerts_status
from tracestream.connection import connect
from tracestream.embedded_redis import free_port

TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736


def rule_file(directory: Path, dead_url: str) -> Path:
    document = {
        "console_url": "http://console.example:8686",
        "notify": {"dead": {"webhook": dead_url}},
        "rules": [
            {"name": XSS, "kind": "match", "filter": {"service": "shop", "text": "declined"},
             "cooldown": "1m", "notify": "dead"},
            {"name": "shop-silent", "kind": "absence", "filter": {"service": "shop"}, "window": "1h",
             "notify": "dead"},
        ],
    }  # fmt: skip
    path = directory / "rules.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.fixture
def page(browser: Browser, console: ConsoleProcess) -> Iterator[Page]:  # noqa: F811 - the fixture above
    context = browser.new_context(viewport={"width": 1280, "height": 720})
    tab = context.new_page()
    response = tab.goto(console.url + "?token=" + TOKEN)
    assert response is not None and response.ok
    yield tab
    context.close()


def test_the_alerts_page_shows_states_notifications_and_failures_as_text(
    page: Page,
    console: ConsoleProcess,  # noqa: F811 - the imported fixture
    tmp_path: Path,
) -> None:
    handle: RedisHandle = console.handle
    dead = f"http://alerts:{SECRET_PASSWORD}@127.0.0.1:{free_port()}/hook?token={SECRET_TOKEN}"
    rules = rule_file(tmp_path, dead)
    marker = uuid.uuid4().hex[:8]
    writer = RecordWriter(handle)
    with running(handle, rules, "a", "--max-attempts", "1"):
        page.goto(console.url + "alerts")
        assert page.locator("header nav a.active").inner_text() == "Alerts"
        writer.write(writer.row(f"{marker} card declined {XSS}", service="shop", trace_id=TRACE_ID))
        firing = page.locator("#rules tr.alert-rule", has_text=XSS)
        firing.locator("td.sev-error", has_text="firing").wait_for(
            timeout=15_000
        )  # the page reloads every 5 s
        assert firing.locator("td.rule-name").inner_text() == XSS
        assert "a matching record" in firing.inner_text()
        quiet = page.locator("#rules tr.alert-rule", has_text="shop-silent")
        assert quiet.locator("td.sev-info").inner_text() == "ok"
        assert "rules last evaluated" in page.locator("#evaluated").inner_text()

        note = page.locator("#notifications tr.notification", has_text=marker)
        note.wait_for(timeout=10_000)
        assert note.locator("td.rule-name").inner_text() == XSS
        assert f"{marker} card declined {XSS}" in note.locator(".sample .msg").inner_text()
        trace = note.locator("a.trace-link")
        assert trace.get_attribute("href") == f"trace?id={TRACE_ID:032x}"
        search = note.locator("a", has_text="search").get_attribute("href") or ""
        assert search.startswith("search?") and "service=shop" in search and "console.example" not in search

        failure = page.locator("#failed tr.failed-delivery", has_text=XSS)
        failure.wait_for(timeout=15_000)
        shown = failure.inner_text()
        assert "http://127.0.0.1:" in shown and "/***" in shown
        assert "1" in failure.locator("td.num").inner_text()
        whole = page.content()
        assert SECRET_PASSWORD not in whole and SECRET_TOKEN not in whole
        assert page.evaluate("() => window.__xss") is None
        assert page.locator("img").count() == 0
        _screenshot(page, "alerts")
    writer.close()


def test_the_alerts_page_needs_only_what_the_consoles_read_only_user_may_run(
    console: ConsoleProcess,  # noqa: F811 - the imported fixture
    tmp_path: Path,
) -> None:
    handle = RedisHandle(url=console.handle.url, stream=f"test:{uuid.uuid4().hex[:12]}")
    rules = rule_file(tmp_path, f"http://127.0.0.1:{free_port()}/hook")
    writer = RecordWriter(handle)
    with running(handle, rules, "a", "--max-attempts", "1"):
        writer.log("card declined", service="shop", trace_id=TRACE_ID)
        user = f"reader-{uuid.uuid4().hex[:8]}"
        with handle.client() as admin:
            admin.execute_command(
                *READER_ACL.format(password="pw", stream=handle.stream).replace("reader", user, 1).split()
            )
        reader_url = f"redis://{user}:pw@127.0.0.1:{urlsplit(handle.url).port}/0"
        reader = connect(reader_url, 5.0, decode=True)
        shown = wait_for(
            lambda: (found := alerts_status(reader, handle.stream))["failed_deliveries"] and found,
            what="a delivery given up on, read as the console's read-only user",
        )
    writer.close()
    assert [(rule["rule"], rule["status"]) for rule in shown["rules"]] == [
        (XSS, "firing"),
        ("shop-silent", "ok"),
    ]
    assert shown["evaluated"] and shown["notifications"][0]["rule"] == XSS
    # The CLI's `alerts status` too: it listed the rules with SCAN, no right of this user.
    command = [str(VENV_BIN / "tracestream"), "alerts", "status", "--json"]
    done = subprocess.run(
        command, capture_output=True, text=True, env=handle.env(TRACESTREAM_REDIS_URL=reader_url)
    )
    assert done.returncode == 0, done.stderr
    states = [orjson.loads(line) for line in done.stdout.splitlines()]
    # a rule that never changed state is "ok" at change 0 there too, as the text form says
    assert [(state["rule"], state["status"], state["seq"]) for state in states if "rule" in state] == [
        (XSS, "firing", "1"),
        ("shop-silent", "ok", "0"),
    ]

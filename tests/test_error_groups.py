"""Error groups (same exception type and code location): `summarize` counts each service a group
came from, and `tracestream stats` and the console's Stats page name them, most records first.

On a Redis Cluster sharded by service each service's records are summarised on its own shard, so
a group that spans services is merged from every shard's part.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from playwright.sync_api import Page

from tests import test_console_browser as browser_tests
from tests import test_console_detail
from tests.seeded_records import RecordWriter
from tests.support import RedisHandle, run_python
from tests.test_cli import ndjson
from tests.test_console_live import ConsoleProcess
from tracestream.cli import main
from tracestream.cli.common import SHOWN_ERROR_LENGTH
from tracestream.connection import connect_cluster
from tracestream.embedded_redis import EmbeddedCluster
from tracestream.error_issues import list_issues
from tracestream.summary import summarize

browser = browser_tests.browser
page = test_console_detail.page  # a signed-in Chromium tab that fails the test on a script error

# Error records per service, one exception raised in one place.
SERVICES = {"orders": 3, "billing": 2, "audit": 1, "mail": 1}
FAILURE = (
    "KeyError",
    "'sku'",
    "Traceback (most recent call last):\n  File \"/srv/shop/stock.py\", line 3, in pick\nKeyError: 'sku'\n",
)
COUNTS = [{"service": service, "count": count} for service, count in SERVICES.items()]


def write_failures(writer: RecordWriter) -> None:
    """The error records of SERVICES, service by service."""
    for service, count in SERVICES.items():
        for _ in range(count):
            writer.log("pick failed", service=service, severity="ERROR", exception=FAILURE)


@pytest.fixture(scope="module")
def sharded() -> Iterator[RedisHandle]:
    """A cluster sharded by service, where four services raised the same error."""
    with EmbeddedCluster(3) as cluster:
        handle = RedisHandle(cluster.url, f"test:{uuid.uuid4().hex[:12]}")
        writer = RecordWriter(handle, redis_cluster=True, shard_by="service")
        write_failures(writer)
        writer.close()
        yield handle


@pytest.fixture(scope="module")
def console(sharded: RedisHandle) -> Iterator[ConsoleProcess]:
    process = ConsoleProcess(sharded, TRACESTREAM_REDIS_CLUSTER="true").start()
    yield process
    process.stop()


def test_a_group_counts_every_service_and_one_service_its_own(sharded: RedisHandle) -> None:
    client = connect_cluster(sharded.url, 5, decode=True)
    summary = summarize(client, sharded.stream, 0)
    client.close()
    [group] = summary.top_errors()
    assert (group.exception_type, group.count, group.service_counts()) == ("KeyError", 7, COUNTS)
    [billing] = summary.top_errors(service="billing")
    assert (billing.count, billing.service_counts()) == (2, [{"service": "billing", "count": 2}])
    assert billing.last_seen_ms <= group.last_seen_ms and billing.message == group.message == "'sku'"


def test_on_one_redis_a_group_counts_every_service_it_came_from(
    stream: RedisHandle, writer: RecordWriter, redis_client: redis.Redis
) -> None:
    """One script call reads every service's records: each service's part of a group is counted
    there, not the whole group for the service of its newest record."""
    write_failures(writer)
    [group] = summarize(redis_client, stream.stream, 0).top_errors()
    assert (group.count, group.service_counts()) == (7, COUNTS)


def test_stats_names_the_first_two_services_and_how_many_more(
    sharded: RedisHandle, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "120")
    where = ["--redis-url", sharded.url, "--cluster", "--stream", sharded.stream, "--since", "1h"]
    assert main(["stats", "--json", *where]) == 0
    groups = [line for line in ndjson(capsys.readouterr().out) if line["type"] == "error_group"]
    assert [(g["count"], g["services"]) for g in groups] == [(7, COUNTS)]
    assert "service" not in groups[0], "no one service stands for the group"
    assert main(["stats", *where]) == 0
    [row] = [line for line in capsys.readouterr().out.splitlines() if "KeyError" in line]
    cells = [cell.strip() for cell in row.split("│")[1:-1]]
    assert cells[:4] == ["7", "KeyError", "app/views.py:10 in handle", "orders, billing +2 more"], row


# FastAPI's "First Steps" app with two paths that fail alike, served through httpx's ASGI transport.
TWO_FAILING_ROUTES = """
import asyncio

import httpx
import tracestream
from fastapi import FastAPI

tracestream.configure()
app = FastAPI()


@app.get("/orders/{order_id}")
async def read_order(order_id: int):
    raise LookupError(f"order {order_id}")


@app.get("/carts/{cart_id}")
async def read_cart(cart_id: int):
    raise LookupError(f"cart {cart_id}")


async def main():
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://shop") as client:
        for path in ("/orders/1", "/orders/2", "/carts/3"):
            assert (await client.get(path)).status_code == 500


asyncio.run(main())
"""


def test_stats_groups_failed_requests_by_where_the_app_raised(
    stream: RedisHandle, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A request record is no logging call of the app's: it is located where the app's code
    raised what it carries, so two routes failing alike are two groups, as they are two issues."""
    script = tmp_path / "shop.py"
    script.write_text(TWO_FAILING_ROUTES)
    run_python(script, stream.env(OTEL_SERVICE_NAME="shop"))
    assert main(["stats", "--json", "--redis-url", stream.url, "--stream", stream.stream]) == 0
    groups = [line for line in ndjson(capsys.readouterr().out) if line["type"] == "error_group"]
    located = sorted((group["code"], group["count"]) for group in groups)
    assert located == [(f"{script}:14 in read_order", 2), (f"{script}:19 in read_cart", 1)], groups


def test_stats_shows_a_long_message_shortened_as_errors_does(
    stream: RedisHandle,
    writer: RecordWriter,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A traceback logged as the message (granian's line about an app's exception) is a
    screenful: the table shows its first SHOWN_ERROR_LENGTH characters, `--json` all of it."""
    frames = [f"frame{i:03d}" for i in range(100)]  # "frame000 frame001 …": 9 characters a word
    writer.log("failed", severity="ERROR", exception=("RuntimeError", " ".join(frames), "Traceback"))
    monkeypatch.setenv("COLUMNS", "200")
    where = ["--redis-url", stream.url, "--stream", stream.stream, "--since", "1h"]
    assert main(["stats", *where]) == 0
    whole_words = SHOWN_ERROR_LENGTH // 9
    shown = capsys.readouterr().out
    assert re.findall(r"frame\d{3}\b", shown) == frames[:whole_words]
    assert f"{frames[whole_words - 1]} f…" in shown  # cut, and it says so
    assert main(["stats", "--json", *where]) == 0
    [group] = [line for line in ndjson(capsys.readouterr().out) if line["type"] == "error_group"]
    assert group["message"] == " ".join(frames)


def test_the_stats_api_links_a_group_to_the_one_issue_of_its_services(
    sharded: RedisHandle, console: ConsoleProcess
) -> None:
    client = connect_cluster(sharded.url, 5, decode=True)
    [issue] = list_issues(client, sharded.stream)
    client.close()

    def groups(query: str) -> list[tuple[int, list[dict[str, object]], str | None]]:
        answer = httpx.get(console.url + "api/stats" + query, headers=console.headers(), timeout=10)
        assert answer.status_code == 200, answer.text
        return [(g["count"], g["services"], g["fingerprint"]) for g in answer.json()["top_errors"]]

    assert groups("?since=1h") == [(7, COUNTS, issue.fingerprint)]
    assert groups("?since=1h&service=billing") == [
        (2, [{"service": "billing", "count": 2}], issue.fingerprint)
    ]


def test_the_stats_page_names_each_service_and_links_the_group_to_its_issue(
    page: Page, console: ConsoleProcess
) -> None:
    page.goto(console.url + "stats?since=1h")
    group = page.locator("#groups tr.error-group", has_text="KeyError")
    group.wait_for(timeout=5000)
    services = group.locator("a.to-search")
    assert services.all_inner_texts() == ["orders", "billing"]
    assert [services.nth(i).get_attribute("href") for i in range(2)] == [
        "search?service=orders",
        "search?service=billing",
    ]
    assert services.first.get_attribute("title") == "3 errors"
    more = group.locator(".more")
    assert more.inner_text().strip() == "+2 more" and more.get_attribute("title") == "audit (1), mail (1)"
    href = group.locator("a.to-issue").get_attribute("href")
    assert href is not None and href.startswith("errors?fingerprint=")
    assert group.locator("td.num").inner_text() == "7"

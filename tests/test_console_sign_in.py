"""Signing in to the standalone console: the form, `?token=` links, cookies of two consoles on one host,
and what a browser keeps; against real console processes, and in headless Chromium."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urljoin

import httpx
import pytest
from playwright.sync_api import Browser, Request

from tests import test_console_browser as browser_tests
from tests.support import RedisHandle, wait_for
from tests.test_console_live import TOKEN, ConsoleProcess
from tracestream.embedded_redis import EmbeddedRedis

browser = browser_tests.browser
PAGE = {"accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}  # as Chromium asks
FORM = {"content-type": "application/x-www-form-urlencoded"}


@pytest.fixture(scope="module")
def console(redis_server: EmbeddedRedis) -> Iterator[ConsoleProcess]:
    with ConsoleProcess.on_fresh_stream(redis_server) as process:
        yield process


def sign_in(client: httpx.Client, console: ConsoleProcess, fields: dict[str, str]) -> httpx.Response:
    return client.post(console.url + "sign-in", data=fields, headers=PAGE)


def test_a_browser_without_the_token_gets_a_form_that_posts_it(console: ConsoleProcess) -> None:
    page = httpx.get(console.url + "search", params={"text": "a b"}, headers=PAGE)
    assert page.status_code == 401 and page.headers["content-type"].startswith("text/html")
    assert (
        '<form method="post" action="sign-in">' in page.text and 'type="password" name="token"' in page.text
    )
    assert '<input type="hidden" name="next" value="./search?text=a+b">' in page.text
    assert "needs its token" in page.text and "<script" not in page.text
    with httpx.Client() as client:
        answer = sign_in(client, console, {"token": TOKEN, "next": "./search?text=a+b"})
        assert answer.status_code == 303 and answer.headers["location"] == "./search?text=a+b"
        assert "httponly" in answer.headers["set-cookie"].lower()
        assert client.get(console.url + "api/services").status_code == 200, "signed in"
    script = httpx.get(console.url + "api/services")
    assert script.status_code == 401 and script.text.startswith("401: the console needs its token"), "no form"


def test_a_wrong_token_in_the_form_says_so_and_shows_the_form_again(console: ConsoleProcess) -> None:
    with httpx.Client() as client:
        answer = sign_in(client, console, {"token": "wrong", "next": "./errors?service=x"})
        assert answer.status_code == 401 and "the token given does not match" in answer.text
        assert '<input type="hidden" name="next" value="./errors?service=x">' in answer.text
        assert not client.cookies and client.get(console.url + "api/services").status_code == 401


def test_a_token_that_is_given_but_wrong_is_named_as_such(console: ConsoleProcess) -> None:
    for params, headers in (({"token": "wrong"}, {}), ({}, {"authorization": "Bearer wrong"})):
        answer = httpx.get(console.url, params=params, headers=headers)
        assert answer.status_code == 401, (params, headers)
        assert (
            answer.text == "401: the token given does not match the console's (TRACESTREAM_CONSOLE_TOKEN)\n"
        )
    assert "needs its token" in httpx.get(console.url).text


@pytest.mark.parametrize(
    "target",
    [
        "//evil.example/",
        "https://evil.example/",
        "/\\evil.example",
        "javascript:alert(1)",
        "./%2e%2e/%2e%2e/",
        "./.%2E",
        "../../",
        "./a/../../b",
        "./search\r\nSet-Cookie: x=1",
        "./search#https://evil.example",
        "",
    ],
)
def test_the_form_sends_back_only_to_a_page_beside_it(console: ConsoleProcess, target: str) -> None:
    with httpx.Client() as client:
        answer = sign_in(client, console, {"token": TOKEN, "next": target})
    assert answer.status_code == 303 and answer.headers["location"] == "./"


def test_an_oversized_or_foreign_sign_in_is_refused(console: ConsoleProcess) -> None:
    with httpx.Client() as client:
        big = sign_in(client, console, {"token": TOKEN, "next": "./?" + "x" * 5000})
        assert big.status_code == 413 and big.text == "413: a sign-in form is 4096 bytes at most\n"
        typed = client.post(console.url + "sign-in", json={"token": TOKEN})
        assert typed.status_code == 415 and "application/x-www-form-urlencoded" in typed.text
        assert not client.cookies


def test_no_cache_keeps_an_answer_to_a_sign_in(console: ConsoleProcess) -> None:
    """The `?token=` exchange was cached on disk under the URL holding the token."""
    answers = {
        "exchange": httpx.get(console.url, params={"token": TOKEN}),
        "wrong exchange": httpx.get(console.url, params={"token": "wrong"}),
        "form": httpx.get(console.url, headers=PAGE),
        "script refused": httpx.get(console.url + "api/services"),
        "sign-in": httpx.post(console.url + "sign-in", data={"token": TOKEN}, headers=FORM),
        "wrong sign-in": httpx.post(console.url + "sign-in", data={"token": "x"}, headers=FORM),
    }
    assert {name: answer.headers.get("cache-control") for name, answer in answers.items()} == dict.fromkeys(
        answers, "no-store"
    )


def test_the_token_link_sends_back_beside_it_under_a_proxy_prefix(console: ConsoleProcess) -> None:
    """Behind a proxy serving the console at /logs/, the absolute `/search` left the console."""
    for page, query, expected in (("", "", "/logs/"), ("search", "service=x&", "/logs/search?service=x")):
        target = f"{page}?{query}token={TOKEN}"
        answer = httpx.get(console.url + target)
        assert answer.status_code == 303
        assert urljoin("http://logs.example/logs/" + target, answer.headers["location"]) == (
            "http://logs.example" + expected
        )


def test_two_consoles_behind_one_host_keep_a_sign_in_each(stream: RedisHandle) -> None:
    """Cookies ignore the port (and, behind one proxy, the prefix): each console had the same one."""
    first = ConsoleProcess(stream).start()
    second = ConsoleProcess(stream, token="another-console-token").start()
    try:
        with httpx.Client() as client:
            for console in (first, second):
                assert client.get(console.url, params={"token": console.token}).status_code == 303
            assert [client.get(console.url).status_code for console in (first, second)] == [200, 200]
            assert len(client.cookies) == 2
    finally:
        first.stop()
        second.stop()


def test_signing_in_with_the_form_puts_the_token_in_no_url(browser: Browser, console: ConsoleProcess) -> None:
    """A `?token=` URL stays in the browser's history and caches, and in a proxy's access log."""
    context = browser.new_context()
    requests: list[Request] = []
    try:
        tab = context.new_page()
        tab.on("request", lambda request: requests.append(request))
        form = tab.goto(console.url + "search?text=signed")
        assert form is not None and form.status == 401
        tab.fill("input[name=token]", TOKEN)
        tab.click("button[type=submit]")
        tab.wait_for_url(console.url + "search?text=signed", timeout=5000)
        tab.wait_for_selector("#records", timeout=5000)
        assert tab.input_value("input[name=text]") == "signed"
        tab.goto(console.url)
        tab.wait_for_selector("#status.live", timeout=5000)
        (cookie,) = context.cookies()
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and TOKEN not in cookie["value"]
    finally:
        context.close()
    urls = [request.url for request in requests]
    assert any(url.endswith("/sign-in") for url in urls) and any("api/live" in url for url in urls)
    assert not [url for url in urls if TOKEN in url]
    (posted,) = [request for request in requests if request.method == "POST"]
    assert posted.post_data is not None and f"token={TOKEN}" in posted.post_data


def test_the_live_tail_says_when_its_sign_in_is_no_longer_valid(
    browser: Browser, stream: RedisHandle
) -> None:
    """Once the token changed, the tail said `reconnecting…` and asked again every second, for ever."""
    console = ConsoleProcess(stream).start()
    context = browser.new_context()
    try:
        tab = context.new_page()
        tab.goto(console.url + "?token=" + TOKEN)
        tab.wait_for_selector("#status.live", timeout=5000)
        tails: list[str] = []
        tab.on("request", lambda request: tails.append(request.url) if "api/live" in request.url else None)
        console.stop()
        console.token = "a-rotated-console-token"
        console.start()
        tab.wait_for_selector("#status.error:has-text('signed out')", timeout=10000)
        asked = len(tails)
        with pytest.raises(AssertionError):
            wait_for(lambda: len(tails) > asked, timeout=3, what="another try")
    finally:
        context.close()
        console.stop()

"""Every reader over the hostile-entry corpus (tests/corpus/hostile_entries.py): the query API,
summaries, every reading CLI command, the console's JSON APIs and live feed, and the forwarder.
Good records around the foreign entries come back in order; nothing raises; undecodable entries
come back marked."""

from __future__ import annotations

import csv
import io
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis

from tests.corpus.hostile_entries import HOSTILE_LOGS, Corpus, _log_fields, write_corpus
from tests.otlp_receiver import OtlpReceiver
from tests.support import ROOT, VENV_BIN, RedisHandle, wait_for
from tests.test_console_live import ConsoleProcess, Emitter, Viewer
from tests.test_forward import forwarding
from tracestream.cli import main
from tracestream.embedded_redis import EmbeddedRedis
from tracestream.query import Follow, Query, follow, search, trace_tree
from tracestream.schema import UNDECODABLE, LogEntry
from tracestream.summary import summarize


@pytest.fixture(scope="module")
def corpus(redis_server: EmbeddedRedis) -> Corpus:
    return write_corpus(RedisHandle(url=redis_server.url, stream=f"test:{uuid.uuid4().hex[:12]}"))


def reader(corpus: Corpus) -> redis.Redis:
    """A plain decoding client with redis-py's strict UTF-8, as a library user would make one."""
    return corpus.handle.client()


def good_newest_first(records: list[LogEntry], corpus: Corpus) -> list[str]:
    return [entry.body for entry in records if entry.body.startswith(f"good {corpus.marker}")]


def test_search_pages_return_every_good_record_in_order_and_mark_the_hostile_ones(corpus: Corpus) -> None:
    found: list[LogEntry] = []
    cursor = None
    with reader(corpus) as client:
        while True:
            page = search(client, corpus.handle.stream, Query(), cursor, limit=4)
            found += page.records
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
    assert good_newest_first(found, corpus) == corpus.good[::-1]
    hostile = {entry.stream_id: entry for entry in found if entry.stream_id in corpus.hostile_logs}
    assert set(hostile) == set(corpus.hostile_logs), "every foreign entry the digest names is shown"
    for stream_id, entry in hostile.items():
        assert corpus.is_marked(corpus.hostile_logs[stream_id], entry.attributes), stream_id
    big = next(e for e in hostile.values() if corpus.hostile_logs[e.stream_id] == "a 20 MB body")
    assert len(big.body) == 262_144 and "body cut from 20000000" in big.attributes[UNDECODABLE]
    utf8 = next(e for e in hostile.values() if corpus.hostile_logs[e.stream_id] == "invalid UTF-8")
    assert (utf8.body, utf8.service) == ("caf\\xe9 \\xff\\xfe", "api\\xff")
    not_json = next(e for e in hostile.values() if corpus.hostile_logs[e.stream_id].endswith("not JSON"))
    assert not_json.attributes["tracestream.raw.attributes"] == "{user: 'x'"


@pytest.mark.parametrize(
    "filters",
    [
        {"services": ["api"], "severity": "error"},
        {"text": "good"},
        {"regex": "^good [0-9a-f]+ [0-9]$"},
        {"attributes": ["missing=1"]},
        {"since": "1h", "text": "o"},
    ],
)
def test_filtered_searches_skip_nothing_good(corpus: Corpus, filters: dict[str, Any]) -> None:
    query = Query.parse(**filters)
    with reader(corpus) as client:
        records = search(client, corpus.handle.stream, query, limit=1000).records
    expected = [] if "attributes" in filters else corpus.good[::-1]
    assert good_newest_first(records, corpus) == expected


def test_trace_lookup_shows_good_and_foreign_spans_and_skips_members_that_name_nothing(
    corpus: Corpus,
) -> None:
    with reader(corpus) as client:
        tree = trace_tree(client, corpus.handle.stream, corpus.trace_id)
        search_by_trace = search(client, corpus.handle.stream, Query(trace_id=corpus.trace_id), limit=1000)
        wrong_type = trace_tree(client, corpus.handle.stream, "cd" * 16)
    root = next(node for node in tree.roots if node.span.span_id == corpus.span_id)
    assert [e.body for e in root.logs if e.body.startswith("good")] == corpus.good
    spans = {node.span.stream_id: node.span for _, node in tree.walk()}
    assert set(corpus.hostile_spans) <= set(spans)
    for stream_id in corpus.hostile_spans:
        assert corpus.is_marked(corpus.hostile_spans[stream_id], spans[stream_id].attributes), stream_id
    assert all(isinstance(event, dict) for span in spans.values() for event in span.events)
    assert good_newest_first(search_by_trace.records, corpus) == corpus.good[::-1]
    assert wrong_type.roots == [] and wrong_type.unattached_logs == []


def test_summaries_count_every_entry_under_its_exact_names(corpus: Corpus) -> None:
    with reader(corpus) as client:
        summary = summarize(client, corpus.handle.stream, 0)
    services = summary.services
    assert {"api", "api\tsplit\nhere", "api\\xff"} <= set(services)
    assert sum(status.records for status in services.values()) == len(corpus.good) + len(HOSTILE_LOGS)
    severities = {severity for _, _, severity in summary.per_minute}
    assert {"ERROR", "ERR\tOR", "\\xc3"} <= severities
    groups = summary.error_groups
    assert groups["GoodError", "app/views.py:10 in handle", "api"].count == len(corpus.good)
    assert ("a\tb", "", "api") in groups
    assert all(len(group.message) <= 1024 for group in groups.values()), "a 20 MB body is cut"


def cli(corpus: Corpus, capfd: pytest.CaptureFixture[str], *argv: str) -> str:
    status = main([*argv, "--redis-url", corpus.handle.url, "--stream", corpus.handle.stream])
    out, err = capfd.readouterr()
    assert status == 0, err
    assert "Traceback" not in err and "unexpected" not in err
    return out


@pytest.mark.parametrize("as_json", [False, True])
def test_every_reading_command_exits_0_and_shows_the_good_records(
    corpus: Corpus,
    capfd: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    as_json: bool,
) -> None:
    monkeypatch.setenv("COLUMNS", "400")  # whole bodies on one line, for the checks below
    json = ["--json"] if as_json else []
    out = cli(corpus, capfd, "search", "-n", "1000", *json)
    assert corpus.good[-1] in next(line for line in out.splitlines() if f"good {corpus.marker}" in line)
    out = cli(corpus, capfd, "trace", corpus.trace_id, *json)
    assert all(body in out for body in corpus.good)
    out = cli(corpus, capfd, "services", *json)
    assert "api" in out
    out = cli(corpus, capfd, "stats", "--since", "1h", *json)
    assert "GoodError" in out
    if as_json:
        for command in ("search", "trace", "services", "stats"):
            argv = [command, corpus.trace_id] if command == "trace" else [command]
            for line in cli(corpus, capfd, *argv, "--json").splitlines():
                orjson.loads(line)
    target = tmp_path / "export.out"
    cli(corpus, capfd, "export", "-f", "ndjson" if as_json else "csv", "-o", str(target), *json)
    if as_json:
        bodies = [orjson.loads(line)["body"] for line in target.read_text().splitlines()]
    else:
        csv.field_size_limit(1_000_000)  # the 20 MB body, cut to 262,144 characters
        bodies = [row["body"] for row in csv.DictReader(io.StringIO(target.read_text()))]
    assert [body for body in bodies if body.startswith("good")] == corpus.good[::-1]
    assert len(bodies) == len(corpus.good) + len(HOSTILE_LOGS)


def test_follow_reads_past_hostile_entries_in_order(stream: RedisHandle) -> None:
    with stream.client() as client:
        state = Follow.at_end(client, stream.stream)
        written = write_corpus(stream)
        live = follow(client, stream.stream, Query(), state, block_ms=100)
        seen: list[LogEntry] = []

        def read_some() -> bool:
            entry = next(live)
            if entry is not None:
                seen.append(entry)
            return len(good_newest_first(seen, written)) == len(written.good)

        wait_for(read_some, interval=0, what="every good record followed")
    assert good_newest_first(seen, written) == written.good
    hostile = [entry for entry in seen if entry.stream_id in written.hostile_logs]
    assert len(hostile) == len(HOSTILE_LOGS)
    assert all(written.is_marked(written.hostile_logs[e.stream_id], e.attributes) for e in hostile)


def test_tail_process_follows_past_hostile_entries_and_warns_once(stream: RedisHandle) -> None:
    with stream.client() as client:
        known = max(int(c["id"]) for c in client.client_list())
    tail = subprocess.Popen(
        [str(VENV_BIN / "tracestream"), "tail", "--json", "-n", "0"],
        env=stream.env(),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    try:
        reading = threading.Thread(target=lambda: lines.extend(tail.stdout or ()), daemon=True)
        reading.start()
        with stream.client() as client:
            wait_for(
                lambda: any(int(c["id"]) > known and c["cmd"] == "xread" for c in client.client_list()),
                what="tail following",
            )
        written = write_corpus(stream)
        wait_for(lambda: sum(written.good[-1] in line for line in lines) == 1, what="the last good record")
    finally:
        tail.terminate()
        _, err = tail.communicate(timeout=10)
    bodies = [orjson.loads(line)["body"] for line in lines]
    assert [body for body in bodies if body.startswith("good")] == written.good
    assert "Traceback" not in err
    warnings = [line for line in err.splitlines() if "is not a valid entry" in line]
    assert len(warnings) == 1, err


@pytest.fixture(scope="module")
def console(corpus: Corpus) -> Iterator[ConsoleProcess]:
    process = ConsoleProcess(corpus.handle, token=None).start()
    yield process
    process.stop()


def test_console_apis_answer_200_with_the_good_records(corpus: Corpus, console: ConsoleProcess) -> None:
    search_page = httpx.get(console.url + "api/search", params={"limit": "1000"})
    assert search_page.status_code == 200, search_page.text
    bodies = [record["body"] for record in search_page.json()["records"]]
    assert [body for body in bodies if body.startswith("good")] == corpus.good[::-1]
    trace = httpx.get(console.url + f"api/trace/{corpus.trace_id}")
    assert trace.status_code == 200, trace.text
    assert corpus.span_id in [row["span"]["span_id"] for row in trace.json()["rows"] if "span" in row]
    for path in ("api/services", "api/stats?since=1h", f"api/trace/{'cd' * 16}"):
        assert httpx.get(console.url + path).status_code == 200, path


def test_live_feed_survives_hostile_entries_for_open_and_new_viewers(console: ConsoleProcess) -> None:
    handle = console.handle
    marker = uuid.uuid4().hex[:8]
    open_viewer = Viewer(console)
    emitter = Emitter(handle, "orders")
    try:
        emitter.log(f"{marker} before")
        wait_for(lambda: f"{marker} before" in open_viewer.bodies(), what="the first good record")
        with redis.Redis.from_url(handle.url) as raw:
            for hostile in HOSTILE_LOGS:
                raw.xadd(handle.keys.logs, _log_fields("", "", hostile.name, hostile.changes))  # type: ignore[arg-type]
        emitter.log(f"{marker} after")
        wait_for(
            lambda: f"{marker} after" in open_viewer.bodies(), what="the good record after the hostile ones"
        )
        new_viewer = Viewer(console)
        try:
            assert new_viewer.status == 200
            emitter.log(f"{marker} later")
            for viewer in (open_viewer, new_viewer):
                wait_for(
                    lambda v=viewer: f"{marker} later" in v.bodies(), what="a record after the new viewer"
                )
        finally:
            new_viewer.close()
    finally:
        open_viewer.close()
    ours = [body for body in open_viewer.bodies() if body.startswith(marker)]
    assert ours == [f"{marker} before", f"{marker} after", f"{marker} later"]
    bodies = open_viewer.bodies()
    between = bodies[bodies.index(f"{marker} before") + 1 : bodies.index(f"{marker} after")]
    assert len(between) == len(HOSTILE_LOGS)


def test_forwarder_forwards_the_good_records_and_dead_letters_what_it_cannot_encode(
    stream: RedisHandle,
) -> None:
    written = write_corpus(stream)
    with stream.client() as client:
        good = [e.record_id for e in search(client, stream.stream, Query(text="good"), limit=100).records]
    dead_letters = f"{stream.keys.logs}:forward:dead"

    def accounted(receiver: OtlpReceiver) -> bool:
        with redis.Redis.from_url(stream.url) as raw:
            dead = int(raw.xlen(dead_letters))
        return len(receiver.logs) + dead >= len(written.good) + len(HOSTILE_LOGS)

    with OtlpReceiver() as receiver, forwarding(stream, receiver):
        wait_for(lambda: set(good) <= set(receiver.record_ids()), what="the good records")
        wait_for(lambda: accounted(receiver), what="every entry forwarded or dead-lettered")

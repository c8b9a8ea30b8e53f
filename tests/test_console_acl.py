"""The read-only Redis user of docs/security.md: the console, the query API and the CLI's readers
work through it, and it can change nothing."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator

import httpx
import pytest
import redis

from tests.seeded_records import RecordWriter, tracer_provider
from tests.support import ROOT, VENV_BIN, RedisHandle, wait_for
from tests.test_console_live import ConsoleProcess, Emitter, Viewer
from tracestream.connection import connect
from tracestream.embedded_redis import EmbeddedRedis
from tracestream.query import Follow, Query, follow, iter_records, search, trace_tree
from tracestream.summary import service_status

# The documented reader user (docs/security.md); `{stream}` is the configured stream name.
READER_ACL = (
    "ACL SETUSER reader on >{password} resetkeys ~{stream}* resetchannels -@all"
    " +xrange +xrevrange +xread +xlen +lrange +evalsha_ro +evalsha +script|load +client|setname +ping +select"
    " +zrange +hmget +hgetall"
)


@pytest.fixture(scope="module")
def acl_redis() -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis() as server:
        yield server


@pytest.fixture
def reader(acl_redis: EmbeddedRedis) -> Iterator[RedisHandle]:
    """A stream with a log record and a two-span trace in it, and a reader-user URL for it."""
    stream = f"acl:{uuid.uuid4().hex[:8]}"
    with acl_redis.client() as admin:
        admin.execute_command(*READER_ACL.format(password="s3cret-reader", stream=stream).split())
        admin.script_flush()  # the reader loads the scripts it runs itself
    written = RedisHandle(acl_redis.url, stream)
    writer = RecordWriter(written)
    provider = tracer_provider(written, "api")
    with provider.get_tracer("t").start_as_current_span("GET /checkout") as root:
        with provider.get_tracer("t").start_as_current_span("charge card"):
            pass
        context = root.get_span_context()
        writer.log("card declined", severity="ERROR", trace_id=context.trace_id, span_id=context.span_id)
    writer.close()
    yield RedisHandle(f"redis://reader:s3cret-reader@127.0.0.1:{acl_redis.port}/0", stream)


def _trace_id(handle: RedisHandle) -> str:
    with redis.Redis.from_url(handle.url, decode_responses=True) as client:
        return str(client.xrevrange(handle.stream, count=1)[0][1]["trace_id"])


def test_the_query_api_reads_through_the_reader_user(reader: RedisHandle) -> None:
    with connect(reader.url, 5, decode=True) as client:
        assert [
            e.body for e in search(client, reader.stream, Query.parse(text="card", severity="ERROR")).records
        ] == ["card declined"]
        assert [e.body for e in iter_records(client, reader.stream, Query.parse(regex="de+clined"))] == [
            "card declined"
        ]
        tree = trace_tree(client, reader.stream, _trace_id(reader))
        assert [(depth, node.span.name) for depth, node in tree.walk()] == [
            (0, "GET /checkout"),
            (1, "charge card"),
        ]
        assert [status.service for status in service_status(client, reader.stream)] == ["api"]
        state = Follow({reader.stream: "0-0"})
        assert next(e for e in follow(client, reader.stream, Query(), state) if e).body == "card declined"


def test_the_console_and_the_cli_read_through_the_reader_user(reader: RedisHandle) -> None:
    trace_id = _trace_id(reader)
    console = ConsoleProcess(reader, token=None).start()
    try:
        for path in ("api/search?text=card", f"api/trace/{trace_id}", "api/services", "api/stats"):
            response = httpx.get(console.url + path)
            assert response.status_code == 200, (path, response.text)
        assert (
            httpx.get(console.url + "api/search?regex=card").json()["records"][0]["body"] == "card declined"
        )
        viewer = Viewer(console, text="refund")
        try:
            admin = RedisHandle(reader.url.replace("reader:s3cret-reader@", ""), reader.stream)
            Emitter(admin, "billing").log("refund issued")
            wait_for(lambda: viewer.bodies() == ["refund issued"], timeout=5, what="the live record")
        finally:
            viewer.close()
    finally:
        console.stop()
    env = reader.env()
    for command in (["search", "--json"], ["export"], ["trace", trace_id], ["services"], ["stats"]):
        done = subprocess.run(
            [str(VENV_BIN / "tracestream"), *command], env=env, cwd=ROOT, capture_output=True, text=True
        )
        assert done.returncode == 0, (command, done.stderr)


def test_the_reader_user_can_change_nothing(reader: RedisHandle) -> None:
    with redis.Redis.from_url(reader.url, decode_responses=True) as client:
        writes = [
            lambda: client.xadd(reader.stream, {"body": "forged"}),
            lambda: client.xtrim(reader.stream, maxlen=0),
            lambda: client.delete(reader.stream),
            lambda: client.set(f"{reader.stream}:other", "x"),
            lambda: client.hset(f"{reader.stream}:status:x", "forged", "1"),
            lambda: client.keys("*"),
            lambda: client.flushdb(),
            lambda: client.xrange("someone-else:stream"),
        ]
        for write in writes:
            with pytest.raises(redis.exceptions.NoPermissionError):
                write()
        # It may load scripts (the readers' own), but a script runs with the caller's rights.
        sneaky = client.script_load("return redis.call('XADD', KEYS[1], '*', 'body', 'forged')")
        with pytest.raises(redis.exceptions.ResponseError, match=r"permission|can't run|No permissions"):
            client.evalsha(sneaky, 1, reader.stream)
        assert [fields["body"] for _, fields in client.xrange(reader.stream)] == ["card declined"]


def test_a_missing_right_is_a_502_naming_it(reader: RedisHandle, acl_redis: EmbeddedRedis) -> None:
    with acl_redis.client() as admin:
        admin.execute_command("ACL", "SETUSER", "reader", "-evalsha_ro", "-evalsha")
    console = ConsoleProcess(reader, token=None).start()
    try:
        response = httpx.get(console.url + "api/search")
        assert response.status_code == 502
        assert response.json()["error"].startswith("Redis refused the console's read: ")
        assert "evalsha" in response.json()["error"]
    finally:
        console.stop()


def test_a_wrong_password_is_a_502_saying_so_not_an_outage(reader: RedisHandle) -> None:
    """redis-py raises refused credentials as a connection error: the console said "Redis
    unreachable, retrying", and had the user look at the network."""
    wrong = RedisHandle(reader.url.replace("s3cret-reader", "not-the-password"), reader.stream)
    console = ConsoleProcess(wrong, token=None).start()
    try:
        response = httpx.get(console.url + "api/search")
        assert response.status_code == 502
        assert response.json()["error"].startswith("Redis refused the console's credentials: ")
    finally:
        console.stop()

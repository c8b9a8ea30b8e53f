"""Scrubbing on the export path: no secret from the corpus reaches Redis, the spool or the screen."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from tests.apps.servers import LAUNCHER_ENV, bin_path, http_ready, serve
from tests.pipelines import PrivatePipeline
from tests.support import ROOT, VENV_BIN, RedisHandle, run_python, run_python_process, wait_for
from tracestream.cli import main
from tracestream.disk_spool import read_frames
from tracestream.embedded_redis import free_port
from tracestream.settings import Settings

CORPUS = Path(__file__).parent / "corpus"


def _rows(name: str) -> list[list[str]]:
    lines = (CORPUS / name).read_text().splitlines()
    return [line.split("\t") for line in lines if line.strip() and not line.startswith("#")]


SECRET_ROWS = _rows("secrets.txt")
ORDINARY = [row[0] for row in _rows("ordinary.txt")]


@pytest.fixture
def pipeline(stream: RedisHandle) -> Iterator[PrivatePipeline]:
    built = PrivatePipeline(Settings.load(environ={}, redis_url=stream.url, stream=stream.stream))
    yield built
    built.close()


def _leaks(secret: str, text: str) -> bool:
    """The secret as a token of its own (not as digits inside an id or a timestamp)."""
    return re.search(rf"(?<![0-9A-Za-z]){re.escape(secret)}(?![0-9A-Za-z])", text) is not None


def _everything_written(handle: RedisHandle) -> str:
    with handle.client() as client:
        entries = client.xrange(handle.keys.logs) + client.xrange(handle.keys.spans)
    return "\n".join(value for _, fields in entries for value in fields.values())


def test_corpus_secrets_never_reach_redis_by_any_field(
    pipeline: PrivatePipeline, stream: RedisHandle
) -> None:
    assert len(SECRET_ROWS) >= 50
    tracer = pipeline.tracer_provider.get_tracer("scrub")
    for line, *_ in SECRET_ROWS:
        pipeline.logger.warning(line, extra={"detail": line, "nested": {"list": [line]}})
        try:
            raise RuntimeError(line)
        except RuntimeError:
            pipeline.logger.exception("request failed")
        with tracer.start_as_current_span("GET /orders", attributes={"db.statement": line}) as span:
            span.add_event("retry", {"reason": line})
            span.set_status(2, line)  # type: ignore[arg-type]
    with tracer.start_as_current_span(
        "GET /login",
        attributes={
            "http.url": "https://api.example.com/login?user=ann&access_token=tok-Q9x8W7v6U5&page=2",
            "http.request.header.authorization": ["Bearer abcdefghijklmnop.qrstuvwx"],
            "http.request.header.cookie": ["sessionid=0123456789abcdef"],
        },
    ):
        pass
    assert pipeline.flush()

    written = _everything_written(stream)
    for line, *secrets in SECRET_ROWS:
        for secret in secrets:
            assert not _leaks(secret, written), f"{secret!r} from {line!r} reached Redis"
    for secret in ("tok-Q9x8W7v6U5", "abcdefghijklmnop.qrstuvwx", "0123456789abcdef"):
        assert secret not in written
    assert "https://api.example.com/login?user=ann" in written  # the rest of the URL stays readable
    assert written.count("[REDACTED]") >= len(SECRET_ROWS) * 6


def test_ordinary_lines_arrive_unchanged(pipeline: PrivatePipeline, stream: RedisHandle) -> None:
    for line in ORDINARY:
        pipeline.logger.info(line, extra={"detail": line})
    assert pipeline.flush()
    entries = stream.logs()
    assert [entry.body for entry in entries] == ORDINARY
    assert [entry.attributes["detail"] for entry in entries] == ORDINARY


def test_user_keys_patterns_and_allow_lists_from_arguments_and_environment(stream: RedisHandle) -> None:
    settings = Settings.load(
        environ={
            "TRACESTREAM_SCRUB_KEYS": "session_ref, pin",
            "TRACESTREAM_SCRUB_PATTERNS": '["ord-secret-[0-9]{4}"]',
        },
        redis_url=stream.url,
        stream=stream.stream,
        scrub_allow_keys=["password_policy"],
        scrub_allow_values=["demo-token-for-docs"],
    )
    pipeline = PrivatePipeline(settings)
    pipeline.logger.info(
        "code ord-secret-1234; Bearer demo-token-for-docs",
        extra={"session_ref": "abc", "pin": "0000", "password_policy": "min 12 chars"},
    )
    assert pipeline.flush()
    (entry,) = stream.logs()
    assert entry.body == "code [REDACTED]; Bearer demo-token-for-docs"
    assert entry.attributes == {
        "session_ref": "[REDACTED]",
        "pin": "[REDACTED]",
        "password_policy": "min 12 chars",
    }
    pipeline.close()


def test_scrubbing_can_be_turned_off_and_the_limits_still_hold(stream: RedisHandle) -> None:
    environ = {"TRACESTREAM_SCRUB": "false", "TRACESTREAM_MAX_ATTRIBUTE_LENGTH": "12"}
    pipeline = PrivatePipeline(Settings.load(environ=environ, redis_url=stream.url, stream=stream.stream))
    pipeline.logger.info("password=hunter2", extra={"password": "hunter2"})
    pipeline.logger.info("long", extra={"a_rather_long_key": 1, "short": "a rather long text"})
    pipeline.logger.info("nested", extra={"nested": {"x": "y" * 20}})
    assert pipeline.flush()
    plain, long, nested = stream.logs()
    assert plain.attributes == {"password": "hunter2"}
    assert long.attributes == {
        "a_rather_lon…[truncated 5 chars]": 1,
        "short": "a rather lon…[truncated 6 chars]",
    }
    assert nested.attributes == {"nested": {"x": "yyyyyyyyyyyy…[truncated 8 chars]"}}
    pipeline.close()


def test_the_spool_holds_only_scrubbed_records(tmp_path: Path) -> None:
    down = f"redis://127.0.0.1:{_closed_port()}/0"
    pipeline = PrivatePipeline(
        Settings.load(environ={}, redis_url=down, spool_dir=str(tmp_path), redis_timeout="200ms")
    )
    for line, *_ in SECRET_ROWS:
        pipeline.logger.error(line, extra={"token": "tok-should-not-persist"})
    assert not pipeline.logs.force_flush(5_000)  # Redis is down: everything went to the spool
    assert pipeline.logs.queue.counters.spooled == len(SECRET_ROWS)
    spooled = "\n".join(
        value
        for segment in tmp_path.glob("*/*/*.seg")
        for _, rows in read_frames(segment)
        for row in rows
        for value in row
    )
    assert "[REDACTED]" in spooled and "tok-should-not-persist" not in spooled
    for _, *secrets in SECRET_ROWS:
        assert not any(_leaks(secret, spooled) for secret in secrets)
    pipeline.close()


def _closed_port() -> int:
    from tracestream.embedded_redis import free_port

    return free_port()


def test_scrub_check_shows_what_would_be_redacted_without_echoing_it(tmp_path: Path) -> None:
    sample = tmp_path / "sample.log"
    sample.write_text("\n".join([row[0] for row in SECRET_ROWS] + ORDINARY) + "\n")
    done = subprocess.run(
        [str(VENV_BIN / "tracestream"), "scrub-check", str(sample), "--pattern", "zz-[0-9]+"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert (
        done.stdout.splitlines()[-1]
        == f"{len(SECRET_ROWS)} of {len(SECRET_ROWS) + len(ORDINARY)} lines would be redacted"
    )
    for _, *secrets in SECRET_ROWS:
        assert not any(_leaks(secret, done.stdout) for secret in secrets)


def test_scrub_check_on_a_missing_file_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["scrub-check", str(tmp_path / "nope.log")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("tracestream: cannot read") and error.count("\n") == 1


def test_scrub_check_json_names_kind_and_place_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sample = tmp_path / "one.log"
    sample.write_text("db=postgres://app:pa55-Word-9@db/x and a clean line\n")
    assert main(["scrub-check", "--json", str(sample)]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    record = json.loads(line)
    assert record["scrubbed"] == "db=postgres://app:[REDACTED]@db/x and a clean line"
    assert [f["kind"] for f in record["findings"]] == ["url_password"]
    assert "pa55-Word-9" not in line


RESOURCE_SECRETS = ("hunter2-Resource-7", "pw-S3cret-9", "ghp_" + "R" * 36)
CONFIGURED = """
import logging, tracestream
from opentelemetry import trace
telemetry = tracestream.configure()
with trace.get_tracer("t").start_as_current_span("charge"):
    logging.getLogger("shop").warning("charged")
telemetry.force_flush()
"""


def test_resource_attributes_from_the_environment_are_scrubbed(stream: RedisHandle) -> None:
    """OTEL_RESOURCE_ATTRIBUTES is set by deployments, and secrets end up there too."""
    password, url_password, token = RESOURCE_SECRETS
    attributes = (
        f"db.password={password},db.url=postgres://app:{url_password}@db/app,ci.token={token},team=pay"
    )
    run_python(CONFIGURED, stream.env(OTEL_SERVICE_NAME="shop", OTEL_RESOURCE_ATTRIBUTES=attributes))
    with redis.Redis.from_url(stream.url) as client:  # raw bytes: nothing decoded or parsed
        entries = client.xrange(stream.keys.logs) + client.xrange(stream.keys.spans)
    assert len(entries) == 2
    raw = b"\n".join(value for _, fields in entries for value in fields.values())
    for secret in RESOURCE_SECRETS:
        assert secret.encode() not in raw
    for entry in (*stream.logs(), *stream.spans()):
        assert entry.resource["db.password"] == entry.resource["ci.token"] == "[REDACTED]"
        assert entry.resource["db.url"] == "postgres://app:[REDACTED]@db/app"
        assert (entry.resource["team"], entry.resource["service.name"]) == ("pay", "shop")


# click's docs, "Options" > "Password Prompts", run as its users run it: the password on the
# command line. Under the launcher contrib's click instrumentation records argv on the span.
CLICK_PASSWORD = """
import codecs
import click
@click.command()
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True)
def encode(password):
    click.echo(f"encoded: {codecs.encode(password, 'rot13')}")
encode()
"""


def test_a_password_given_on_a_click_command_line_never_reaches_redis(stream: RedisHandle) -> None:
    env = stream.env(OTEL_SERVICE_NAME="cli", **LAUNCHER_ENV)
    done = run_python_process(CLICK_PASSWORD, env, launcher=True, args=["--password", "hunter2"])
    assert (done.returncode, done.stdout) == (0, "encoded: uhagre2\n"), done.stderr
    [span] = wait_for(lambda: stream.spans(), what="the command's span")
    assert span.attributes["process.command_args"] == ["-c", "--password", "[REDACTED]"]
    assert "hunter2" not in _everything_written(stream)


HTTP_SECRETS = {
    "query": "tok-Q9x8W7v6U5zz",
    "authorization": "s3cr3t-Bearer-Abc123xyz",
    "cookie": "c00kie-S3cret-42",
    "api_key": "k3y-AbCdEf-123456",
    "x_key": "fake-super-secret-key",  # FastAPI's dependencies tutorial's `X-Key` header
}


# Where the instrumentation puts the query string, by OTEL_SEMCONV_STABILITY_OPT_IN.
QUERY_ATTRIBUTE = {"": "http.url", "http": "url.query"}


@pytest.mark.parametrize("semconv", sorted(QUERY_ATTRIBUTE))
def test_query_strings_and_captured_headers_of_a_real_fastapi_request_are_scrubbed(
    stream: RedisHandle, semconv: str
) -> None:
    """What the contrib instrumentation records (url, query, captured headers) under uvicorn."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = stream.env(
        OTEL_SERVICE_NAME="api",
        OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST="authorization,cookie,x-api-key,x-key",
        OTEL_SEMCONV_STABILITY_OPT_IN=semconv,
    )
    command = [bin_path("uvicorn"), "tests.apps.fastapi_app:app", "--port", str(port)]
    with serve(command, env, http_ready(f"{base}/items/0")):
        response = httpx.get(
            f"{base}/items/7?token={HTTP_SECRETS['query']}&page=2",
            headers={
                "Authorization": f"Bearer {HTTP_SECRETS['authorization']}",
                "Cookie": f"sessionid={HTTP_SECRETS['cookie']}; theme=dark",
                "X-Api-Key": HTTP_SECRETS["api_key"],
                "X-Key": HTTP_SECRETS["x_key"],
            },
        )
        assert response.status_code == 200
        trace_id = response.headers["x-trace-id"]
        record = wait_for(
            lambda: next(
                (e for e in stream.logs() if e.trace_id == trace_id and e.scope == "tracestream.http"), None
            ),
            what="the request record",
        )
        span = wait_for(
            lambda: next((s for s in stream.spans() if s.trace_id == trace_id and s.kind == "SERVER"), None),
            what="the server span",
        )
    with redis.Redis.from_url(stream.url) as client:  # raw bytes of every entry we wrote
        entries = [
            e for key in (stream.keys.logs, stream.keys.spans, stream.keys.digest) for e in client.xrange(key)
        ]
    raw = b"\n".join(value for _, fields in entries for value in fields.values())
    for secret in HTTP_SECRETS.values():
        assert secret.encode() not in raw
    assert span.attributes[QUERY_ATTRIBUTE[semconv]].endswith("token=[REDACTED]&page=2")
    for header in ("authorization", "cookie", "x_api_key", "x_key"):
        assert span.attributes[f"http.request.header.{header}"] == ["[REDACTED]"]
    assert record.attributes["url.path"] == "/items/7"

"""Settings: defaults, precedence, and a clear error for every bad value."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

import tracestream
import tracestream.settings as settings_module
from tracestream.alerts.store import AlertKeys
from tracestream.export_status import status_key
from tracestream.forwarder import DEAD_LETTER_SUFFIX, LOSS_COUNTS_SUFFIX
from tracestream.schema import Keyspace, StreamKeys
from tracestream.settings import (
    DERIVED_KEY_WORDS,
    KNOWN_VARIABLES,
    BatchSettings,
    ConfigError,
    Settings,
    shown_url,
)


def test_defaults_without_environment() -> None:
    settings = Settings.load(environ={})
    assert settings.redis_url == "redis://localhost:6379/0"
    assert settings.stream == "tracestream"
    assert settings.logs_exporter == ("redis_stream",)
    assert settings.log_level == logging.INFO


def test_environment_is_read() -> None:
    settings = Settings.load(
        environ={
            "OTEL_SERVICE_NAME": "api",
            "TRACESTREAM_REDIS_URL": "rediss://user:pw@cache.internal:6380/5",
            "TRACESTREAM_STREAM": "ansflow:logs:stream",
            "TRACESTREAM_MAX_ENTRIES": "10_000",
            "TRACESTREAM_MAX_AGE": "2h",
            "TRACESTREAM_BATCH_DELAY_MS": "50",
            "TRACESTREAM_LOG_LEVEL": "warn",
            "OTEL_LOGS_EXPORTER": "redis_stream,console",
            "OTEL_TRACES_EXPORTER": "none",
        }
    )
    assert settings.service_name == "api"
    assert settings.stream == "ansflow:logs:stream"
    assert settings.max_entries == 10_000
    assert settings.max_age == 7200
    assert settings.batch_delay_ms == 50
    assert settings.log_level == logging.WARNING
    assert settings.logs_exporter == ("redis_stream", "console")
    assert settings.traces_exporter == ()


def test_arguments_win_over_environment() -> None:
    settings = Settings.load(environ={"TRACESTREAM_STREAM": "from-env"}, stream="from-arg", max_age=60)
    assert settings.stream == "from-arg"
    assert settings.max_age == 60


@pytest.mark.parametrize("url", ["redis://localhost", "rediss://h:1/3", "unix:///tmp/redis.sock?db=2"])
def test_accepted_redis_urls(url: str) -> None:
    assert Settings.load(environ={"TRACESTREAM_REDIS_URL": url}).redis_url == url


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("TRACESTREAM_REDIS_URL", "http://localhost:6379"),
        ("TRACESTREAM_REDIS_URL", "redis://localhost:6379/five"),
        ("TRACESTREAM_REDIS_URL", "redis://localhost:port/0"),
        ("TRACESTREAM_REDIS_URL", "unix://"),
        ("TRACESTREAM_STREAM", "two words"),
        ("TRACESTREAM_MAX_ENTRIES", "-5"),
        ("TRACESTREAM_MAX_ENTRIES", "lots"),
        ("TRACESTREAM_MAX_AGE", "a week"),
        ("TRACESTREAM_BATCH_DELAY_MS", "0"),
        ("TRACESTREAM_LOG_LEVEL", "LOUD"),
        ("TRACESTREAM_REDIS_TIMEOUT", "soon"),
        ("OTEL_LOGS_EXPORTER", ","),
        ("TRACESTREAM_REDIS_CLUSTER", "maybe"),
        ("TRACESTREAM_SHARD_BY", "host"),
        # Values past what Redis, a socket or a thread can wait or count: refused here, not at run time.
        ("TRACESTREAM_MAX_ENTRIES", str(2**64)),
        ("TRACESTREAM_MAX_AGE", "99999999999999d"),
        ("TRACESTREAM_REDIS_TIMEOUT", "0"),
        ("TRACESTREAM_REDIS_TIMEOUT", "999999999999s"),
        ("TRACESTREAM_SHUTDOWN_TIMEOUT", "999999999999s"),
        ("TRACESTREAM_BATCH_DELAY_MS", "9999999999999"),
        ("TRACESTREAM_STREAM", "\udce6\udc97\udca5"),  # bytes a C locale could not decode
    ],
)
def test_bad_environment_value_names_variable_and_value(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.load(environ={variable: value})
    assert variable in str(caught.value)
    assert repr(value) in str(caught.value)


def test_cluster_settings() -> None:
    environ = {"TRACESTREAM_REDIS_CLUSTER": "true", "TRACESTREAM_SHARD_BY": "Service"}
    settings = Settings.load(environ=environ)
    assert (settings.redis_cluster, settings.shard_by) == (True, "service")
    assert Settings.load(redis_cluster=True).shard_by == "none"
    with pytest.raises(ConfigError, match=r"TRACESTREAM_REDIS_URL=.* only database 0"):
        Settings.load(environ={**environ, "TRACESTREAM_REDIS_URL": "redis://node:7000/5"})
    with pytest.raises(ConfigError, match="TRACESTREAM_SHARD_BY='service' needs TRACESTREAM_REDIS_CLUSTER"):
        Settings.load(shard_by="service")


def test_bad_argument_names_argument() -> None:
    with pytest.raises(ConfigError, match="max_age"):
        Settings.load(environ={}, max_age="forever")
    with pytest.raises(ConfigError, match="unknown setting"):
        Settings.load(environ={}, colour="blue")

    with pytest.raises(ConfigError, match=r"unknown setting\(s\): redis_ulr; did you mean redis_url\?"):
        Settings.load(environ={}, redis_ulr="redis://cache:6379/0")


def test_a_misspelt_variable_is_said_once_with_the_one_it_most_likely_means(
    capsys: pytest.CaptureFixture[str],
) -> None:
    environ = {"TRACESTREAM_REDIS_ULR": "redis://cache:6379/0", "TRACESTREAM_CONSOLE_TOKEN": "t"}
    assert Settings.load(environ=environ).redis_url == "redis://localhost:6379/0"
    Settings.load(environ={**environ, "TRACESTREAM_NOTHING_LIKE_IT": "1"})
    assert capsys.readouterr().err.splitlines() == [
        "tracestream: WARNING TRACESTREAM_REDIS_ULR is not a tracestream setting and is ignored; "
        "did you mean TRACESTREAM_REDIS_URL?",
        "tracestream: WARNING TRACESTREAM_NOTHING_LIKE_IT is not a tracestream setting and is ignored",
    ]


def test_an_empty_redis_url_is_said_once_with_where_records_go(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`TRACESTREAM_REDIS_URL=${REDIS_URL}` in a compose file, REDIS_URL unset: localhost's Redis,
    perhaps the app's own cache, got the records without a word."""
    monkeypatch.setattr(settings_module, "_told", set())
    for _ in range(2):
        assert Settings.load(environ={"TRACESTREAM_REDIS_URL": " "}).redis_url == "redis://localhost:6379/0"
    assert Settings.load(environ={"TRACESTREAM_REDIS_URL": ""}, redis_url="redis://cache:6379/1")
    assert Settings.load(environ={}).redis_url == "redis://localhost:6379/0"
    assert capsys.readouterr().err.splitlines() == [
        "tracestream: WARNING TRACESTREAM_REDIS_URL is set but empty: records go to "
        "redis://localhost:6379/0, the default"
    ]


def test_every_variable_the_package_reads_is_known() -> None:
    """A variable read somewhere but missing from KNOWN_VARIABLES would be called misspelt."""
    django_settings = {"TRACESTREAM_CONSOLE_PERMISSION"}  # a name in a project's settings.py
    package = Path(tracestream.__file__).parent
    named = {
        name
        for path in package.rglob("*.py")
        for name in re.findall(r"TRACESTREAM_[A-Z0-9_]*[A-Z0-9]", path.read_text(encoding="utf-8"))
    }
    assert named - django_settings <= KNOWN_VARIABLES
    assert "TRACESTREAM_REDIS_URL" in named


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("OTEL_BLRP_SCHEDULE_DELAY", "fast"),
        ("OTEL_BLRP_MAX_QUEUE_SIZE", "0"),
        ("OTEL_BLRP_MAX_EXPORT_BATCH_SIZE", "-1"),
        ("OTEL_BLRP_SCHEDULE_DELAY", "9999999999999"),
    ],
)
def test_bad_batch_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        BatchSettings.load("OTEL_BLRP", None, environ={variable: value})
    assert variable in str(caught.value) and repr(value) in str(caught.value)


def test_batch_settings_honour_otel_variables_and_our_override() -> None:
    environ = {
        "OTEL_BSP_SCHEDULE_DELAY": "750",
        "OTEL_BSP_MAX_QUEUE_SIZE": "100",
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "10",
    }
    batch = BatchSettings.load("OTEL_BSP", None, environ=environ)
    assert (batch.schedule_delay, batch.max_queue_size, batch.max_export_batch_size) == (0.75, 100, 10)
    assert BatchSettings.load("OTEL_BSP", 20, environ=environ).schedule_delay == 0.02


def test_a_queue_smaller_than_the_default_batch_caps_the_batch() -> None:
    batch = BatchSettings.load("OTEL_BSP", None, environ={"OTEL_BSP_MAX_QUEUE_SIZE": "1000"})
    assert (batch.max_queue_size, batch.max_export_batch_size) == (1000, 1000)


def test_batch_larger_than_queue_is_rejected() -> None:
    environ = {"OTEL_BLRP_MAX_QUEUE_SIZE": "10", "OTEL_BLRP_MAX_EXPORT_BATCH_SIZE": "20"}
    with pytest.raises(ConfigError, match="OTEL_BLRP_MAX_EXPORT_BATCH_SIZE"):
        BatchSettings.load("OTEL_BLRP", None, environ=environ)


def test_a_stream_may_not_be_named_as_another_streams_keys() -> None:
    """`col:errors` is where the stream `col` keeps its error copies: both streams' readers
    would see each other's records (and `col:forward:dead` holds its forwarder's dead letters).
    Every word that follows a stream's name in its keys is one a stream name may not use."""
    keys = StreamKeys("s")
    derived = [
        keys.spans, keys.errors, keys.issues, keys.issue("f"), keys.trace_index("t"), keys.resource("@r"),
        keys.digest, keys.digest_sizes, keys.digest_lines, keys.traces(), keys.traces("api"),
        keys.trace_services, keys.error_traces, keys.slowest_traces(1, "api"), keys.trace_hours,
        Keyspace("s").registry, status_key("s", "api", "host", 1), AlertKeys("s").prefix, "s:written:abc",
        f"s{DEAD_LETTER_SUFFIX}", f"s{LOSS_COUNTS_SUFFIX}",
    ]  # fmt: skip
    assert {key.split(":")[1] for key in derived} == DERIVED_KEY_WORDS
    for word in sorted(DERIVED_KEY_WORDS):
        with pytest.raises(ConfigError, match=f"'col:{word}' is invalid: col:{word} is where stream 'col'"):
            Settings.load(environ={"TRACESTREAM_STREAM": f"col:{word}"})
    assert (
        Settings.load(environ={"TRACESTREAM_STREAM": "ansflow:logs:stream"}).stream == "ansflow:logs:stream"
    )


# A URL, what is printed of it, and whether it is refused: a password that was not percent-encoded
# ('/', '?', '#', '@': base64 has '/') must never show, not even in part.
URL_SHAPES = [
    ("redis://default:Zx9/kQ+a7@h:6379/0", "redis://default:***@h:6379/0", True),
    ("redis://:Zx9/kQ+a7@h:6379/0", "redis://:***@h:6379/0", True),
    ("redis://:Zx9@kQ@h:6379/0", "redis://:***@h:6379/0", False),  # urllib and redis-py split at the last '@'
    ("rediss://u:Zx9@kQ/a7@h/0", "rediss://u:***@h/0", True),
    ("redis://u:Zx9?kQ@h/0", "redis://u:***@h/0", True),
    ("redis://u:Zx9#kQ@h/0", "redis://u:***@h/0", True),
    ("redis://u:1234#kQ@h/0", "redis://u:***@h/0", True),  # else host u, port 1234 and a fragment
    ("redis://u:1234?kQ@h/0", "redis://u:***@h/0", True),  # else host u, port 1234 and a query
    ("redis://u:1234/kQ@h?db=0", "redis://u:***@h?db=0", True),  # else host u, port 1234, database 0
    ("redis://u:Zx9]kQ@h/0", "redis://u:***@h/0", True),
    ("redis://u:Zx9%2FkQ@h/0", "redis://u:***@h/0", False),
    ("redis://user@h/0", "redis://user@h/0", False),
    ("redis://h/0?username=u@c&password=Zx9@kQ&db=1", "redis://h/0?username=u@c&password=***&db=1", False),
    ("rediss://u:Zx9@h/0?ssl_password=kQ/a7", "rediss://u:***@h/0?ssl_password=***", False),
    ("redis://h/0?password=Zx9#kQ", "redis://h/0?password=***", True),  # redis-py would send `Zx9`
    ("redis://h/0?password=Zx9&kQ&db=1", "redis://h/0?password=***&db=1", False),
    ("unix://:Zx9@/run/redis.sock?db=2", "unix://:***@/run/redis.sock?db=2", False),
    ("unix:///run/redis@main/redis.sock", "unix:///run/redis@main/redis.sock", False),
    ("unix://u:Zx9/kQ@/run/redis.sock", "unix://u:***@/run/redis.sock", True),
    ("unix://:Zx9@/run/redis@main/redis.sock", "unix://:***@main/redis.sock", True),  # which '@' ends it?
]  # fmt: skip


@pytest.mark.parametrize(("url", "shown", "refused"), URL_SHAPES)
def test_no_part_of_a_password_is_shown_whatever_it_holds(url: str, shown: str, refused: bool) -> None:
    assert shown_url(url) == shown
    if not refused:
        assert Settings.load(environ={"TRACESTREAM_REDIS_URL": url}).redis_url == url
        return
    with pytest.raises(ConfigError) as caught:
        Settings.load(environ={"TRACESTREAM_REDIS_URL": url})
    message = str(caught.value)
    assert message.startswith(f"TRACESTREAM_REDIS_URL={shown!r} is invalid: "), message
    assert "the password may need percent-encoding ('/' as %2F, '@' as %40" in message
    assert not any(secret in message for secret in ("Zx9", "kQ", "1234")), message


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("redis://u:Zx9@h:kQ/0", "bad port: expected a number up to 65535; the password may need"),
        ("redis://u:Zx9@h:99999/0", "bad port: expected a number up to 65535; the password may need"),
        ("redis://u:Zx9]kQ@h/0", "not a URL urllib can split; the password may need"),
        ("redis://h:port/0", "bad port: expected a number up to 65535"),
    ],
)
def test_a_refused_url_is_said_in_our_words(url: str, problem: str) -> None:
    """urllib's own words quote the host or port it could not read: parts of the password, when
    it was not percent-encoded."""
    with pytest.raises(ConfigError) as caught:
        Settings.load(environ={"TRACESTREAM_REDIS_URL": url})
    assert str(caught.value).startswith(f"TRACESTREAM_REDIS_URL={shown_url(url)!r} is invalid: {problem}")


def test_settings_show_their_url_masked() -> None:
    """`print(tracestream.configure())` shows them, as a REPL, a log line or a test report does."""
    shown = repr(Settings.load(environ={}, redis_url="redis://u:s3cret@h/0", stream="orders"))
    assert "s3cret" not in shown
    assert shown.startswith("Settings(service_name=None, ")
    assert "redis_url='redis://u:***@h/0', stream='orders'" in shown

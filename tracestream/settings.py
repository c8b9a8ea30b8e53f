"""Settings from `configure()` arguments and the environment, validated once at startup.

Every setting has one argument name and one environment variable. A bad value raises
`ConfigError` naming the setting and the value, so a typo fails loudly at startup
instead of silently turning telemetry off.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any, NoReturn, TypeVar
from urllib.parse import parse_qs, urlsplit

from tracestream._internal_log import internal_logger, say

T = TypeVar("T")

REDIS_SCHEMES = ("redis", "rediss", "unix")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_STREAM_KEY = re.compile(r"^[^\s{}]+$")


class ConfigError(ValueError):
    """A setting has a value tracestream cannot use."""


_configured: list[Settings] = []  # what configure() installed in this process


def note_configured(settings: Settings) -> None:
    """configure() says what its exporters write with, for the readers of the same process."""
    _configured[:] = [settings]


def configured() -> Settings | None:
    """The settings this process's exporters write with once configure() ran, else None: a
    console mounted in the app reads where the app writes, whatever configured it."""
    return _configured[0] if _configured else None


def refuse_to_launch(error: ConfigError) -> NoReturn:
    """Under the launcher, which would log a bad setting and run the app uninstrumented, whichever
    configurator it picked: one line, exit 2. We run inside site import there, where SystemExit
    is a fatal interpreter error."""
    say(f"tracestream: invalid configuration: {error}")
    os._exit(2)


# The longest wait a thread, a socket or an atexit handler takes, in seconds (about 292 years).
_LONGEST_WAIT_S = threading.TIMEOUT_MAX
_LARGEST_INT = 2**63 - 1  # Redis's integers


def parse_duration(text: str) -> float:
    """`30s`, `15m`, `2h`, `7d`, `250ms` or bare seconds, as seconds."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError("expected a duration such as 250ms, 30s, 15m, 2h or 7d")
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


def parse_wait(text: str) -> float:
    """A duration something waits or keeps for: at most what a thread or a socket can wait."""
    seconds = parse_duration(text)
    if seconds > _LONGEST_WAIT_S:
        raise ValueError(f"must be at most {_LONGEST_WAIT_S // 86400:.0f}d")
    return seconds


def parse_positive_wait(text: str) -> float:
    return _above_zero(parse_wait(text))


def parse_non_negative_int(text: str) -> int:
    value = int(text.strip().replace("_", ""))
    if value < 0:
        raise ValueError("must not be negative")
    if value > _LARGEST_INT:
        raise ValueError(f"must be at most {_LARGEST_INT}")
    return value


def parse_positive_int(text: str) -> int:
    return _above_zero(parse_non_negative_int(text))


_Number = TypeVar("_Number", int, float)


def _above_zero(value: _Number) -> _Number:
    if value == 0:
        raise ValueError("must be greater than zero")
    return value


def parse_delay_ms(text: str) -> int:
    value = parse_positive_int(text)
    if value > _LONGEST_WAIT_S * 1000:
        raise ValueError(f"must be at most {_LONGEST_WAIT_S * 1000:.0f}")
    return value


def parse_log_level(text: str) -> int:
    name = text.strip().upper()
    if name.isdigit():
        return int(name)
    level = logging.getLevelName("WARNING" if name == "WARN" else name)
    if not isinstance(level, int):
        raise ValueError("expected DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return level


def parse_exporter_names(text: str) -> tuple[str, ...]:
    """Each name once, in order: upstream's configurator also exports once to a name listed twice
    (a base image's `redis_stream` and a deployment's `,redis_stream`)."""
    names = tuple(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    if not names:
        raise ValueError("expected a comma-separated list of exporter names, or none")
    return () if names == ("none",) else names


def sdk_disabled(environ: Mapping[str, str] | None = None) -> bool:
    """`OTEL_SDK_DISABLED=true`: the SDK records nothing, and tracestream installs nothing. Any
    other value is false, as the spec says, and one but `false` is said once: `1` or `yes`, which
    a test environment may set meaning true, left everything set up without a word."""
    environ = os.environ if environ is None else environ
    value = environ.get("OTEL_SDK_DISABLED", "").strip().lower()
    if value not in ("", "true", "false") and "OTEL_SDK_DISABLED" not in _told:
        _told.add("OTEL_SDK_DISABLED")
        internal_logger.warning(
            "OTEL_SDK_DISABLED=%r is read as false, as OpenTelemetry reads any value but true: "
            "tracestream is set up; OTEL_SDK_DISABLED=true turns it off",
            environ["OTEL_SDK_DISABLED"],
        )
    return value == "true"


def installing(extra: str) -> str:
    """How a line says to add one of tracestream's extras, installed as the README says."""
    return f"pip install -e '.[{extra}]' in tracestream's checkout"


def metrics_exporter_names() -> tuple[str, ...]:
    """The exporters `OTEL_METRICS_EXPORTER` names (`none` names none): our launcher configurator
    sets them up, and the HTTP conventions' default steps aside where metrics go out."""
    parts = (part.strip() for part in os.environ.get("OTEL_METRICS_EXPORTER", "").split(","))
    return tuple(name for name in parts if name not in ("", "none"))


# redis-py reads `?password=` (and `ssl_password=`) too; the value runs to the next `&name=`.
_QUERY_PASSWORD = re.compile(r"([?&][^=&#]*password=)(?:[^&]|&(?![^&=]*=))*", re.IGNORECASE)
_SCHEME = re.compile(r"\s*[a-z][a-z0-9+.-]*:(?://)?", re.IGNORECASE)
_AUTHORITY_END = re.compile(r"[/?#]")
PERCENT_ENCODING_HINT = (
    "the password may need percent-encoding ('/' as %2F, '@' as %40, '?' as %3F, '#' as %23, "
    "'[' as %5B, ']' as %5D)"
)


def shown_url(url: str) -> str:
    """The URL as printed: its passwords as `***`, the one between `user:` and `@` and any
    `?...password=`, also in a URL refused because its password was not percent-encoded."""
    url = _QUERY_PASSWORD.sub(r"\1***", url)
    scheme = _SCHEME.match(url)
    start = scheme.end() if scheme else 0
    # A '/', '?' or '#' in the password ends the authority before its '@': then up to the last '@'.
    authority_end = len(url) if password_not_encoded(url) else _end_of_authority(url, start)
    at = url.rfind("@", start, authority_end)
    colon = url.find(":", start, at) if at >= 0 else -1
    return url if colon < 0 else f"{url[: colon + 1]}***{url[at:]}"


def _end_of_authority(url: str, start: int) -> int:
    delimiter = _AUTHORITY_END.search(url, start)
    return delimiter.start() if delimiter else len(url)


def password_not_encoded(url: str) -> bool:
    """An '@' past the host, where a URL has none but in a query value or in the socket path of
    a unix:// URL without credentials: a password holding '/', '?' or '#' that was not encoded,
    part of which redis-py would take for the host, port or path. True too for what urllib
    cannot split (a '[' or ']' in the password)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return True
    names = (pair.partition("=")[0] for pair in parts.query.split("&"))
    if "@" in parts.fragment or any("@" in name for name in names):
        return True
    return "@" in parts.path and (parts.scheme != "unix" or bool(parts.netloc))


def parse_redis_url(text: str) -> str:
    """The URL, if redis-py reads it as meant. No error quotes urllib's: it may quote the password."""
    url = text.strip()
    try:
        parts = urlsplit(url)
    except ValueError:
        raise ValueError(_with_encoding_hint("not a URL urllib can split", url)) from None
    if parts.scheme not in REDIS_SCHEMES:
        raise ValueError(f"scheme must be one of {', '.join(s + '://' for s in REDIS_SCHEMES)}")
    if password_not_encoded(url):
        in_path = " (and an '@' in the socket path as %40)" if parts.scheme == "unix" else ""
        raise ValueError(f"the host cannot be told from the password: {PERCENT_ENCODING_HINT}{in_path}")
    if parts.scheme == "unix":
        if not parts.path:
            raise ValueError("a unix:// URL needs a socket path")
    else:
        if not parts.hostname:
            raise ValueError(_with_encoding_hint("missing host", url))
        try:
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError:
            raise ValueError(_with_encoding_hint("bad port: expected a number up to 65535", url)) from None
    db = _database(url)
    if not db.isdigit():
        raise ValueError(f"database index must be a number, not {db!r}")
    if parts.fragment:
        raise ValueError(f"redis-py reads nothing past a '#'; {PERCENT_ENCODING_HINT}")
    owned = [name for name in parse_qs(parts.query) if name in _SET_BY_OUR_SETTINGS]
    if owned:
        raise ValueError(f"{owned[0]} would override {_SET_BY_OUR_SETTINGS[owned[0]]}: set that instead")
    _check_redis_py_takes(url)
    return parts.scheme + url[len(parts.scheme) :]  # `REDISS://` as `rediss://`, which we compare it to


# Query options redis-py would let win over ours, unseen.
_SET_BY_OUR_SETTINGS = {
    "socket_timeout": "TRACESTREAM_REDIS_TIMEOUT",
    "socket_connect_timeout": "TRACESTREAM_REDIS_TIMEOUT",
}


def _check_redis_py_takes(url: str) -> None:
    """redis-py reads the query's options only as it connects, and its encoding as it sends a
    command: refused there, each record would count as refused by Redis."""
    import redis

    try:
        pool = redis.ConnectionPool.from_url(url)
        pool.make_connection()
        encoder = pool.get_encoder()
        encoder.decode(encoder.encode("x"), force=True)  # type: ignore[no-untyped-call]
    except (TypeError, ValueError, LookupError, redis.RedisError) as error:
        raise ValueError(f"redis-py refuses its query ({error})") from None


def _with_encoding_hint(problem: str, url: str) -> str:
    """A host or port urllib could not read may be the end of a password that was not encoded."""
    return f"{problem}; {PERCENT_ENCODING_HINT}" if "@" in url else problem


def redis_database(url: str) -> int:
    """The database a valid URL names, as redis-py reads it."""
    return int(_database(url))


def _database(url: str) -> str:
    """`?db=` wins over the path, as in redis-py; a unix:// URL has only the query."""
    parts = urlsplit(url)
    in_query = parse_qs(parts.query).get("db")
    if in_query:
        return in_query[-1]
    return "0" if parts.scheme == "unix" else (parts.path.strip("/") or "0")


# The words that follow a stream's name in its other keys (`<stream>:spans`, `<stream>:trace:<id>`,
# schema.StreamKeys, the writers' marks and status, the shard registry, the alerts' keys): a
# stream named with one would share another stream's keys, and each one's readers see the other's.
DERIVED_KEY_WORDS = frozenset(
    {
        "alerts",
        "digest",
        "errors",
        "forward",
        "issue",
        "issues",
        "resource",
        "shards",
        "spans",
        "status",
        "trace",
        "traces",
        "written",
    }
)


def parse_stream_key(text: str) -> str:
    key = text.strip()
    if not _STREAM_KEY.match(key) or not _is_utf8(key):
        raise ValueError(
            "expected a non-empty key without spaces or braces, in UTF-8, "
            "e.g. tracestream or ansflow:logs:stream"
        )
    prefix, *words = key.split(":")
    for at, word in enumerate(words):
        if word in DERIVED_KEY_WORDS:
            owner = ":".join([prefix, *words[:at]])
            raise ValueError(f"{owner}:{word} is where stream {owner!r} keeps its {word}: pick another name")
    return key


def _is_utf8(text: str) -> bool:
    """False for the surrogates an environment that is not UTF-8 leaves of its bytes."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


_SIZE = re.compile(r"^\s*(\d+)\s*(b|kb|kib|mb|mib|gb|gib)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"b": 1, "kb": 1000, "kib": 1024, "mb": 10**6, "mib": 1 << 20, "gb": 10**9, "gib": 1 << 30}


def parse_size(text: str) -> int:
    """`0`, `512KiB`, `256MB`, `1GiB` or bare bytes."""
    match = _SIZE.match(text)
    if not match:
        raise ValueError("expected a size such as 0, 512KiB, 256MB or 1GiB")
    return int(match.group(1)) * _SIZE_UNITS[(match.group(2) or "b").lower()]


def parse_entry_size(text: str) -> int:
    """A size of at least 16KiB: below that, ordinary records would lose fields."""
    size = parse_size(text)
    if size < 16 << 10:
        raise ValueError("must be at least 16KiB")
    return size


def parse_existing_file(text: str) -> str:
    path = os.path.expanduser(text.strip())
    if not os.path.isfile(path):
        raise ValueError("no such file")
    return path


def parse_directory(text: str) -> str:
    path = os.path.expanduser(text.strip())
    if not path:
        raise ValueError("must not be empty")
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError("exists and is not a directory")
    return path


def parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def parse_names(text: str) -> tuple[str, ...]:
    """A comma-separated list of key names."""
    return tuple(name.strip() for name in text.split(",") if name.strip())


def parse_patterns(text: str) -> tuple[str, ...]:
    """A JSON array of regexes, or one regex (regexes may contain commas, so no comma list)."""
    stripped = text.strip()
    if stripped.startswith("["):
        try:
            loaded = json.loads(stripped)
        except json.JSONDecodeError as error:
            raise ValueError(f"not a JSON array of strings: {error}") from None
        if not isinstance(loaded, list) or not all(isinstance(item, str) for item in loaded):
            raise ValueError("expected a JSON array of strings")
        patterns = tuple(loaded)
    else:
        patterns = (stripped,) if stripped else ()
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as error:
            raise ValueError(f"bad regex {pattern!r}: {error}") from None
    return patterns


SHARD_BY = ("none", "service")


def parse_shard_by(text: str) -> str:
    value = text.strip().lower()
    if value not in SHARD_BY:
        raise ValueError(f"expected one of {', '.join(SHARD_BY)}")
    return value


LOG_SAMPLING = ("follow_trace", "keep_all")
# The attribute a record sampled down carries: how many records it stands for (docs/sampling.md).
SAMPLE_WEIGHT = "tracestream.sample_weight"


def parse_log_sampling(text: str) -> str:
    value = text.strip().lower()
    if value not in LOG_SAMPLING:
        raise ValueError(f"expected one of {', '.join(LOG_SAMPLING)}")
    return value


def _text(text: str) -> str:
    value = text.strip()
    if not value:
        raise ValueError("must not be empty")
    return value


@dataclass(frozen=True)
class Setting:
    env: str
    parse: Callable[[str], Any]


_SETTINGS: dict[str, Setting] = {
    "service_name": Setting("OTEL_SERVICE_NAME", _text),
    "service_version": Setting("TRACESTREAM_SERVICE_VERSION", _text),
    "environment": Setting("TRACESTREAM_ENVIRONMENT", _text),
    "redis_url": Setting("TRACESTREAM_REDIS_URL", parse_redis_url),
    "stream": Setting("TRACESTREAM_STREAM", parse_stream_key),
    "max_entries": Setting("TRACESTREAM_MAX_ENTRIES", parse_non_negative_int),
    "errors_maxlen": Setting("TRACESTREAM_ERRORS_MAXLEN", parse_non_negative_int),
    "max_age": Setting("TRACESTREAM_MAX_AGE", parse_wait),
    "batch_delay_ms": Setting("TRACESTREAM_BATCH_DELAY_MS", parse_delay_ms),
    "log_level": Setting("TRACESTREAM_LOG_LEVEL", parse_log_level),
    "log_exclude": Setting("TRACESTREAM_LOG_EXCLUDE", parse_names),
    "log_sampling": Setting("TRACESTREAM_LOG_SAMPLING", parse_log_sampling),
    "redis_timeout": Setting("TRACESTREAM_REDIS_TIMEOUT", parse_positive_wait),
    "redis_cluster": Setting("TRACESTREAM_REDIS_CLUSTER", parse_bool),
    "shard_by": Setting("TRACESTREAM_SHARD_BY", parse_shard_by),
    "logs_exporter": Setting("OTEL_LOGS_EXPORTER", parse_exporter_names),
    "traces_exporter": Setting("OTEL_TRACES_EXPORTER", parse_exporter_names),
    "redis_ca": Setting("TRACESTREAM_REDIS_CA", parse_existing_file),
    "redis_cert": Setting("TRACESTREAM_REDIS_CERT", parse_existing_file),
    "redis_key": Setting("TRACESTREAM_REDIS_KEY", parse_existing_file),
    "spool_dir": Setting("TRACESTREAM_SPOOL_DIR", parse_directory),
    "spool_max_bytes": Setting("TRACESTREAM_SPOOL_MAX_BYTES", parse_size),
    "shutdown_timeout": Setting("TRACESTREAM_SHUTDOWN_TIMEOUT", parse_wait),
    "max_body_length": Setting("TRACESTREAM_MAX_BODY_LENGTH", parse_positive_int),
    "max_attribute_length": Setting("TRACESTREAM_MAX_ATTRIBUTE_LENGTH", parse_positive_int),
    "max_attributes": Setting("TRACESTREAM_MAX_ATTRIBUTES", parse_positive_int),
    "max_entry_bytes": Setting("TRACESTREAM_MAX_ENTRY_BYTES", parse_entry_size),
    "scrub": Setting("TRACESTREAM_SCRUB", parse_bool),
    "scrub_keys": Setting("TRACESTREAM_SCRUB_KEYS", parse_names),
    "scrub_patterns": Setting("TRACESTREAM_SCRUB_PATTERNS", parse_patterns),
    "scrub_allow_keys": Setting("TRACESTREAM_SCRUB_ALLOW_KEYS", parse_names),
    "scrub_allow_values": Setting("TRACESTREAM_SCRUB_ALLOW_VALUES", parse_patterns),
}


@dataclass(frozen=True)
class Settings:
    """Everything tracestream needs to know; see docs/configuration.md."""

    service_name: str | None = None
    service_version: str | None = None
    environment: str | None = None
    redis_url: str = "redis://localhost:6379/0"
    stream: str = "tracestream"
    max_entries: int = 100_000
    errors_maxlen: int = 100_000  # ERROR+ copies kept apart from max_entries; 0 = no length limit
    max_age: float = 7 * 86400.0
    batch_delay_ms: int | None = None
    log_level: int = logging.INFO
    log_exclude: tuple[str, ...] = ()  # logger names (and their children) kept out of the stream
    log_sampling: str = "follow_trace"  # keep_all: records below WARN of unsampled traces too
    redis_timeout: float = 2.0
    redis_cluster: bool = False
    shard_by: str = "none"  # on a cluster, "service" gives each service its own shard
    logs_exporter: tuple[str, ...] = ("redis_stream",)
    traces_exporter: tuple[str, ...] = ("redis_stream",)
    redis_ca: str | None = None
    redis_cert: str | None = None
    redis_key: str | None = None
    spool_dir: str | None = None  # None: $XDG_STATE_HOME/tracestream/spool
    spool_max_bytes: int = 256 << 20  # 0 turns the spool off
    shutdown_timeout: float = 5.0
    max_body_length: int = 32_768
    max_attribute_length: int = 4_096
    max_attributes: int = 128
    max_entry_bytes: int = 256 << 10  # one entry's values together, as Redis stores them
    scrub: bool = True
    scrub_keys: tuple[str, ...] = ()
    scrub_patterns: tuple[str, ...] = ()
    scrub_allow_keys: tuple[str, ...] = ()
    scrub_allow_values: tuple[str, ...] = ()

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None, **arguments: Any) -> Settings:
        """Arguments win over environment variables, which win over defaults."""
        environ = os.environ if environ is None else environ
        unknown = sorted(set(arguments) - set(_SETTINGS))
        if unknown:
            named = ", ".join(unknown)
            raise ConfigError(f"unknown setting(s): {named}{_did_you_mean(unknown[0], _SETTINGS)}")
        _say_unknown_variables(environ)
        if arguments.get("redis_url") is None:
            _say_an_empty_url(environ)
        values: dict[str, Any] = {}
        for name, setting in _SETTINGS.items():
            argument = arguments.get(name)
            if argument is not None:
                values[name] = _parse_argument(name, setting, argument)
            elif environ.get(setting.env, "").strip():
                values[name] = _parse(setting.env, setting.parse, environ[setting.env])
        if sdk_disabled(environ):
            # The SDK's providers then record nothing, for every signal: we export nothing either.
            values.update(logs_exporter=(), traces_exporter=())
        settings = cls(**values)
        settings._check_cluster()
        settings._say_tls_files_unused()
        return settings

    def __repr__(self) -> str:
        """The dataclass's, but with the URL as printed: a repr lands in logs, REPLs and test reports."""
        values = {field.name: getattr(self, field.name) for field in fields(self)}
        values["redis_url"] = shown_url(self.redis_url)
        return f"Settings({', '.join(f'{name}={value!r}' for name, value in values.items())})"

    def _say_tls_files_unused(self) -> None:
        """TLS files beside a URL that does not speak TLS are left out: said once, naming them."""
        tls_files = ("redis_ca", "redis_cert", "redis_key")
        files = [_SETTINGS[name].env for name in tls_files if getattr(self, name)]
        said = f"unused TLS files of {shown_url(self.redis_url)}"
        if files and not self.redis_url.startswith("rediss://") and said not in _told:
            _told.add(said)
            internal_logger.warning(
                "%s set, but %s does not use TLS: they are read with a rediss:// URL only",
                " and ".join(files),
                shown_url(self.redis_url),
            )

    def _check_cluster(self) -> None:
        cluster = _SETTINGS["redis_cluster"].env
        if self.redis_cluster and _database(self.redis_url) != "0":
            raise ConfigError(
                f"{_SETTINGS['redis_url'].env}={shown_url(self.redis_url)!r} is invalid with {cluster}=true: "
                "a Redis Cluster has only database 0"
            )
        if self.shard_by != "none" and not self.redis_cluster:
            raise ConfigError(
                f"{_SETTINGS['shard_by'].env}={self.shard_by!r} needs {cluster}=true: "
                "shards spread over the masters of a Redis Cluster"
            )

    @property
    def retention_summary(self) -> str:
        entries = f"{self.max_entries} entries" if self.max_entries else "unbounded entries"
        return f"{entries}, {self.max_age:g}s max age"


def _parse_argument(name: str, setting: Setting, value: Any) -> Any:
    if isinstance(value, str):
        return _parse(f"{name} (argument)", setting.parse, value)
    if isinstance(value, (list, tuple)) and setting.parse is parse_exporter_names:
        return _parse(f"{name} (argument)", setting.parse, ",".join(value) or "none")
    if isinstance(value, (list, tuple)) and setting.parse is parse_names:
        return _parse(f"{name} (argument)", setting.parse, ",".join(map(str, value)))
    if isinstance(value, (list, tuple)) and setting.parse is parse_patterns:
        return _parse(f"{name} (argument)", setting.parse, json.dumps([str(item) for item in value]))
    if isinstance(value, bool) and setting.parse is parse_bool:
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name}={value!r}: expected a string or a number")
    return _parse(f"{name} (argument)", setting.parse, str(value))


def _parse(label: str, parse: Callable[[str], T], raw: str) -> T:
    try:
        return parse(raw)
    except ValueError as error:
        raw = shown_url(raw) if parse is parse_redis_url else raw
        raise ConfigError(f"{label}={raw!r} is invalid: {error}") from None


@dataclass(frozen=True)
class BatchSettings:
    """Queue and batch sizes for one signal, from OTEL_BLRP_* (logs) or OTEL_BSP_* (spans)."""

    schedule_delay: float
    max_queue_size: int
    max_export_batch_size: int
    queue_size_variable: str = ""  # named when the queue fills

    @classmethod
    def load(
        cls, prefix: str, delay_ms: int | None, environ: Mapping[str, str] | None = None
    ) -> BatchSettings:
        """OTel's variables are honoured; our defaults favour a fast live tail and no burst drops."""
        environ = os.environ if environ is None else environ

        def read(suffix: str, default: int, parse: Callable[[str], int] = parse_positive_int) -> int:
            name = f"{prefix}_{suffix}"
            raw = environ.get(name, "").strip()
            return _parse(name, parse, raw) if raw else default

        schedule_ms = delay_ms if delay_ms is not None else read("SCHEDULE_DELAY", 200, parse_delay_ms)
        queue = read("MAX_QUEUE_SIZE", _QUEUE_SIZE)
        batch = read("MAX_EXPORT_BATCH_SIZE", min(4096, queue))  # a smaller queue is the user's
        if batch > queue:
            raise ConfigError(
                f"{prefix}_MAX_EXPORT_BATCH_SIZE={batch} is larger than {prefix}_MAX_QUEUE_SIZE={queue}"
            )
        _say_the_export_timeout_unread(f"{prefix}_EXPORT_TIMEOUT", environ)
        return cls(
            schedule_delay=schedule_ms / 1000,
            max_queue_size=queue,
            max_export_batch_size=batch,
            queue_size_variable=f"{prefix}_MAX_QUEUE_SIZE",
        )

    @staticmethod
    def check_the_sdks(prefix: str, environ: Mapping[str, str] | None = None) -> None:
        """The SDK's batch processor, which upstream's configurator puts in front of each exporter,
        reads the same variables with its own defaults (a queue of 2048, batches of 512) and raises
        as it is built where a batch is larger than the queue or the delay is not above zero: the
        setup then stops halfway, with nothing exported. Values ours refuse are refused by `load`."""
        environ = os.environ if environ is None else environ

        def read(suffix: str, default: int) -> tuple[int, str]:
            name = f"{prefix}_{suffix}"
            try:  # as the SDK reads it, which takes its default for what is no integer, and says so
                return int(environ[name]), f"{name}={environ[name].strip()}"
            except (KeyError, ValueError):
                return default, f"{name} (unset: the SDK's default, {default})"

        delay, delay_shown = read("SCHEDULE_DELAY", 1)  # the SDK's defaults (5000, 1000) are above zero
        queue, queue_shown = read("MAX_QUEUE_SIZE", _SDK_QUEUE_SIZE)
        batch, batch_shown = read("MAX_EXPORT_BATCH_SIZE", _SDK_EXPORT_BATCH_SIZE)
        if delay <= 0:
            problem, way_out = f"{delay_shown} is not above zero", "set it above zero"
        elif batch > queue:
            problem = f"{batch_shown} is larger than {queue_shown}"
            way_out = (
                "set both sizes, or OTEL_PYTHON_CONFIGURATOR=tracestream, "
                f"whose queue holds {_QUEUE_SIZE} by default"
            )
        else:
            return
        raise ConfigError(
            f"{problem}, which the OpenTelemetry SDK's batch processor refuses: upstream's configurator, "
            f"which the launcher picked, puts one in front of each exporter; {way_out}"
        )


_QUEUE_SIZE = 20_000
# The OpenTelemetry SDK's own defaults for both signals (BatchSpanProcessor, BatchLogRecordProcessor).
_SDK_QUEUE_SIZE = 2048
_SDK_EXPORT_BATCH_SIZE = 512


def _say_the_export_timeout_unread(name: str, environ: Mapping[str, str]) -> None:
    """OTel's variable for a bound on each export: ours bound each Redis call instead. Said once."""
    raw = environ.get(name, "").strip()
    if raw and name not in _told:
        _told.add(name)
        internal_logger.warning(
            "%s=%r is not read: tracestream bounds each Redis call by TRACESTREAM_REDIS_TIMEOUT instead",
            name,
            raw,
        )


# Variables the console and the alerts runner read besides the settings.
CONSOLE_TOKEN_ENV = "TRACESTREAM_CONSOLE_TOKEN"
CONSOLE_ALLOWED_HOSTS_ENV = "TRACESTREAM_CONSOLE_ALLOWED_HOSTS"
CONSOLE_URL_ENV = "TRACESTREAM_CONSOLE_URL"
KNOWN_VARIABLES = frozenset(
    [
        *(setting.env for setting in _SETTINGS.values()),
        CONSOLE_TOKEN_ENV,
        CONSOLE_ALLOWED_HOSTS_ENV,
        CONSOLE_URL_ENV,
    ]
)
_told: set[str] = set()  # the variables said once: a name that is no setting, an empty URL


def _say_unknown_variables(environ: Mapping[str, str]) -> None:
    """A misspelt variable leaves its setting at the default without a word: records meant for
    another Redis would go to localhost's. Said once a name; the variable stays ignored."""
    for name in sorted(environ):
        if name.startswith("TRACESTREAM_") and name not in KNOWN_VARIABLES and name not in _told:
            _told.add(name)
            internal_logger.warning(
                "%s is not a tracestream setting and is ignored%s", name, _did_you_mean(name, KNOWN_VARIABLES)
            )


def _say_an_empty_url(environ: Mapping[str, str]) -> None:
    """`TRACESTREAM_REDIS_URL=${REDIS_URL}` with REDIS_URL unset is empty, read as unset as every
    empty variable is: the records then go to whatever Redis listens on localhost. Said once."""
    name = _SETTINGS["redis_url"].env
    if name in environ and not environ[name].strip() and name not in _told:
        _told.add(name)
        internal_logger.warning(
            "%s is set but empty: records go to %s, the default", name, shown_url(Settings.redis_url)
        )


def _did_you_mean(name: str, known: Iterable[str]) -> str:
    """The prefix every variable shares is left out of the likeness, or every name would be close."""
    by_word = {candidate.removeprefix("TRACESTREAM_"): candidate for candidate in known}
    close = difflib.get_close_matches(name.removeprefix("TRACESTREAM_"), list(by_word), n=1)
    return f"; did you mean {by_word[close[0]]}?" if close else ""


assert {f.name for f in fields(Settings)} == set(_SETTINGS), "every setting needs an env var"

"""Framework integrations that `configure()` installs, once per process, for each library in use.

Each one builds on the contrib instrumentor (guarded by its `is_instrumented_by_opentelemetry`
flag, so the launcher loading it again is harmless) and adds what upstream lacks: request
and task records inside their trace, trace headers, and a flush where Celery children
end with `os._exit`.

An integration installs when its library is imported (at once if it already is), so a
process pays nothing for frameworks it has installed but never uses; Django's, when one of its
request handlers is. A library is in use only when the app imports it: OpenTelemetry's
OTLP/HTTP exporter imports requests for itself, so a missing contrib instrumentation is named
only once the app's own code holds the library, at the latest as the process ends.
`OTEL_PYTHON_DISABLED_INSTRUMENTATIONS` (the launcher's variable) turns any of them off.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from importlib import import_module
from importlib.util import find_spec
from types import FrameType, FunctionType, ModuleType

import wrapt

from tracestream._internal_log import internal_logger
from tracestream.exporters.from_environment import EnvironmentSpanExporter
from tracestream.forks import follow_uwsgi_forks
from tracestream.integrations import loguru as loguru_integration
from tracestream.integrations import sentry, threads, uncaught
from tracestream.integrations import structlog as structlog_integration
from tracestream.otel_setup import log_capture
from tracestream.otel_setup.app_overrides import span_processors_of
from tracestream.otel_setup.http_names import choose_stable_names
from tracestream.otel_setup.shutdown import before_closing
from tracestream.otel_setup.telemetry import Telemetry
from tracestream.settings import installing, metrics_exporter_names


@dataclass(frozen=True)
class Integration:
    name: str  # the entry-point name, as in OTEL_PYTHON_DISABLED_INSTRUMENTATIONS
    library: str
    module: str  # ours, under tracestream.integrations
    contrib: str  # the contrib instrumentation it builds on
    extra: str  # the tracestream extra that installs `contrib`
    # A library other libraries import for themselves (requests imports urllib3): without its
    # contrib instrumentation it is left as it is, unsaid.
    said_missing: bool = True
    # The modules whose import puts the library in use, where importing the library is not
    # enough: kombu imports `django` for one class, in every Celery process.
    in_use_from: tuple[str, ...] = ()
    # A web framework whose requests get request records.
    records_requests: bool = False

    @property
    def in_use_when_imported(self) -> tuple[str, ...]:
        return self.in_use_from or (self.library,)

    @property
    def in_use(self) -> bool:
        return any(name in sys.modules for name in self.in_use_when_imported)

    @property
    def ours(self) -> str:
        return f"tracestream.integrations.{self.module}"


INTEGRATIONS = (
    Integration(
        "fastapi",
        "fastapi",
        "fastapi",
        "opentelemetry.instrumentation.fastapi",
        "fastapi",
        records_requests=True,
    ),
    Integration(
        "starlette",
        "starlette",
        "starlette",
        "opentelemetry.instrumentation.asgi",
        "starlette",
        records_requests=True,
    ),
    Integration(
        "django",
        "django",
        "django.middleware",
        "opentelemetry.instrumentation.django",
        "django",
        # Django's request handlers: a server's, runserver's, the test client's. Not their base
        # module, which each imports as it starts: ours imports them, and would find them half made.
        in_use_from=("django.core.handlers.wsgi", "django.core.handlers.asgi"),
        records_requests=True,
    ),
    Integration("celery", "celery", "celery", "opentelemetry.instrumentation.celery", "celery"),
    Integration("requests", "requests", "clients", "opentelemetry.instrumentation.requests", "clients"),
    Integration("httpx", "httpx", "clients", "opentelemetry.instrumentation.httpx", "clients"),
    Integration("urllib3", "urllib3", "clients", "opentelemetry.instrumentation.urllib3", "clients", False),
    Integration(
        "urllib", "urllib.request", "clients", "opentelemetry.instrumentation.urllib", "clients", False
    ),
    Integration(
        "aiohttp-client", "aiohttp", "clients", "opentelemetry.instrumentation.aiohttp_client", "clients"
    ),
)
INSTALLED_BY_CONFIGURE = frozenset(integration.name for integration in INTEGRATIONS)


@dataclass(frozen=True)
class Unintegrated:
    """A web framework without an integration: its requests get no request records."""

    module: str  # the module of the class its apps are made of
    app_class: str
    spans_from: str  # what traces its requests, if anything does
    contrib: str = ""  # the name of upstream's instrumentation the launcher loads, where there is one
    instrument: str = ""  # how an app set up with configure() alone loads it

    def spans(self) -> str:
        if not self.contrib:
            return self.spans_from
        if self.contrib in disabled():  # its entry point's name, as the launcher matches it
            return f"{self.spans_from}, which OTEL_PYTHON_DISABLED_INSTRUMENTATIONS turns off"
        if not find_spec(f"opentelemetry.instrumentation.{self.contrib.replace('-', '_')}"):
            return f"{self.spans_from}, which is not installed (opentelemetry-instrumentation-{self.contrib})"
        if LAUNCHER_MODULE in sys.modules:
            return f"{self.spans_from} (opentelemetry-instrument loads it)"
        return (
            f"{self.spans_from}, which nothing loads in this process: run it under "
            f"opentelemetry-instrument, or call {self.instrument}"
        )


_UPSTREAMS = "upstream's {} instrumentation"
_BEFORE_THE_APP = "().instrument() before the app is made"
UNINTEGRATED = {
    framework.module: framework
    for framework in (
        Unintegrated(
            "flask", "Flask", _UPSTREAMS.format("Flask"), "flask", "FlaskInstrumentor().instrument_app(app)"
        ),
        Unintegrated(
            "aiohttp.web",
            "Application",
            _UPSTREAMS.format("aiohttp-server"),
            "aiohttp-server",
            "AioHttpServerInstrumentor" + _BEFORE_THE_APP,
        ),
        Unintegrated(
            "tornado.web",
            "Application",
            _UPSTREAMS.format("Tornado"),
            "tornado",
            "TornadoInstrumentor" + _BEFORE_THE_APP,
        ),
        # falcon.asgi.App too, a subclass
        Unintegrated(
            "falcon", "App", _UPSTREAMS.format("Falcon"), "falcon", "FalconInstrumentor" + _BEFORE_THE_APP
        ),
        # No instrumentation the launcher loads traces either, and a Quart app's server may log
        # no access line to say it at: `quart run` logs hypercorn's through the app's logger.
        Unintegrated("litestar", "Litestar", "Litestar's OpenTelemetryPlugin, which the app adds"),
        Unintegrated("quart", "Quart", "upstream's OpenTelemetryMiddleware (ASGI), which the app adds"),
    )
}

# Job queues we do not integrate, by the module of their worker class and its name.
UNINTEGRATED_WORKERS = {"rq.worker": "Worker"}

# Imported by the launcher's sitecustomize: this process runs under opentelemetry-instrument.
LAUNCHER_MODULE = "opentelemetry.instrumentation.auto_instrumentation"

_lock = threading.Lock()
_deferred: list[Callable[[], None]] | None = None


def disabled() -> set[str]:
    return {name.strip() for name in os.environ.get("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "").split(",")}


def _choose_http_conventions(telemetry: Telemetry) -> None:
    """The stable HTTP names (contrib's default is the old ones: fewer attributes to build per
    server span, named as our request records are) only where tracestream alone reads span
    attributes and no metrics go out: a console or OTLP exporter, a span processor of the app's
    provider we joined, and HTTP metrics' names keep contrib's default."""
    if _spans_read_only_by_us(telemetry) and not metrics_exporter_names():
        choose_stable_names()


def _spans_read_only_by_us(telemetry: Telemetry) -> bool:
    if not set(telemetry.settings.traces_exporter) <= {"redis_stream"}:
        return False
    processors = span_processors_of(telemetry.tracer_provider)
    if processors is None:  # a provider that wraps the SDK's (Logfire's): its processors are unseen
        return False
    ours = set(telemetry.span_processors)
    return all(
        processor in ours or isinstance(getattr(processor, "span_exporter", None), EnvironmentSpanExporter)
        for processor in processors
    )


def install_all(telemetry: Telemetry) -> None:
    off = disabled()
    if "*" in off:
        return
    _choose_http_conventions(telemetry)
    capture = log_capture.current()
    if capture is not None:
        capture.unreplaced_access_line = _access_line_unrecorded
    uncaught.install()
    sentry.install()
    if "threading" not in off:
        threads.install()
    for integration in INTEGRATIONS:
        if integration.name not in off:
            _Installer(telemetry, integration).register()
    for library in UNINTEGRATED:
        if library in sys.modules and _an_app_is_made(UNINTEGRATED[library]):
            _say_framework_unintegrated(UNINTEGRATED[library])  # the app factory set us up after `Flask(...)`
        else:
            wrapt.register_post_import_hook(_say_unintegrated, library)
    for library in UNINTEGRATED_WORKERS:
        wrapt.register_post_import_hook(_say_worker_unintegrated, library)
    if "structlog" not in off:
        structlog_integration.install()
    if "loguru" not in off:
        loguru_integration.install()


def _access_line_unrecorded(access_line: logging.LogRecord) -> None:
    """What to say lives with the request records, which a process that records none never imports."""
    from tracestream.integrations import http_records

    off = disabled()
    if any(
        integration.records_requests and integration.name in off and integration.in_use
        for integration in INTEGRATIONS
    ):
        http_records.requests_accounted_for()  # an app whose records the user turned off
        return
    http_records.say_an_access_line_went_unrecorded(access_line)


def _say_unintegrated(module: ModuleType) -> None:
    """Once a process, as the app makes its first app of a web framework we do not integrate:
    not as the framework is imported, which the launcher's instrumentation and Sentry's
    integrations do for themselves."""
    framework = UNINTEGRATED[module.__name__]
    app_class = getattr(module, framework.app_class, None)
    if isinstance(app_class, type):
        _say_at_the_first_instance(app_class, lambda: _say_framework_unintegrated(framework))


def _say_worker_unintegrated(module: ModuleType) -> None:
    """Once a process, as it makes a worker of a job queue we do not integrate: the app that
    only enqueues jobs says nothing."""
    worker_class = getattr(module, UNINTEGRATED_WORKERS[module.__name__], None)
    if isinstance(worker_class, type):
        library = module.__name__.partition(".")[0]
        _say_at_the_first_instance(
            worker_class,
            lambda: internal_logger.warning(
                "%s is in use, which tracestream does not integrate: its jobs get no task records or"
                " spans of their own (Celery's tasks do), and their log lines reach the stream without"
                " the trace of the request that enqueued them",
                library,
            ),
        )


def _say_at_the_first_instance(cls: type, say: Callable[[], None]) -> None:
    original = cls.__init__  # type: ignore[misc]

    def init(self: object, *args: object, **kwargs: object) -> None:
        cls.__init__ = original  # type: ignore[misc]
        say()
        original(self, *args, **kwargs)

    cls.__init__ = init  # type: ignore[misc]


def _an_app_is_made(framework: Unintegrated) -> bool:
    """Whether an app of the framework exists: a look over every object, made only where the
    framework was imported before configure(), as an app factory that sets us up does."""
    app_class = getattr(sys.modules[framework.module], framework.app_class, None)
    if not isinstance(app_class, type):
        return False
    classes = [app_class]
    for cls in classes:  # an instance refers to its own class only: `falcon.asgi.App`, the app's own
        classes += cls.__subclasses__()
    return any(isinstance(referrer, app_class) for referrer in gc.get_referrers(*classes))


def _say_framework_unintegrated(framework: Unintegrated) -> None:
    from tracestream.integrations import http_records

    http_records.requests_accounted_for()
    internal_logger.warning(
        "%s is in use, which tracestream does not integrate: its requests get no request "
        "records, and spans only from %s; the log lines of its apps reach the stream",
        framework.module,
        framework.spans(),
    )


def defer_while_launcher_instruments() -> None:
    """The launcher's own instrumentors go first; ours complete theirs afterwards.

    Instrumenting before the launcher does would only make it warn that the library is
    already instrumented (printed on the app's terminal).
    """
    global _deferred
    with _lock:
        if _deferred is None:
            _deferred = []


def run_deferred() -> None:
    global _deferred
    with _lock:
        pending, _deferred = _deferred or [], None
    for install in pending:
        install()


class _Installer:
    """Installs one integration once both its library and the contrib module are importable.

    Importing a contrib module imports its library, so the library's import hook can fire
    while the contrib module is half-initialised (the launcher loads it that way): then
    the contrib module's own import hook, which fires once it is complete, installs. The
    same holds for our module where it imports the module that puts the library in use
    (Django's app config, in `INSTALLED_APPS`, imports it after configure() ran).
    """

    def __init__(self, telemetry: Telemetry, integration: Integration) -> None:
        self.telemetry = telemetry
        self.integration = integration
        self._started = False
        self._said_contrib_is_missing = False

    def register(self) -> None:
        for name in self.integration.in_use_when_imported:
            wrapt.register_post_import_hook(self._on_import, name)
        if find_spec_quietly(self.integration.contrib) is not None:
            wrapt.register_post_import_hook(self._on_import, self.integration.contrib)
        if self.integration.in_use_from:
            wrapt.register_post_import_hook(self._on_import, self.integration.ours)

    def _on_import(self, module: ModuleType) -> None:
        follow_uwsgi_forks()  # the app loads: under uWSGI, its module is there by now
        integration = self.integration
        if not integration.in_use:
            return
        # The contrib module's own hook, and ours, fire once its code has run, still flagged as initialising.
        if any(
            module.__name__ != name and _initializing(name)
            for name in (integration.contrib, integration.ours)
        ):
            return
        install = partial(self._install, _imported_by_app())  # only the stack, now, tells who imported it
        with _lock:
            if self._started:
                return
            self._started = True
            if _deferred is not None:
                _deferred.append(install)
                return
        install()

    def _install(self, imported_by_app: bool) -> None:
        integration = self.integration
        if find_spec_quietly(integration.contrib) is None:
            if not integration.said_missing:
                return
            if imported_by_app or _held_by_app(integration.library):
                self._say_contrib_is_missing()
            else:  # OpenTelemetry's OTLP exporter imports requests: the app may import it too, later
                before_closing(self._say_contrib_is_missing_if_held_by_app)
            return
        try:
            module = import_module(integration.ours)
            module.install(self.telemetry, integration.name)
        except Exception as error:  # a broken integration must not cost the process its telemetry
            internal_logger.warning("the %s integration failed to install: %r", integration.name, error)

    def _say_contrib_is_missing_if_held_by_app(self) -> None:
        if not self._said_contrib_is_missing and _held_by_app(self.integration.library):
            self._say_contrib_is_missing()

    def _say_contrib_is_missing(self) -> None:
        integration = self.integration
        self._said_contrib_is_missing = True
        internal_logger.warning(
            "%s is in use but %s is not installed: no %s integration (%s adds it)",
            integration.library,
            integration.contrib.replace(".", "-"),
            integration.name,
            installing(integration.extra),
        )


def find_spec_quietly(name: str) -> object | None:
    try:
        return find_spec(name)
    except (ImportError, ValueError):
        return None


def _initializing(name: str) -> bool:
    module = sys.modules.get(name)
    spec = getattr(module, "__spec__", None)
    return module is not None and bool(getattr(spec, "_initializing", False))


# What runs an import for the code that asked for it: the importer is the first frame outside.
_IMPORT_MACHINERY = ("importlib", "wrapt", __name__)
# Code whose use of a library is not the app's: OpenTelemetry's OTLP exporter sends with requests.
_NOT_THE_APP = ("opentelemetry", "tracestream")


def _imported_by_app() -> bool:
    """Whether the import whose hook is running was made by the app (or a library it uses).

    Not when the library was imported before our hook was registered: the hook then runs at
    once, called from our own code, and only what holds the library can tell (`_held_by_app`).
    """
    frame: FrameType | None = sys._getframe(1)
    while frame is not None and _within(frame.f_globals.get("__name__"), _IMPORT_MACHINERY):
        frame = frame.f_back
    return frame is not None and not _within(frame.f_globals.get("__name__"), _NOT_THE_APP)


def _held_by_app(library: str) -> bool:
    """Whether a module other than the library's, OpenTelemetry's and ours holds, as a global,
    one of the library's modules, classes or functions, or an instance of one of its classes
    (`import requests`, `from requests import Session`, `session = requests.Session()`).

    Only identities and types are compared: no attribute of the app's objects is read.
    """
    modules = [(name, module) for name, module in list(sys.modules.items()) if isinstance(module, ModuleType)]
    # By the module's own name: requests files urllib3's and idna's modules under its name too.
    libraries = [module for _, module in modules if _within(vars(module).get("__name__"), (library,))]
    own = {id(module) for module in libraries}
    for module in libraries:
        for value in list(vars(module).values()):
            if isinstance(value, (type, FunctionType)) and _within(value.__module__, (library,)):
                own.add(id(value))
    for name, module in modules:
        if _within(name, (library, *_NOT_THE_APP)):
            continue
        if any(id(value) in own or id(type(value)) in own for value in list(vars(module).values())):
            return True
    return False


def _within(name: object, packages: tuple[str, ...]) -> bool:
    return isinstance(name, str) and any(
        name == package or name.startswith(f"{package}.") for package in packages
    )

"""A local OTLP/HTTP endpoint for tests: it decodes the protobuf it receives and can misbehave on cue.

`OtlpReceiver` answers POST /v1/logs and /v1/traces. Tests queue failures (`fail_next(429, ...)`),
or hold requests open to catch a forwarder mid-batch. Only requests answered 2xx count as arrived.
`SilentServer` accepts TCP connections and never answers: a hung Redis or a hung collector.
"""

from __future__ import annotations

import gzip
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.trace.v1.trace_pb2 import Span


@dataclass(frozen=True)
class Reply:
    status: int
    retry_after: str = ""


@dataclass(frozen=True)
class Attempt:
    path: str
    status: int
    at: float
    records: int


@dataclass(frozen=True)
class Received:
    """One record as a collector would see it: with its resource and scope."""

    resource: dict[str, Any]
    scope: str
    record: Any  # LogRecord or Span

    @property
    def attributes(self) -> dict[str, Any]:
        return attributes_dict(self.record.attributes)


def any_value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return attributes_dict(value.kvlist_value.values)
    return getattr(value, kind)


def attributes_dict(pairs: Any) -> dict[str, Any]:
    return {pair.key: any_value(pair.value) for pair in pairs if isinstance(pair, KeyValue)}


class OtlpReceiver:
    def __init__(self) -> None:
        self.logs: list[Received] = []
        self.spans: list[Received] = []
        self.attempts: list[Attempt] = []
        self.held = 0
        self._replies: deque[Reply] = deque()
        self._hold = threading.Event()
        self._release = threading.Event()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def fail_next(self, *replies: Reply) -> None:
        with self._lock:
            self._replies.extend(replies)

    def hold(self) -> None:
        """Keep the next requests open (a batch in flight) until `release()`; they then get 503."""
        self._release.clear()
        self._hold.set()

    def release(self) -> None:
        self._hold.clear()
        self._release.set()

    def record_ids(self, kind: str = "logs") -> list[str]:
        received = self.logs if kind == "logs" else self.spans
        return [r.attributes["tracestream.record_id"] for r in list(received)]

    def _answer(self, path: str, body: bytes) -> Reply:
        if self._hold.is_set():
            with self._lock:
                self.held += 1
            self._release.wait(30)
            return Reply(503)
        with self._lock:
            reply = self._replies.popleft() if self._replies else Reply(200)
            stored = self._store(path, body) if reply.status == 200 else 0
            self.attempts.append(Attempt(path, reply.status, time.monotonic(), stored))
            return reply

    def _store(self, path: str, body: bytes) -> int:
        found: list[Received] = []
        if path == "/v1/logs":
            logs = ExportLogsServiceRequest.FromString(body)
            for rl in logs.resource_logs:
                resource = attributes_dict(rl.resource.attributes)
                for sl in rl.scope_logs:
                    found += [Received(resource, sl.scope.name, LogRecord.FromString(r.SerializeToString()))
                              for r in sl.log_records]  # fmt: skip
            self.logs += found
        else:
            traces = ExportTraceServiceRequest.FromString(body)
            for rs in traces.resource_spans:
                resource = attributes_dict(rs.resource.attributes)
                for ss in rs.scope_spans:
                    found += [Received(resource, ss.scope.name, Span.FromString(s.SerializeToString()))
                              for s in ss.spans]  # fmt: skip
            self.spans += found
        return len(found)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a collector does

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path not in ("/v1/logs", "/v1/traces"):
                    self._reply(404, "")
                    return
                if self.headers.get("Content-Type") != "application/x-protobuf":
                    self._reply(415, "")
                    return
                reply = receiver._answer(self.path, body)
                self._reply(reply.status, reply.retry_after)

            def _reply(self, status: int, retry_after: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                if retry_after:
                    self.send_header("Retry-After", retry_after)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def __enter__(self) -> OtlpReceiver:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()


class SilentServer:
    """Accepts connections and never says a word."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self._held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1])

    @property
    def connections(self) -> int:
        """Accepted so far."""
        return len(self._held)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self._held.append(conn)

    def __enter__(self) -> SilentServer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._sock.close()
        for conn in self._held:
            conn.close()

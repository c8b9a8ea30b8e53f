"""A local webhook for alert tests: it keeps every JSON body it accepts and can fail or hang on cue.

A 3xx answer points at `/elsewhere`, which records whoever follows it."""

from __future__ import annotations

import json
import threading
from collections import defaultdict, deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any


@dataclass(frozen=True)
class Hook:
    """One request: its path, status answered, headers and JSON body."""

    path: str
    status: int
    headers: dict[str, str]
    body: dict[str, Any]


class WebhookReceiver:
    def __init__(self) -> None:
        self.requests: list[Hook] = []
        self._replies: defaultdict[str, deque[int]] = defaultdict(deque)
        self._gates: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def fail_next(self, path: str, *statuses: int) -> None:
        with self._lock:
            self._replies[path].extend(statuses)

    def hold(self, path: str) -> threading.Event:
        """Answers on `path` wait until the event returned is set (30 s at most)."""
        gate = self._gates[path] = threading.Event()
        return gate

    def accepted(self, path: str = "/hook", rule: str | None = None) -> list[dict[str, Any]]:
        """Bodies answered 2xx on `path`, oldest first; only `rule`'s when given."""
        with self._lock:
            found = [h.body for h in self.requests if h.path.split("?")[0] == path and h.status < 300]
        return [body for body in found if rule is None or body.get("rule") == rule]

    def attempts(self, path: str = "/hook") -> list[Hook]:
        with self._lock:
            return [h for h in self.requests if h.path.split("?")[0] == path]

    def _answer(self, path: str, headers: dict[str, str], body: dict[str, Any]) -> int:
        with self._lock:
            queued = self._replies[path.split("?")[0]]
            status = queued.popleft() if queued else 200
            self.requests.append(Hook(path, status, headers, body))
            return status

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                status = receiver._answer(self.path, dict(self.headers.items()), json.loads(raw))
                gate = receiver._gates.get(self.path.split("?")[0])
                if gate is not None:
                    gate.wait(30)
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", "/elsewhere")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self) -> None:
                """Only a followed redirect comes here."""
                receiver._answer(self.path, dict(self.headers.items()), {})
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()

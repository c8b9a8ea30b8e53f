"""Outgoing HTTP through each client `configure()` instruments carries the caller's trace.

A real process configures tracestream, serves HTTP on a thread of its own, and calls itself
inside a span through each client; the server side prints the `traceparent` it received.
"""

from __future__ import annotations

import json

import pytest

from tests.support import RedisHandle, run_python_process, wait_for

# A server on a thread of the process, noting the `traceparent` of each request it answers.
SERVER = """
import http.server, threading
received = []


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        received.append(self.headers.get("traceparent"))
        self.send_response(200)
        self.end_headers()

    do_POST = do_GET

    def log_message(self, *args):
        pass


server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
threading.Thread(target=server.serve_forever, daemon=True).start()
"""
CALLER = """
import json
import tracestream
from opentelemetry import trace

tracestream.configure(service_name="caller")
SERVER
url = f"http://127.0.0.1:{server.server_port}/orders/7"
client = CLIENT
with trace.get_tracer("caller").start_as_current_span("checkout") as span:
    if client == "urllib3":
        import urllib3
        urllib3.PoolManager().request("GET", url)
    elif client == "urllib":
        import urllib.request
        urllib.request.urlopen(url).read()
    elif client == "aiohttp":
        import asyncio
        import aiohttp

        async def call():
            async with aiohttp.ClientSession() as session, session.get(url) as response:
                await response.read()

        asyncio.run(call())
    else:
        import requests
        requests.get(url)
server.shutdown()
print(json.dumps({"trace_id": format(span.get_span_context().trace_id, "032x"), "received": received}))
""".replace("SERVER", SERVER)


SCOPES = {
    "urllib3": "opentelemetry.instrumentation.urllib3",
    "urllib": "opentelemetry.instrumentation.urllib",
    "requests": "opentelemetry.instrumentation.requests",
    "aiohttp": "opentelemetry.instrumentation.aiohttp_client",
}


@pytest.mark.parametrize("client", SCOPES)
def test_each_client_carries_the_trace_in_one_client_span(stream: RedisHandle, client: str) -> None:
    """urllib3, urllib and aiohttp were left uninstrumented by configure() (only the launcher did
    them): the service called started a trace of its own. requests calls through urllib3: one span."""
    done = run_python_process(CALLER.replace("CLIENT", repr(client)), stream.env())
    assert done.returncode == 0, done.stderr
    assert not [line for line in done.stderr.splitlines() if line.startswith("tracestream:")]
    result = json.loads(done.stdout)
    [traceparent] = result["received"]
    assert traceparent is not None and traceparent.split("-")[1] == result["trace_id"]
    spans = wait_for(lambda: len(stream.spans()) >= 2 and stream.spans(), what="the caller's spans")
    [checkout] = [s for s in spans if s.name == "checkout"]
    [call] = [s for s in spans if s.kind == "CLIENT"]
    assert (call.trace_id, call.parent_span_id) == (checkout.trace_id, checkout.span_id)
    assert call.scope == SCOPES[client]
    assert traceparent.split("-")[2] == call.span_id


# An exit handler registered before configure(), as Sentry's is when its docs' order is kept
# (init first), sends a last upload through urllib3 after tracestream has closed.
UPLOAD_AT_EXIT = """
import atexit
import urllib3
SERVER
url = f"http://127.0.0.1:{server.server_port}/"
atexit.register(lambda: urllib3.PoolManager().request("POST", url, body=b"x"))

import tracestream
tracestream.configure(service_name="uploader")
""".replace("SERVER", SERVER)


def test_a_client_call_at_exit_after_the_close_is_not_a_line_at_every_exit(stream: RedisHandle) -> None:
    """Its span came after the close, and the warning about a lost record was printed at every
    exit of every app set up as Sentry's docs say."""
    done = run_python_process(UPLOAD_AT_EXIT, stream.env())
    assert done.returncode == 0, done.stderr
    assert "tracestream:" not in done.stderr, done.stderr

"""How a running process reports its export counters: a status hash in Redis and OTel metrics.

Each exporting process refreshes `<stream>:status:<service>:<host>:<pid>` every few
seconds with a short TTL, so `tracestream doctor` lists exactly the live processes. The
same counters are OTel observable counters: free until a MeterProvider is configured.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from opentelemetry.metrics import CallbackOptions, Observation, get_meter

from tracestream.connection import Client, reply_text

STATUS_TTL = 30
METERED = ("exported", "spooled", "replayed", "dropped", "failed_attempts")


def status_key(stream: str, service: str, host: str, pid: int) -> str:
    return f"{stream}:status:{service}:{host}:{pid}"


@dataclass(frozen=True)
class ProcessStatus:
    key: str
    fields: dict[str, int]

    @property
    def process(self) -> str:
        """`service:host:pid`."""
        return self.key.split(":status:", 1)[1]

    def line(self) -> str:
        parts = [self.process]
        for signal in ("logs", "spans"):
            counts = {k.split(".", 1)[1]: v for k, v in self.fields.items() if k.startswith(f"{signal}.")}
            if counts:
                parts.append(
                    f"{signal}: exported {counts.get('exported', 0)}, spooled {counts.get('spooled', 0)},"
                    f" replayed {counts.get('replayed', 0)}, dropped {counts.get('dropped', 0)},"
                    f" queued {counts.get('queued', 0)}, spool {counts.get('spool_bytes', 0)} B"
                )
        return "  ".join(parts)


def read_statuses(client: Client, stream: str) -> list[ProcessStatus]:
    """Every live exporting process that writes to `stream`."""
    found = []
    pattern = re.sub(r"([*?\[\]\\])", r"\\\1", stream) + ":status:*"
    for raw_key in client.scan_iter(match=pattern, count=500):
        key = reply_text(raw_key)
        fields = {reply_text(k): reply_text(v) for k, v in client.hgetall(key).items()}
        decoded = {name: int(value) for name, value in fields.items() if value.lstrip("-").isdigit()}
        if decoded:
            found.append(ProcessStatus(key, decoded))
    return sorted(found, key=lambda status: status.key)


def doctor_lines(client: Client, stream: str) -> list[str]:
    """The export-health section of `tracestream doctor`."""
    statuses = read_statuses(client, stream)
    if not statuses:
        return [f"no process reported to {stream} in the last {STATUS_TTL}s"]
    return [status.line() for status in statuses]


def register_metrics(signal: str, status: Callable[[], dict[str, int]]) -> None:
    """Observable counters `tracestream.records.<fate>` with attribute `signal`."""
    meter = get_meter("tracestream")

    def observe(name: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def callback(options: CallbackOptions) -> Iterable[Observation]:
            return [Observation(status()[name], {"signal": signal})]

        return callback

    for name in METERED:
        meter.create_observable_counter(
            f"tracestream.records.{name}", callbacks=[observe(name)], unit="{record}"
        )
    meter.create_observable_gauge(
        "tracestream.spool.size",
        callbacks=[lambda options: [Observation(status()["spool_bytes"], {"signal": signal})]],
        unit="By",
    )

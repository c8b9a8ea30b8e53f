"""How a running process reports its export counters: a status hash in Redis and OTel metrics.

Each exporting process refreshes `<stream>:status:<service>:<host>:<pid>` every few
seconds with a short TTL, so `tracestream doctor` lists exactly the live processes. The
same counters are OTel observable counters: free until a MeterProvider is configured.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from opentelemetry.metrics import CallbackOptions, Observation, get_meter

from tracestream.connection import Client, reply_text

STATUS_TTL = 30
METERED = ("exported", "spooled", "replayed", "dead_lettered", "dropped", "failed_attempts")
ERROR_FIELD = "error"  # `<signal>.error`: why writes fail now, "" while they succeed
# `<signal>.lost`: the last loss in Redis the writer saw (a stream gone, its mark gone back).
LOSS_FIELD = "lost"


def status_key(stream: str, service: str, host: str, pid: int) -> str:
    return f"{stream}:status:{service}:{host}:{pid}"


_DROPS = {
    "dropped_queue_full": "queue full",
    "dropped_invalid": "cannot be encoded",
    "dropped_at_shutdown": "still queued at shutdown",
    "dropped_refused": "refused by Redis and not kept",
    "dropped_torn": "in torn spool frames",
}


@dataclass(frozen=True)
class ProcessStatus:
    key: str
    fields: dict[str, int]
    errors: dict[str, str] = field(default_factory=dict)  # signal -> why its writes fail now
    losses: dict[str, str] = field(default_factory=dict)  # signal -> records Redis lost after taking them

    @property
    def process(self) -> str:
        """`service:host:pid`."""
        return self.key.split(":status:", 1)[1]

    def counts(self, signal: str) -> dict[str, int]:
        """One signal's counters (`logs` or `spans`), without the prefix."""
        prefix = f"{signal}."
        return {k.removeprefix(prefix): v for k, v in self.fields.items() if k.startswith(prefix)}

    def line(self) -> str:
        parts = [self.process]
        for signal in ("logs", "spans"):
            counts = self.counts(signal)
            if counts:
                attempts = counts.get("failed_attempts", 0)
                parts.append(
                    f"{signal}: exported {counts.get('exported', 0)}, spooled {counts.get('spooled', 0)},"
                    f" replayed {counts.get('replayed', 0)}, dropped {counts.get('dropped', 0)},"
                    f" dead-lettered {counts.get('dead_lettered', 0)}, queued {counts.get('queued', 0)},"
                    f" spool {counts.get('spool_bytes', 0)} B"
                    + (f", failed attempts {attempts}" if attempts else "")
                )
        return "  ".join(parts)

    def problems(self) -> tuple[str, list[str]]:
        """("ok" | "warn" | "fail", what is wrong in plain words): records lost, or writes failing
        now, are a failure; records refused or waiting in the spool are a warning. Failed attempts
        of a writer that writes again are no problem: its line counts them."""
        level, found = "ok", []
        for signal in ("logs", "spans"):
            counts = self.counts(signal)
            if self.errors.get(signal):
                level = "fail"
                found.append(f"{signal}: cannot write to Redis: {self.errors[signal]}")
            if self.losses.get(signal):
                level = "fail"
                found.append(f"{signal}: {self.losses[signal]}")
            drops = {label: counts.get(name, 0) for name, label in _DROPS.items() if counts.get(name, 0)}
            if drops:
                level = "fail"
                found.append(f"{signal}: {_total(drops)} dropped ({_listed(drops)})")
            refused = {k.removeprefix("refused."): v for k, v in counts.items() if k.startswith("refused.")}
            if refused:
                kept = counts.get("dead_lettered", 0)
                found.append(
                    f"{signal}: Redis refused {_total(refused)} records ({_listed(refused)}), {kept} of them"
                    " kept in the spool's dead-letter file (`tracestream spool list`)"
                )
            backlog = counts.get("spooled", 0) - counts.get("replayed", 0)
            if backlog > 0:
                found.append(
                    f"{signal}: {backlog} records waiting in the spool ({counts.get('spool_bytes', 0)} B)"
                )
            attempts = counts.get("failed_attempts", 0)
            if attempts and self.errors.get(signal):  # once writes succeed again, history: `line()`
                tries = "attempt" if attempts == 1 else "attempts"
                found.append(f"{signal}: {attempts} failed {tries} to write to Redis since it started")
        if found and level == "ok":
            level = "warn"
        return level, found


def _total(counts: dict[str, int]) -> int:
    return sum(counts.values())


def _listed(counts: dict[str, int]) -> str:
    return ", ".join(f"{label} {count}" for label, count in sorted(counts.items()))


def read_statuses(client: Client, stream: str) -> list[ProcessStatus]:
    """Every live exporting process that writes to `stream`."""
    found = []
    pattern = re.sub(r"([*?\[\]\\])", r"\\\1", stream) + ":status:*"
    for raw_key in client.scan_iter(match=pattern, count=500):
        key = reply_text(raw_key)
        fields = {reply_text(k): reply_text(v) for k, v in client.hgetall(key).items()}
        decoded = {name: int(value) for name, value in fields.items() if value.lstrip("-").isdigit()}
        errors, losses = (
            {
                name.removesuffix(f".{suffix}"): value
                for name, value in fields.items()
                if name.endswith(f".{suffix}") and value
            }
            for suffix in (ERROR_FIELD, LOSS_FIELD)
        )
        if decoded:
            found.append(ProcessStatus(key, decoded, errors, losses))
    return sorted(found, key=lambda status: status.key)


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
        "tracestream.disk_spool.size",
        callbacks=[lambda options: [Observation(status()["spool_bytes"], {"signal": signal})]],
        unit="By",
    )

"""The logging cookbook's "Logging to a single file from multiple processes": workers send
their records through a `QueueHandler` on a multiprocessing queue to a listener process,
which hands each to `Logger.handle()` and writes it to one file.

Usage: python -m tests.apps.cookbook_processes LOG_FILE fork|spawn [--tracestream]

As the cookbook gives it, but for fixed messages instead of random ones and a span around
each worker's lines. `--tracestream` calls configure() at import, so spawned processes set up too.
"""

from __future__ import annotations

import logging
import logging.handlers
import multiprocessing
import sys
from collections.abc import Callable
from multiprocessing.queues import Queue
from typing import Any

if "--tracestream" in sys.argv:
    import tracestream

    tracestream.configure()

from opentelemetry import trace

LOGGERS = ["a.b.c", "d.e.f"]
LEVELS = [logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL]
WORKERS = 3


def listener_configurer(path: str) -> None:
    root = logging.getLogger()
    handler = logging.handlers.RotatingFileHandler(path, "a", 300_000, 10)
    handler.setFormatter(logging.Formatter("%(processName)-10s %(name)s %(levelname)-8s %(message)s"))
    root.addHandler(handler)


def listener_process(queue: Queue[Any], configurer: Callable[[str], None], path: str) -> None:
    configurer(path)
    while True:
        record = queue.get()
        if record is None:  # the sentinel: quit
            break
        logger = logging.getLogger(record.name)
        logger.handle(record)  # no level or filter logic applied: just do it


def worker_configurer(queue: Queue[Any]) -> None:
    handler = logging.handlers.QueueHandler(queue)
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)


def worker_process(queue: Queue[Any], configurer: Callable[[Queue[Any]], None]) -> None:
    configurer(queue)
    name = multiprocessing.current_process().name
    print(f"Worker started: {name}")
    with trace.get_tracer("cookbook").start_as_current_span(f"work {name}"):
        for number, level in enumerate(LEVELS):
            logging.getLogger(LOGGERS[number % 2]).log(level, "message from %s no. %d", name, number)
    print(f"Worker finished: {name}")


def main(path: str) -> None:
    queue: Queue[Any] = multiprocessing.Queue(-1)
    listener = multiprocessing.Process(target=listener_process, args=(queue, listener_configurer, path))
    listener.start()
    work = (queue, worker_configurer)
    workers = [multiprocessing.Process(target=worker_process, args=work) for _ in range(WORKERS)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    queue.put_nowait(None)
    listener.join()


if __name__ == "__main__":
    multiprocessing.set_start_method(sys.argv[2])
    main(sys.argv[1])

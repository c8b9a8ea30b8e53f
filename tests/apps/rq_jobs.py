"""RQ's "Getting started" job, in a module the worker imports: it logs, as a job does."""

import logging


def count_words(text: str) -> int:
    logging.getLogger("rq_jobs").warning("counting the words of %r", text)
    return len(text.split())


def divide(total: int, parts: int) -> float:
    return total / parts

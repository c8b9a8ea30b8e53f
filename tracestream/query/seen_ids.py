"""The record ids a reader has met, in little memory, to drop the copies a retried write stored.

A writer numbers its records in order, so the counters met of one writer form a few runs: a
search or an export of 1.5 M records kept a set of every id, 172 MB.
"""

from __future__ import annotations

from bisect import bisect_right

from tracestream.schema import writer_and_counter

__all__ = ["SeenRecordIds"]


class SeenRecordIds:
    def __init__(self) -> None:
        self._runs: dict[str, _Runs] = {}
        self._others: set[str] = set()  # ids of another form

    def add(self, record_id: str) -> bool:
        """False when `record_id` was met before."""
        parsed = writer_and_counter(record_id)
        if parsed is None:
            if record_id in self._others:
                return False
            self._others.add(record_id)
            return True
        writer, counter = parsed
        runs = self._runs.get(writer)
        if runs is None:
            runs = self._runs[writer] = _Runs()
        return runs.add(-counter)  # newest first: each counter one below the last, appended


class _Runs:
    """Sorted, disjoint runs of integers, `starts[i]` to `ends[i]` inclusive."""

    __slots__ = ("ends", "starts")

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []

    def add(self, number: int) -> bool:
        """False when `number` is in a run already."""
        starts, ends = self.starts, self.ends
        if ends and number == ends[-1] + 1:
            ends[-1] = number
            return True
        i = bisect_right(starts, number) - 1
        if i >= 0 and number <= ends[i]:
            return False
        joins_left = i >= 0 and ends[i] == number - 1
        joins_right = i + 1 < len(starts) and starts[i + 1] == number + 1
        if joins_left and joins_right:
            ends[i] = ends.pop(i + 1)
            del starts[i + 1]
        elif joins_left:
            ends[i] = number
        elif joins_right:
            starts[i + 1] = number
        else:
            starts.insert(i + 1, number)
            ends.insert(i + 1, number)
        return True

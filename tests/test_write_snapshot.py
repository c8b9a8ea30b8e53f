"""`extra=` values are taken as they were when logged: what the app changes afterwards stays out."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from tracestream.otel_setup.snapshot import snapshot_values


def test_mutable_containers_are_copied_and_everything_else_is_kept_as_is() -> None:
    cart = {"items": ["book"], "total": 12}
    tags, seen, raw = ["new"], {1}, bytearray(b"ab")
    text, number, pair = "order 7", 7, ("a", ["b"])
    extras = snapshot_values(
        {"cart": cart, "tags": tags, "seen": seen, "raw": raw, "text": text, "n": number, "pair": pair}
    )
    cart["total"], cart["coupon"] = 0, "FREE"
    tags.append("paid")
    seen.add(2)
    raw.extend(b"cd")
    assert extras["cart"] == {"items": ["book"], "total": 12}
    assert (extras["tags"], extras["seen"], extras["raw"]) == (["new"], {1}, bytearray(b"ab"))
    assert extras["text"] is text and extras["n"] is number and extras["pair"] is pair
    cart["items"].append("pen")  # one level deep only: nested containers are shared
    assert extras["cart"]["items"] == ["book", "pen"]


class _Hostile(dict[str, Any]):
    def __iter__(self) -> Any:
        raise RuntimeError("iterated")

    def keys(self) -> Any:
        raise RuntimeError("keys")

    def copy(self) -> Any:
        raise RuntimeError("copy")


class _HostileList(list[int]):
    def __iter__(self) -> Any:
        raise RuntimeError("iterated")


class _Tagged(set[int]):
    def __repr__(self) -> str:
        return "Tagged"


def test_subclasses_are_copied_and_one_that_cannot_be_is_kept_without_raising() -> None:
    hostile, numbers, tagged, ordered = _Hostile(a=1), _HostileList([1, 2]), _Tagged({1}), OrderedDict(a=1)
    extras = snapshot_values({"hostile": hostile, "numbers": numbers, "tagged": tagged, "ordered": ordered})
    ordered["b"] = 2
    numbers.append(3)
    assert extras["ordered"] == {"a": 1} and type(extras["ordered"]) is dict
    assert type(extras["numbers"]) is list and list.__eq__(extras["numbers"], [1, 2])
    assert extras["hostile"] is hostile  # its keys() raises: the worker writes it as before
    assert extras["tagged"] is tagged  # written by its repr, as the worker would: kept as it is

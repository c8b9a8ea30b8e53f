"""Shared by the structlog and loguru bridges: key/values to OTel attributes, levels, exceptions."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Mapping
from typing import Any

from opentelemetry._logs import SeverityNumber
from opentelemetry.instrumentation.log_utils import std_to_otel

_PRIMITIVES = (str, bool, int, float)


def attribute_value(value: object) -> object:
    """OTel attributes hold primitives and lists of them; anything else becomes its repr."""
    if isinstance(value, _PRIMITIVES):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(item, _PRIMITIVES) for item in value):
        return list(value)
    return repr(value)


def attributes_of(fields: Mapping[str, Any], skip: Iterable[str] = ()) -> dict[str, object]:
    skipped = set(skip)
    return {str(key): attribute_value(value) for key, value in fields.items() if key not in skipped}


def severity_of(level_name: str) -> SeverityNumber:
    """`info`, `WARNING`, `exception`, `success` (loguru), … as an OTel severity."""
    name = level_name.upper()
    name = {"EXCEPTION": "ERROR", "WARN": "WARNING", "SUCCESS": "INFO", "TRACE": "DEBUG", "MSG": "INFO"}.get(
        name, name
    )
    level = logging.getLevelName(name)
    return std_to_otel(level if isinstance(level, int) else logging.INFO)


def exception_of(value: object) -> BaseException | None:
    """`exc_info=True`, an exc_info tuple or an exception instance."""
    if value is True:
        return sys.exc_info()[1]
    if isinstance(value, BaseException):
        return value
    if isinstance(value, tuple) and len(value) == 3 and isinstance(value[1], BaseException):
        return value[1]
    return None

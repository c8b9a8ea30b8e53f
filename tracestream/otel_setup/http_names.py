"""Which HTTP attribute names the contrib instrumentations use on spans.

The contrib HTTP instrumentations read `OTEL_SEMCONV_STABILITY_OPT_IN` once, when the first of
them instruments. tracestream sets it to `http`, the stable names its request records carry,
only where tracestream alone reads the spans and no metrics go out: any other reader keeps
contrib's default. Span processors of the app's that join tracestream's provider later are such
readers: they get contrib's default back while contrib has not read the variable yet, and are
told how to keep both names once it has.
"""

from __future__ import annotations

import os
import sys

__all__ = ["VARIABLE", "choose_stable_names", "give_back_default_names"]

VARIABLE = "OTEL_SEMCONV_STABILITY_OPT_IN"
_chosen = False


def choose_stable_names() -> None:
    """The stable names, unless the app chose; called only where tracestream alone reads spans."""
    global _chosen
    if VARIABLE not in os.environ:
        os.environ[VARIABLE] = "http"
        _chosen = True


def give_back_default_names() -> str:
    """The app's span processors now read the spans too: contrib's default names again while that
    can still change what they get; else the end of the line saying they joined, telling how to
    keep both names."""
    global _chosen
    if _chosen and not _read_by_contrib():
        os.environ.pop(VARIABLE, None)
        _chosen = False
        return ""
    if os.environ.get(VARIABLE) != "http":
        return ""
    if _chosen:
        return (
            "; they get the stable HTTP attribute names tracestream chose (OTEL_SEMCONV_STABILITY_OPT_IN="
            "http): set it to http/dup to keep contrib's default names as well"
        )
    return ""


def _read_by_contrib() -> bool:
    """Whether a contrib instrumentation has read the variable (a private flag of contrib's;
    taken as read when it cannot be told)."""
    semconv = sys.modules.get("opentelemetry.instrumentation._semconv")
    if semconv is None:
        return False
    stability = getattr(semconv, "_OpenTelemetrySemanticConventionStability", None)
    return bool(getattr(stability, "_initialized", True))

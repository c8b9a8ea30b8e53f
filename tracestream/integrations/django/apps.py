"""Where Django looks for the AppConfig of an app listed by its module,
`"tracestream.integrations.django"` in INSTALLED_APPS."""

from tracestream.integrations.django import TracestreamConfig

__all__ = ["TracestreamConfig"]

"""Where Django looks for the AppConfig of `"tracestream"` in INSTALLED_APPS. Only Django imports
this module: `import tracestream` stays free of Django and of the integration."""

from tracestream.integrations.django import TracestreamConfig

__all__ = ["TracestreamConfig"]

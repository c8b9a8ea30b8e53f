"""Exporters that write OTel signals into Redis streams."""

from tracestream.exporters.redis_stream import RedisStreamLogExporter, RedisStreamSpanExporter

__all__ = ["RedisStreamLogExporter", "RedisStreamSpanExporter"]

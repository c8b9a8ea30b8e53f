"""Shared fixtures: one private redis-server per test session, a fresh stream per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis

from tests.seeded_records import RecordWriter
from tests.support import RedisHandle
from tracestream.embedded_redis import EmbeddedRedis


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis() as server:
        yield server


@pytest.fixture
def redis_client(redis_server: EmbeddedRedis) -> Iterator[redis.Redis]:
    client = redis_server.client()
    yield client
    client.close()


@pytest.fixture
def stream(redis_server: EmbeddedRedis) -> RedisHandle:
    """A stream name no other test uses, so tests never see each other's records."""
    return RedisHandle(url=redis_server.url, stream=f"test:{uuid.uuid4().hex[:12]}")


@pytest.fixture
def writer(stream: RedisHandle) -> Iterator[RecordWriter]:
    """Appends log records to `stream` through the exporter's own writer (tests/records.py)."""
    writer = RecordWriter(stream)
    yield writer
    writer.close()

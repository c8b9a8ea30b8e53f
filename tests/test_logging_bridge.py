"""The stdlib bridge keeps a record as it was when logged, whatever the app does afterwards."""

from __future__ import annotations

from tests.pipelines import PrivatePipeline
from tests.support import RedisHandle, wait_for
from tracestream.settings import Settings


def test_extra_values_changed_after_logging_are_exported_as_logged(stream: RedisHandle) -> None:
    """The worker encodes a batch tens of milliseconds later; the app changes its values at once."""
    pipeline = PrivatePipeline(Settings(redis_url=stream.url, stream=stream.stream))
    try:
        cart = {"items": 1, "total": 12}
        tags = ["new"]
        pipeline.logger.info("cart of %d item(s)", cart["items"], extra={"cart": cart, "tags": tags})
        cart["items"], cart["coupon"] = 2, "FREE"
        tags.append("paid")
        pipeline.flush()
        entry = wait_for(lambda: stream.logs(), what="the record")[0]
    finally:
        pipeline.close()
    assert entry.body == "cart of 1 item(s)"
    assert entry.attributes["cart"] == {"items": 1, "total": 12}
    assert entry.attributes["tags"] == ["new"]

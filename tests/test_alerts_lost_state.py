"""`tracestream alerts run` against a Redis that restarts empty (no persistence, as the tests' Redis
runs): the rule states, the outbox and the history are gone, and the runner says so, names nothing
twice and ends the firing that was open. A real runner process, redis-server and webhook."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.apps.alerts_webhook import WebhookReceiver
from tests.seeded_records import RecordWriter
from tests.support import RedisHandle, wait_for
from tests.test_alerts import SECRET_PASSWORD, notified, rule_file, running
from tracestream.embedded_redis import EmbeddedRedis


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as running_receiver:
        yield running_receiver


def log(handle: RedisHandle, body: str, service: str) -> None:
    writer = RecordWriter(handle)
    writer.log(body, service=service)
    writer.close()


def test_a_redis_restarted_empty_ends_the_open_firing_and_reuses_no_id(
    receiver: WebhookReceiver, tmp_path: Path
) -> None:
    """The numbering started again at 1: the next firing had the id and Idempotency-Key of the first,
    which a receiver dropping duplicates discarded, and the firing open at the restart never ended."""
    users = tmp_path / "users.acl"  # read again as it restarts, unlike the keys
    users.write_text(f"user default on nopass ~* &* +@all\nuser alerts on >{SECRET_PASSWORD} ~* &* +@all\n")
    with EmbeddedRedis(extra_args=["--aclfile", str(users)]) as server:
        url = f"redis://alerts:{SECRET_PASSWORD}@127.0.0.1:{server.port}/0"
        handle = RedisHandle(url=url, stream="lost")
        rule = {"name": "forgotten", "kind": "match", "filter": {"service": "fg"}, "cooldown": "5s"}
        with running(handle, rule_file(tmp_path, receiver, [{**rule, "notify": "ops"}])) as runner:
            log(handle, "before", "fg")
            fired = notified(receiver, "forgotten", 1)[0]
            server.stop()
            server.start()
            resolved = notified(receiver, "forgotten", 2)[1]
            log(handle, "after", "fg")
            again = notified(receiver, "forgotten", 3)[2]
            told = runner.stderr().splitlines()
    hooks = [hook for hook in receiver.attempts("/hook") if hook.body["rule"] == "forgotten"]
    assert [hook.body["state"] for hook in hooks] == ["firing", "resolved", "firing"]
    assert len({hook.body["id"] for hook in hooks}) == 3
    assert len({hook.headers["Idempotency-Key"] for hook in hooks}) == 3
    assert resolved["firing_since"] == fired["firing_since"] and resolved["count"] == 0
    assert [sample["body"] for sample in again["samples"]] == ["after"]
    assert [line for line in told if "Redis has lost" in line] == [
        "tracestream alerts: Redis has lost the state of 1 rule (restarted without persistence, or keys "
        "deleted or evicted): counts and notifications not yet delivered are gone, and rules count again "
        "from now; still firing until they resolve: forgotten"
    ]
    # The start line names the Redis read, its password masked.
    start = next(line for line in told if "evaluating" in line)
    assert (
        f"evaluating 1 rule on 1 shard(s) of lost at redis://alerts:***@127.0.0.1:{server.port}/0 as "
        in start
    )
    assert all(SECRET_PASSWORD not in line for line in told)


def test_an_absence_firing_when_redis_restarted_empty_ends_when_the_service_comes_back(
    receiver: WebhookReceiver, tmp_path: Path
) -> None:
    """Its counts are gone with Redis, but no record has come since: it stays firing, not resolved to
    fire again a window later."""
    with EmbeddedRedis() as server:
        handle = RedisHandle(url=server.url, stream="silent")
        rule = {"name": "gone-quiet", "kind": "absence", "filter": {"service": "q"}, "window": "2s"}
        with running(handle, rule_file(tmp_path, receiver, [{**rule, "notify": "ops"}])) as runner:
            notified(receiver, "gone-quiet", 1)
            server.stop()
            server.start()
            wait_for(lambda: "Redis has lost the state" in runner.stderr(), what="the loss told")
            # reading again, so the record counts within its window
            wait_for(lambda: "Redis is reachable again" in runner.stderr(), what="the reading resumed")
            log(handle, "back", "q")
            back = notified(receiver, "gone-quiet", 2)[1]
    assert back["state"] == "resolved" and back["count"] == 1
    assert len(receiver.accepted("/hook", "gone-quiet")) == 2

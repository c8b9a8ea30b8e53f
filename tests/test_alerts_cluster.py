"""`tracestream alerts run` on a 3-master Redis Cluster: records sharded per service are read on
every master, their counts summed, and a shard that appears later is read from its start."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import orjson

from tests import test_cluster
from tests.apps.alerts_webhook import WebhookReceiver
from tests.seeded_records import RecordWriter
from tests.support import ROOT, VENV_BIN, RedisHandle, wait_for
from tests.test_alerts import notified, rate_rule, rule_file, running
from tracestream.alerts.status import alerts_status
from tracestream.connection import connect_cluster
from tracestream.embedded_redis import EmbeddedCluster

SERVICES, SHARDED = test_cluster.SERVICES, test_cluster.SHARDED  # one service on each master
cluster = test_cluster.cluster  # the 3-master cluster fixture


def test_rules_count_every_shard_and_find_new_ones(cluster: EmbeddedCluster, tmp_path: Path) -> None:
    handle = RedisHandle(url=cluster.url, stream=f"test:{uuid.uuid4().hex[:12]}")
    writer = RecordWriter(handle, **SHARDED)
    for service in SERVICES:
        writer.log("before the runner: not counted", service=service, severity="ERROR")
    errors = {**rate_rule("errors", "-", "30s", 2), "filter": {"severity": "ERROR"}}
    newcomer = {"name": "newcomer", "kind": "match", "filter": {"service": "late"}, "notify": "ops"}
    new_issue = {"name": "new-errors", "kind": "new_issue", "notify": "ops"}
    with WebhookReceiver() as receiver:
        rules = rule_file(tmp_path, receiver, [errors, newcomer, new_issue])
        with running(handle, rules, TRACESTREAM_REDIS_CLUSTER="true") as runner:
            assert "on 3 shard(s)" in runner.stderr()
            for service in SERVICES:  # one error on each master: only their sum crosses the threshold
                writer.log("card declined", service=service, severity="ERROR", trace_id=0x77)
            firing = notified(receiver, "errors", 1)[0]
            (issue,) = notified(receiver, "new-errors", 1)[0]["issues"]  # one issue over 3 shards
            assert (issue["message"], issue["how"]) == ("card declined", "new")
            writer.log("a service that was not there when the runner started", service="late")
            notified(receiver, "newcomer", 1, timeout=20)
        writer.close()
        assert (firing["state"], firing["value"]) == ("firing", 3)
        assert sorted(sample["service"] for sample in firing["samples"]) == sorted(SERVICES)
        command = [str(VENV_BIN / "tracestream"), "alerts", "status", "--json"]
        env = handle.env(TRACESTREAM_REDIS_CLUSTER="true")
        done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=30)
        assert done.returncode == 0, done.stderr
        states = {line["rule"]: line["status"] for line in map(orjson.loads, done.stdout.splitlines())}
        assert states == {"errors": "firing", "newcomer": "firing", "new-errors": "firing"}
        shown = alerts_status(connect_cluster(cluster.url, 10.0, decode=True), handle.stream)
        assert [(rule["rule"], rule["status"]) for rule in shown["rules"]] == [
            ("errors", "firing"), ("new-errors", "firing"), ("newcomer", "firing"),
        ]  # fmt: skip
        assert shown["evaluated"] and len(shown["notifications"]) == 3
        wait_for(lambda: len(receiver.accepted("/hook")) == 3, what="exactly three notifications")


def test_backtest_reads_every_shard(cluster: EmbeddedCluster, tmp_path: Path) -> None:
    """One error on each master: only their sum crosses the threshold, as it does live."""
    handle = RedisHandle(url=cluster.url, stream=f"test:{uuid.uuid4().hex[:12]}")
    writer = RecordWriter(handle, **SHARDED)
    for service in SERVICES:
        writer.log("card declined", service=service, severity="ERROR", trace_id=0x78)
    writer.close()
    errors = {**rate_rule("errors", "-", "30s", 2), "filter": {"severity": "ERROR"}}
    path = tmp_path / "rules.yaml"
    rules = {"notify": {"ops": {"webhook": "http://127.0.0.1:9/h"}}, "rules": [errors]}
    path.write_text(orjson.dumps(rules).decode())  # YAML is a superset of JSON
    command = [str(VENV_BIN / "tracestream"), "alerts", "test", str(path), "--since", "1m", "--json"]
    env = handle.env(TRACESTREAM_REDIS_CLUSTER="true")
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=30)
    assert done.returncode == 0, done.stderr
    found = [orjson.loads(line) for line in done.stdout.splitlines()]
    assert [(n["rule"], n["state"], n["value"]) for n in found][:1] == [("errors", "firing", 3)]
    assert sorted(sample["service"] for sample in found[0]["samples"]) == sorted(SERVICES)

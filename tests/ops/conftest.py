"""The operators' end-to-end world: Postgres and the emulator of `scripts/services up`, a
database of its own migrated by `ecr-audit migrate`, a queue with its dead-letter queue and the
production EventBridge routing in an AWS account of its own, the real worker binary, and a
real Prometheus (Debian's package) scraping it every second with the alert rules loaded.

The scenario (scenario.py) runs once per session; the tests then ask Prometheus and Postgres
what the dashboards and the alert rules ask.

The worker binary is $ECR_AUDIT_BIN, else target/debug/ecr-audit of this checkout.
"""
from __future__ import annotations

import json
import os
import time
import urllib.error
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import boto3
import botocore.config
import pytest
from ops_support import (
    REGION,
    ROOT,
    JOB,
    Process,
    Prometheus,
    World,
    database_url,
    eventually,
    free_port,
    http_text,
    new_account_id,
    psql,
    start_process,
    start_prometheus,
)
from scenario import DRIFTED, REGRESSED, Scenario

ALERT_BUS = "ecr-audit-ops-alerts"


def _require_env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f'{name} is not set: run `eval "$(scripts/services up)"` first (scripts/test does it)', pytrace=False)
    return value


def _binary() -> str:
    binary = os.environ.get("ECR_AUDIT_BIN") or str(ROOT / "target" / "debug" / "ecr-audit")
    if not Path(binary).is_file():
        pytest.fail(f"no worker binary at {binary}: build it (cargo build) or set ECR_AUDIT_BIN", pytrace=False)
    return binary


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    endpoint = _require_env("AWS_ENDPOINT_URL")
    admin_url = _require_env("DATABASE_URL")
    binary = _binary()
    workdir = tmp_path_factory.mktemp("ops")
    started_at = datetime.now(timezone.utc)
    config = botocore.config.Config(retries={"mode": "standard", "total_max_attempts": 3})

    # An account of its own: moto maps AssumeRole credentials to the role's account.
    account = new_account_id()
    base = dict(endpoint_url=endpoint, region_name=REGION, aws_access_key_id="testing",
                aws_secret_access_key="testing", config=config)
    credentials = boto3.client("sts", **base).assume_role(
        RoleArn=f"arn:aws:iam::{account}:role/ecr-audit-ops", RoleSessionName="ops-test")["Credentials"]

    def client(service: str, caller: str | None = None) -> Any:
        made = boto3.client(service, endpoint_url=endpoint, region_name=REGION, config=config,
                            aws_access_key_id=credentials["AccessKeyId"],
                            aws_secret_access_key=credentials["SecretAccessKey"],
                            aws_session_token=credentials["SessionToken"])
        if caller:
            arn = f"arn:aws:iam::{account}:user/{caller}"

            def add_caller(request: Any, **_: Any) -> None:
                request.headers["x-emulator-caller-arn"] = arn

            made.meta.events.register("before-send.*.*", add_caller)
        return made

    assert client("sts").get_caller_identity()["Account"] == account, "the emulator did not honour AssumeRole's account"

    # A database of its own, migrated by the binary under test.
    db_name = f"ops_{account}"
    psql(admin_url, f'CREATE DATABASE "{db_name}"')
    db_url = database_url(admin_url, db_name)
    worker: Process | None = None
    prometheus: Prometheus | None = None
    sqs, events = client("sqs"), client("events")
    queue_url = dlq_url = ""
    rules: list[str] = []
    scenario: Scenario | None = None
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ECR_AUDIT_"))}
        env.update({
            "DATABASE_URL": db_url,
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_REGION": REGION,
            "AWS_ACCESS_KEY_ID": credentials["AccessKeyId"],
            "AWS_SECRET_ACCESS_KEY": credentials["SecretAccessKey"],
            "AWS_SESSION_TOKEN": credentials["SessionToken"],
        })
        migrate = start_process("migrate", [binary, "migrate"], env, workdir / "migrate.log")
        assert migrate.popen.wait(timeout=60) == 0, f"ecr-audit migrate failed:\n{migrate.tail()}"

        # The production routing (as scripts/demo_estate.py and infra/cloudformation set it up).
        dlq_url = sqs.create_queue(QueueName="ecr-audit-ops-dlq")["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        queue_url = sqs.create_queue(QueueName="ecr-audit-ops", Attributes={
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "5"}),
            "VisibilityTimeout": "30"})["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        patterns = {
            "ecr-audit-ecr-events": {"source": ["aws.ecr"], "detail-type": [
                "ECR Image Action", "ECR Image Scan", "ECR Referrer Action", "ECR Scan Resource Change"]},
            "ecr-audit-inspector-events": {"source": ["aws.inspector2"]},
            "ecr-audit-cloudtrail-ecr": {"source": ["aws.ecr"], "detail-type": ["AWS API Call via CloudTrail"],
                                         "detail": {"eventSource": ["ecr.amazonaws.com"]}},
        }
        for name, pattern in patterns.items():
            events.put_rule(Name=name, EventPattern=json.dumps(pattern))
            events.put_targets(Rule=name, Targets=[{"Id": "queue", "Arn": queue_arn}])
            rules.append(name)
        events.create_event_bus(Name=ALERT_BUS)

        worker_addr = f"127.0.0.1:{free_port()}"
        env.update({
            "ECR_AUDIT_QUEUE_URL": queue_url,
            "ECR_AUDIT_HTTP_ADDR": worker_addr,
            "ECR_AUDIT_SIGNING_GRACE": "2s",
            "ECR_AUDIT_RECHECK_POLL": "1s",
            "ECR_AUDIT_RETRY_BASE": "1s",
            "ECR_AUDIT_VISIBILITY_TIMEOUT": "30s",
            "ECR_AUDIT_RECONCILE_INTERVAL": "10s",
            "ECR_AUDIT_QUEUE_METRICS_INTERVAL": "1s",
            "ECR_AUDIT_ALERT_BUS": ALERT_BUS,
            "ECR_AUDIT_LOG_FORMAT": "json",
            "RUST_LOG": os.environ.get("RUST_LOG", "info"),
        })
        worker = start_process("worker", [binary, "worker"], env, workdir / "worker.log")

        def serving() -> bool:
            if not worker.alive():
                raise AssertionError(f"the worker exited with {worker.popen.returncode}:\n{worker.tail()}")
            try:
                return "ecr_audit_" in http_text(f"http://{worker_addr}/metrics")
            except (urllib.error.URLError, ConnectionError):
                return False

        eventually("the worker to serve /metrics", serving, timeout=30, interval=0.2)
        prometheus = start_prometheus(workdir, worker_addr)
        eventually("Prometheus to scrape the worker", lambda: prometheus.value(f'up{{job="{JOB}"}}') == 1, timeout=20)

        scenario = Scenario(client, account, endpoint, queue_url, dlq_url, "ecr-audit-cloudtrail-ecr", queue_arn)
        world = World(account, db_url, worker, worker_addr, prometheus, scenario, started_at)
        run_scenario(world)
        yield world
    finally:
        if scenario is not None:
            scenario.clear_faults()
        if prometheus is not None:
            prometheus.process.stop()
        if worker is not None:
            worker.stop(grace=20)
        for rule in rules:
            events.remove_targets(Rule=rule, Ids=["queue"])
            events.delete_rule(Name=rule)
        for url in (queue_url, dlq_url):
            if url:
                sqs.delete_queue(QueueUrl=url)
        psql(admin_url, f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')


def run_scenario(world: World) -> None:
    """Drives the estate, then waits (boundedly) until what each panel and rule needs has
    happened. A condition not seen in time is recorded, not fatal here: the tests that depend
    on it fail with the precise reason."""
    s, prom, db = world.scenario, world.prometheus, world.database_url
    s.signing_and_scans()
    s.repositories()
    s.first_pushes()

    def control(repository: str, control: str) -> str | None:
        rows = psql(db, f"SELECT status FROM control_results WHERE repository = '{repository}' AND control = '{control}'")
        return rows[0]["status"] if rows else None

    # The regression must start from a recorded PASS.
    eventually(f"ECR.2 PASS on {REGRESSED}", lambda: control(REGRESSED, "ECR.2") == "PASS", timeout=30)
    eventually(f"ECR.3 PASS on {DRIFTED}", lambda: control(DRIFTED, "ECR.3") == "PASS", timeout=30)
    # Throttling while nothing else runs, so that only this push meets it.
    eventually("the queue drained", lambda: s.queue_depth(s.queue_url) == 0, timeout=30)
    s.throttle()
    try:
        s.push(DRIFTED, "ci", "2.0.0")
        eventually("a message retry counted",
                   lambda: (prom.value("sum(ecr_audit_message_retries_total)") or 0) >= 1, timeout=30)
    except AssertionError:
        world.not_seen.append("a message retry counted")
    finally:
        s.end_throttling()
    s.regression()
    s.poison_message()
    s.dead_letter()
    s.late_events()
    s.change_while_routing_is_cut()

    waits = [
        ("the queue drained", lambda: s.queue_depth(s.queue_url) == 0),
        ("an UNSIGNED image recorded", lambda: (prom.value("sum(ecr_audit_unsigned_pushes_total)") or 0) >= 1),
        (f"ECR.2 FAIL on {REGRESSED}", lambda: control(REGRESSED, "ECR.2") == "FAIL"),
        ("a rejected message counted", lambda: (prom.value("sum(ecr_audit_rejected_messages_total)") or 0) >= 1),
        ("the dead-letter queue seen", lambda: (prom.value('max(ecr_audit_queue_messages{queue="dead_letter",state="visible"})') or 0) >= 1),
        ("a regression counted", lambda: (prom.value("sum(ecr_audit_control_regressions_total)") or 0) >= 1),
        (f"reconcile found ECR.3 FAIL on {DRIFTED}", lambda: control(DRIFTED, "ECR.3") == "FAIL"),
        ("reconcile drift counted", lambda: (prom.value("sum(ecr_audit_reconcile_drift_total)") or 0) >= 1),
        ("an alert event published", lambda: (prom.value('sum(ecr_audit_alert_events_total{outcome="published"})') or 0) >= 1),
    ]
    deadline = time.monotonic() + 45
    for what, check in waits:
        try:
            eventually(what, check, timeout=max(1.0, deadline - time.monotonic()))
        except AssertionError:
            world.not_seen.append(what)
    # A few more scrapes, so that rates over the last 30 s cover the whole scenario's tail.
    time.sleep(3)

"""Every query an operator's tools run, run for real after the scenario of scenario.py.

- Every PromQL expression of dashboards/*.json parses (Prometheus answers `success`) and
  returns at least one series.
- Every alert rule is loaded by Prometheus, parses and returns data. How depends on the rule,
  and ALERT_CHECKS says which for each:
    * FIRES: the scenario makes the condition true; the whole expression returns series and
      Prometheus shows the alert pending or firing.
    * OPERANDS: a healthy pipeline cannot make it true within a test (it needs minutes of
      stall, or hours without reconcile). Each operand, taken without its comparison, must
      return series, and the whole expression must return nothing (it is not true here).
    * WORKER_DOWN: checked last, by stopping the worker.
- Every SQL query of the evidence dashboard, with Grafana's `$__timeFilter` expanded as
  Grafana does, runs against the test database and returns rows; single-number panels
  (counts) must count more than zero, since the scenario made each of them happen.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pytest
from ops_support import JOB, World, alert_rules, dashboard_promql, dashboard_sql, eventually, grafana_promql, grafana_sql, psql
from scenario import DRIFTED, REGRESSED


@dataclass(frozen=True)
class Fires:
    labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Operands:
    operands: tuple[str, ...]


@dataclass(frozen=True)
class FollowsCounter:
    """True exactly for the label values whose counter moved in the window: the scenario may or
    may not move it (its deliberate throttling can outlast the SDK's retries or not)."""
    counter: str
    label: str


WORKER_DOWN = "checked by test_worker_down_fires_when_the_worker_stops"

ALERT_CHECKS: dict[str, object] = {
    # scenario: images pushed to repositories without a signing rule stay unsigned past the 2 s grace.
    "EcrAuditUnsignedImagePushed": Fires(),
    # scenario: mallory sets payments/web to MUTABLE (ECR.2 PASS -> FAIL).
    "EcrAuditControlRegressed": Fires(labels=(("control", "ECR.2"),)),
    # scenario: twelve push events delivered twenty minutes late.
    "EcrAuditPipelineLagging": Fires(),
    # scenario: a message put straight into the dead-letter queue.
    "EcrAuditDeadLetterQueueNotEmpty": Fires(),
    # needs 5 minutes of visible messages without a commit: operands only.
    "EcrAuditPipelineStalled": Operands((
        'max(ecr_audit_queue_messages{queue="main",state="visible"})',
        "time() - max(ecr_audit_last_commit_timestamp_seconds)",
    )),
    # needs 3 hours without a successful sweep: operands only (a sweep ran at start-up).
    "EcrAuditReconcileStale": Operands((
        "time() - max(ecr_audit_reconcile_last_success_timestamp_seconds)",
        'max(up{job="ecr-audit"})',
    )),
    # needs EventBridge refusing alert events for 15 minutes: operands only.
    "EcrAuditAlertEventsStuck": Operands(("max(ecr_audit_alert_backlog)",)),
    "EcrAuditWorkerDown": WORKER_DOWN,
    # The scenario blinds, denies and disguises nothing: operands only here; the promtool tests
    # (infra/prometheus/tests/) make each fire, and tests/it/degrade.rs and tests/it/attacks.rs
    # move the counters through the real worker.
    "EcrAuditControlUnknown": Operands(("increase(ecr_audit_control_blinded_total[15m])",)),
    "EcrAuditAccessDenied": Operands(("increase(ecr_audit_aws_access_denied_total[15m])",)),
    # scenario: DescribeImages throttled for 60 calls; whether a read outlasts the retries
    # depends on timing, so the rule must be true exactly for the operations whose counter moved.
    "EcrAuditAwsApiUnavailable": FollowsCounter("ecr_audit_aws_unavailable_total", "operation"),
    # the scenario restores no control and runs no ENHANCED registry: both stay quiet.
    "EcrAuditControlRegressedAndRestored": Operands(("ecr_audit_control_regressed_and_restored_total",)),
    "EcrAuditUnsignedImageInUse": Operands(('ecr_audit_images_in_use{signature=~"UNSIGNED|UNTRUSTED|FAILED"}',)),
    # needs a failure older than ECR_AUDIT_FAILING_GRACE (24 h by default) and 15 minutes of it:
    # operands only; infra/prometheus/tests/failing_test.yml makes it fire, and
    # tests/it/failing.rs moves the gauge through the real worker.
    "EcrAuditControlFailing": Operands(("max by (control) (ecr_audit_failing_findings_overdue)",)),
    # the scenario lets no exception expire and loads no exceptions file: operands only; the
    # promtool tests make both fire and tests/it/exceptions.rs moves the counters.
    "EcrAuditExceptionExpired": Operands(('ecr_audit_exceptions_ended_total{cause="expired"}',)),
    "EcrAuditExceptionsFileInvalid": Operands(("ecr_audit_exceptions_file_errors_total",)),
    # The scenario's worker serves no deploy policy: the counters exist at zero (operands only);
    # the promtool tests (infra/prometheus/tests/verdicts_test.yml) make both fire.
    "EcrAuditDeployDenied": Operands(('sum by (mode) (increase(ecr_audit_deploy_verdicts_total{decision="deny"}[15m]))',)),
    "EcrAuditDeployWouldBeDenied": Operands((
        'sum(increase(ecr_audit_deploy_verdicts_total{decision="warn",mode="audit"}[1h]))',
    )),
    # Without a deploy policy nothing is recorded and no view is loaded: operands only; the
    # promtool tests make both fire, tests/it/verdicts.rs checks the
    # recorded count against the evidence and the gauge against the clock.
    # The scenario's worker signs no heads: operands only; the promtool tests
    # (infra/prometheus/tests/evidence_heads_test.yml) make both fire, and tests/it/merkle.rs
    # checks the counter against the heads the worker task made.
    "EcrAuditEvidenceHeadsFailing": Operands((
        'sum(increase(ecr_audit_evidence_heads_total{outcome="failed"}[30m]))',
        'sum(increase(ecr_audit_evidence_heads_total{outcome=~"signed|unsigned"}[30m]))',
    )),
    "EcrAuditEvidenceHeadNotAnchored": Operands((
        'sum(increase(ecr_audit_evidence_head_anchors_total{outcome="failed"}[1h]))',
    )),
    "EcrAuditDeployVerdictsNotRecorded": Operands((
        'sum(increase(ecr_audit_deploy_verdict_records_total{outcome="dropped"}[15m]))',
    )),
    # Without a policy the gauge stays 0, which the rule leaves out: the series exists.
    "EcrAuditVerdictViewStale": Operands(("ecr_audit_verdict_view_fresh_timestamp_seconds",)),
    "EcrAuditImageDisguisedAsArtifact": Operands((
        'increase(ecr_audit_distrusted_hints_total{hint=~"subject_on_image|missing_subject|signature_tag|runnable_content"}[15m])',
    )),
}

PROMQL = dashboard_promql()
SQL = dashboard_sql()
RULES = alert_rules()


def _normalised(expr: str) -> str:
    return re.sub(r"\s+", "", expr)


def _describe(world: World) -> str:
    missing = f"\nscenario conditions not seen in time: {world.not_seen}" if world.not_seen else ""
    return f"{missing}\n--- worker log (tail) ---\n{world.worker_log()}"


def test_every_alert_rule_has_a_check() -> None:
    assert set(RULES) == set(ALERT_CHECKS), "add the new alert to ALERT_CHECKS, saying how the scenario proves it"
    for name, check in ALERT_CHECKS.items():
        if isinstance(check, Operands):
            for operand in check.operands:
                assert _normalised(operand) in _normalised(RULES[name]), f"{operand!r} is not part of {name}"
        if isinstance(check, FollowsCounter):
            assert check.counter in RULES[name], f"{check.counter} is not part of {name}"


def test_prometheus_loaded_every_rule(world: World) -> None:
    loaded = {rule["name"]: rule for group in world.prometheus.rules() for rule in group["rules"]}
    assert set(RULES) <= set(loaded), f"not loaded: {set(RULES) - set(loaded)}"
    for name in RULES:
        assert loaded[name]["health"] == "ok", f"{name}: {loaded[name].get('lastError')}"


@pytest.mark.parametrize("query", PROMQL, ids=[f"{q.source}:{q.where}" for q in PROMQL])
def test_dashboard_expression_returns_data(world: World, query) -> None:
    elapsed = int((datetime.now(timezone.utc) - world.started_at).total_seconds()) + 5
    expr = grafana_promql(query.expr, elapsed)
    answer = world.prometheus.query(expr)
    assert answer.get("status") == "success", f"{expr!r} does not parse: {answer.get('error')}"
    assert answer["data"]["result"], f"{expr!r} returned no series{_describe(world)}"


@pytest.mark.parametrize("name", sorted(RULES))
def test_alert_expression(world: World, name: str) -> None:
    expr, check = RULES[name], ALERT_CHECKS[name]
    answer = world.prometheus.query(expr)
    assert answer.get("status") == "success", f"{name} does not parse: {answer.get('error')}"
    result = answer["data"]["result"]
    if isinstance(check, Fires):
        assert result, f"{name}: the scenario should make it true, but it returned nothing{_describe(world)}"
        wanted = dict(check.labels)
        assert any(wanted.items() <= series["metric"].items() for series in result), f"{name}: no series with {wanted}: {result}"
        states = eventually(f"{name} pending or firing",
                            lambda: {a["state"] for a in world.prometheus.alerts() if a["labels"].get("alertname") == name},
                            timeout=10)
        assert states & {"pending", "firing"}, f"{name}: {states}"
    elif isinstance(check, Operands):
        for operand in check.operands:
            assert world.prometheus.series(operand), f"{name}: operand {operand!r} returned no series{_describe(world)}"
        assert not result, f"{name} is true in a healthy run: {result}"
    elif isinstance(check, FollowsCounter):
        moved = world.prometheus.query(f"sum by ({check.label}) (rate({check.counter}[5m])) > 0")["data"]["result"]
        assert world.prometheus.series(check.counter), f"{name}: {check.counter} has no series{_describe(world)}"
        assert {s["metric"][check.label] for s in result} == {s["metric"][check.label] for s in moved}, (name, result, moved)
    else:
        assert check == WORKER_DOWN
        assert world.prometheus.value(f'up{{job="{JOB}"}}') == 1
        assert not result, f"{name} is true while the worker runs: {result}"


@pytest.mark.parametrize("query", SQL, ids=[q.panel for q in SQL])
def test_evidence_sql_returns_rows(world: World, query) -> None:
    start = world.started_at - timedelta(hours=1)
    end = datetime.now(timezone.utc) + timedelta(minutes=5)
    rows = psql(world.database_url, grafana_sql(query.sql, start, end))
    assert rows, f"{query.panel}: no rows{_describe(world)}"
    if len(rows) == 1 and len(rows[0]) == 1:
        (value,) = rows[0].values()
        assert float(value) > 0, f"{query.panel}: counted {value}, the scenario made it happen{_describe(world)}"


def _panel_rows(world: World, title: str, panel_type: str = "table") -> list[dict[str, str]]:
    (query,) = [q for q in SQL if q.title == title and q.panel_type == panel_type]
    start = world.started_at - timedelta(hours=1)
    return psql(world.database_url, grafana_sql(query.sql, start, datetime.now(timezone.utc) + timedelta(minutes=5)))


def test_evidence_panels_show_what_the_scenario_did(world: World) -> None:
    """Not only rows: the rows an auditor looks for, with the columns the panels promise."""
    def person(name: str) -> str:
        return f"arn:aws:iam::{world.account}:user/{name}"

    transitions = _panel_rows(world, "Latest control transitions")
    assert {"repository": REGRESSED, "control": "ECR.2", "from": "PASS", "to": "FAIL", "actor": person("mallory")}.items() \
        <= next((r for r in transitions if r["repository"] == REGRESSED and r["to"] == "FAIL"), {}).items(), transitions
    drift = [r for r in transitions if r["repository"] == DRIFTED and r["control"] == "ECR.3" and r["to"] == "FAIL"]
    assert drift and drift[0]["from"] == "PASS" and drift[0]["actor"] == "unattributed (observed by reconcile)", \
        f"the lifecycle policy deleted while routing was cut: {drift}{_describe(world)}"

    unsigned = _panel_rows(world, "Images without a trusted signature")
    hotfix = [r for r in unsigned if r["repository"] == "legacy/tools" and r["tag"] == "hotfix"]
    assert hotfix and hotfix[0]["signature"] == "UNSIGNED" and hotfix[0]["pushed_by"] == person("alice"), unsigned
    assert hotfix[0]["pushed_at"] and hotfix[0]["unsigned since"], hotfix

    failing = _panel_rows(world, "Failing repositories, with reasons")
    assert any(r["repository"] == "vendor/mirror" and r["control"] == "ECR.5" and r["status"] == "UNKNOWN" and r["reason"]
               for r in failing), failing
    assert any(r["repository"] == "legacy/tools" and r["control"] == "ECR.1" and r["status"] == "FAIL" for r in failing), failing


def test_worker_down_fires_when_the_worker_stops(world: World) -> None:
    """Last on purpose: stops the worker. Prometheus then fails to scrape it and `up` is 0."""
    name = "EcrAuditWorkerDown"
    assert world.worker.stop(grace=20) == 0, f"the worker did not stop cleanly on SIGTERM:\n{world.worker_log()}"
    down = eventually("up == 0 after the worker stopped",
                      lambda: world.prometheus.series(RULES[name]), timeout=15)
    assert [series["metric"].get("instance") for series in down] == [world.worker_addr]
    states = eventually(f"{name} pending", lambda: {a["state"] for a in world.prometheus.alerts()
                                                    if a["labels"].get("alertname") == name}, timeout=10)
    assert "pending" in states, states

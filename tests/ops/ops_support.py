"""Helpers of the operators' end-to-end test (tests/ops): the real worker, a real Prometheus,
the emulator and Postgres, and what the dashboards and alert rules ask of them.

A module of its own, not conftest.py, so that `import` never picks up another test
directory's conftest when several are collected together.
"""
from __future__ import annotations

import csv
import io
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "infra" / "prometheus" / "ecr-audit-rules.yml"
DASHBOARDS = ROOT / "dashboards"
REGION = "us-east-1"
# The scrape job name the alert rules expect.
JOB = "ecr-audit"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def new_account_id() -> str:
    """A random account id, so the test shares no emulator state with anyone else."""
    return "5" + "".join(str(secrets.randbelow(10)) for _ in range(11))


def eventually(what: str, check: Callable[[], Any], timeout: float, interval: float = 0.5) -> Any:
    """Polls `check` until it returns something truthy; fails with `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


# ------------------------------------------------------------------ what the artefacts ask
@dataclass(frozen=True)
class PromQuery:
    source: str  # "ecr-posture.json" or the rules file
    where: str  # panel title / refId, or alert name
    expr: str


@dataclass(frozen=True)
class SqlQuery:
    panel: str
    sql: str
    title: str = ""
    panel_type: str = ""


def _panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board.get("panels", []):
        yield panel
        yield from panel.get("panels", [])  # collapsed rows keep their panels inside


def _targets(key: str) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(dashboard file name, panel, target) for every query target that has `key`."""
    for path in sorted(DASHBOARDS.glob("*.json")):
        board = json.loads(path.read_text())
        for panel in _panels(board):
            for target in panel.get("targets", []):
                if key in target:
                    yield path.name, panel, target


def dashboard_promql() -> list[PromQuery]:
    return [PromQuery(name, f"{panel['title']} [{target['refId']}]", target["expr"])
            for name, panel, target in _targets("expr")]


def dashboard_sql() -> list[SqlQuery]:
    return [SqlQuery(f"{panel['title']} [{target['refId']}]", target["rawSql"], panel["title"], panel["type"])
            for _, panel, target in _targets("rawSql")]


def alert_rules() -> dict[str, str]:
    """Alert name -> expression, as written in the rules file."""
    document = yaml.safe_load(RULES.read_text())
    return {rule["alert"]: rule["expr"] for group in document["groups"] for rule in group["rules"] if "alert" in rule}


# Grafana's own variables in PromQL, replaced the way Grafana would for a short time range.
# With a 1 s scrape interval Grafana's $__rate_interval would be about 15 s; 30 s keeps
# enough samples in each window while still looking only at the scenario's minute.
GRAFANA_PROMQL_VARIABLES = {"$__rate_interval": "30s", "$__interval": "15s"}


def grafana_promql(expr: str, range_seconds: int) -> str:
    """The expression as Grafana sends it to Prometheus; fails on any variable it does not know."""
    out = expr.replace("$__range", f"{range_seconds}s")
    for name, value in GRAFANA_PROMQL_VARIABLES.items():
        out = out.replace(name, value)
    leftover = re.findall(r"\$\{?\w+", out)
    assert not leftover, f"unsupported dashboard variable(s) {leftover} in {expr!r}"
    return out


def grafana_sql(sql: str, start: datetime, end: datetime) -> str:
    """The SQL as Grafana's PostgreSQL data source expands it: `$__timeFilter(col)` becomes
    `col BETWEEN '<from>' AND '<to>'` (RFC 3339, UTC). Any other macro or variable fails."""

    def stamp(moment: datetime) -> str:
        return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

    out = re.sub(r"\$__timeFilter\(([^)]+)\)", lambda m: f"{m.group(1)} BETWEEN '{stamp(start)}' AND '{stamp(end)}'", sql)
    leftover = re.findall(r"\$\{?\w+", out)
    assert not leftover, f"unsupported Grafana macro or variable {leftover} in {sql!r}"
    return out


# ------------------------------------------------------------------ Postgres through psql
def psql_binary() -> str:
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin/psql"), reverse=True):
        return str(candidate)
    found = shutil.which("psql")
    if not found:
        raise RuntimeError("psql not found (scripts/services installs PostgreSQL)")
    return found


def psql(url: str, sql: str) -> list[dict[str, str]]:
    """Runs one statement; returns the rows as dicts of text (psql --csv)."""
    done = subprocess.run(
        [psql_binary(), "-X", "-q", "-v", "ON_ERROR_STOP=1", "--csv", "-d", url, "-c", sql],
        capture_output=True, text=True, timeout=60,
    )
    if done.returncode != 0:
        raise AssertionError(f"psql failed ({done.returncode}): {done.stderr.strip()}\n--- SQL ---\n{sql}")
    if not done.stdout.strip():
        return []
    return list(csv.DictReader(io.StringIO(done.stdout)))


def database_url(admin_url: str, name: str) -> str:
    parts = urllib.parse.urlsplit(admin_url)
    return urllib.parse.urlunsplit(parts._replace(path=f"/{name}"))


# ------------------------------------------------------------------ HTTP
def http_json(url: str, data: dict[str, Any] | None = None, method: str | None = None, timeout: float = 10) -> Any:
    body = json.dumps(data).encode() if data is not None else None
    request = urllib.request.Request(url, data=body, method=method or ("POST" if body else "GET"),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.load(response)


def http_text(url: str, timeout: float = 5) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read().decode()


# ------------------------------------------------------------------ processes
@dataclass
class Process:
    """A child process with its log file; stopped with SIGTERM, then SIGKILL."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, chars: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, grace: float = 15) -> int | None:
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)
        return self.popen.returncode


def start_process(name: str, argv: list[str], env: dict[str, str], log: Path) -> Process:
    with log.open("wb") as output:
        popen = subprocess.Popen(argv, stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    return Process(name, popen, log)


# ------------------------------------------------------------------ Prometheus
@dataclass
class Prometheus:
    url: str
    process: Process
    data_dir: Path
    queried: list[str] = field(default_factory=list)

    def query(self, expr: str) -> dict[str, Any]:
        """/api/v1/query at now; returns the whole answer (status, data or error)."""
        self.queried.append(expr)
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return json.load(response)
        except urllib.error.HTTPError as error:  # 400/422 carry the parse error as JSON
            return json.load(error)

    def series(self, expr: str) -> list[dict[str, Any]]:
        answer = self.query(expr)
        assert answer.get("status") == "success", f"{expr!r}: {answer.get('errorType')}: {answer.get('error')}"
        result = answer["data"]["result"]
        if answer["data"]["resultType"] == "scalar":
            return [{"metric": {}, "value": result}]
        return result

    def value(self, expr: str) -> float | None:
        found = self.series(expr)
        return float(found[0]["value"][1]) if found else None

    def alerts(self) -> list[dict[str, Any]]:
        return http_json(f"{self.url}/api/v1/alerts")["data"]["alerts"]

    def rules(self) -> list[dict[str, Any]]:
        return http_json(f"{self.url}/api/v1/rules")["data"]["groups"]


def prometheus_binary() -> str:
    found = shutil.which("prometheus") or ("/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None)
    if not found:
        raise RuntimeError("prometheus is not installed: run scripts/check-prometheus (it installs Debian's package)")
    return found


def start_prometheus(workdir: Path, worker_addr: str) -> Prometheus:
    """A throwaway Prometheus scraping the worker every second under the job name the rules
    expect, with the rules file loaded and evaluated every second."""
    port = free_port()
    data = workdir / "prometheus-data"
    data.mkdir(parents=True, exist_ok=True)
    config = workdir / "prometheus.yml"
    config.write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [{"job_name": "ecr-audit", "static_configs": [{"targets": [worker_addr]}]}],
    }))
    process = start_process("prometheus", [
        prometheus_binary(),
        f"--config.file={config}",
        f"--storage.tsdb.path={data}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--storage.tsdb.retention.time=1d",
        "--log.level=warn",
    ], dict(os.environ), workdir / "prometheus.log")
    prometheus = Prometheus(f"http://127.0.0.1:{port}", process, data)

    def ready() -> bool:
        if not process.alive():
            raise AssertionError(f"prometheus exited:\n{process.tail()}")
        try:
            return http_text(f"{prometheus.url}/-/ready").strip() != ""
        except (urllib.error.URLError, ConnectionError):
            return False

    eventually("prometheus to be ready", ready, timeout=30, interval=0.2)
    return prometheus


# ------------------------------------------------------------------ the world of a session
@dataclass
class World:
    account: str
    database_url: str
    worker: Process
    worker_addr: str
    prometheus: Prometheus
    scenario: Any  # scenario.Scenario
    started_at: datetime
    # Conditions the scenario waited for and did not see within its time (reported by tests).
    not_seen: list[str] = field(default_factory=list)

    def worker_log(self) -> str:
        return self.worker.tail(6000)

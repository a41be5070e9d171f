"""Push-to-alert latency and many workers, end to end through the deployed stack.

`scripts/bench-latency` runs this (docs/PERFORMANCE.md, "Push to alert, end to end"). For each
worker count asked for, in an emulated account of its own:

1. `infra/cloudformation/central.yaml` is deployed into the emulator (routing only, with its
   alert bus), a fresh database is migrated, and N `ecr-audit worker` processes consume the
   stack's queue as its TaskRole, publishing to its alert bus;
2. a rule on the alert bus sends every `UNSIGNED` alert to a queue of this script, read by a
   thread that notes when each arrives;
3. PUSHES pushes are spread evenly over SPREAD seconds (`PutImage` through the real ECR API of
   the emulator, which emits the `ECR Image Action` and the CloudTrail record at once); no
   signing is configured and `ECR_AUDIT_SIGNING_GRACE=0s`, so every push is an `UNSIGNED`
   alert as soon as the worker has judged it;
4. per push: push → committed (the alert's `recorded_at`, written in the commit's transaction)
   and push → alert received; then duplicates (an alert for a digest received twice: the
   outbox sends each once, at least once on the wire) and lost pushes (no alert).

The push time is the moment `PutImage` returned, on this machine's clock, which the worker and
Postgres share. Other settings are the defaults, except the sweep (off: it would compete with
the pushes, and is measured on its own in docs/PERFORMANCE.md).
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "infra"))

import boto3  # noqa: E402
from infra_support import REGION, delete, deploy, new_account_id  # noqa: E402


def assume(endpoint: str, role_arn: str) -> dict[str, str]:
    sts = boto3.client("sts", endpoint_url=endpoint, region_name=REGION,
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    return sts.assume_role(RoleArn=role_arn, RoleSessionName="bench")["Credentials"]


def client(endpoint: str, credentials: dict[str, str], service: str) -> Any:
    return boto3.client(service, endpoint_url=endpoint, region_name=REGION,
                        aws_access_key_id=credentials["AccessKeyId"],
                        aws_secret_access_key=credentials["SecretAccessKey"],
                        aws_session_token=credentials["SessionToken"])


def manifest(seed: str) -> str:
    return json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": 7,
                   "digest": "sha256:" + seed.encode().hex().ljust(64, "0")[:64]},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "size": 100,
                    "digest": "sha256:" + "ab" * 32}],
    })


def fresh_database(admin_url: str) -> str:
    name = f"latency_{secrets.token_hex(4)}"
    subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", admin_url, "-c", f'CREATE DATABASE "{name}"'], check=True)
    return urllib.parse.urlunsplit(urllib.parse.urlsplit(admin_url)._replace(path=f"/{name}"))


@dataclass
class Alerts:
    """Arrival times of the UNSIGNED alerts, by digest, read from the alert queue."""
    sqs: Any
    url: str
    arrived: dict[str, list[float]] = field(default_factory=dict)
    committed: dict[str, float] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            messages = self.sqs.receive_message(QueueUrl=self.url, MaxNumberOfMessages=10,
                                                WaitTimeSeconds=1).get("Messages", [])
            now = time.time()
            for message in messages:
                detail = json.loads(message["Body"])["detail"]
                self.arrived.setdefault(detail["digest"], []).append(now)
                self.committed[detail["digest"]] = datetime.fromisoformat(detail["recorded_at"]).timestamp()
            if messages:
                self.sqs.delete_message_batch(QueueUrl=self.url, Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)])


def alert_queue(sqs: Any, events: Any, bus_arn: str) -> str:
    url = sqs.create_queue(QueueName=f"alerts-{secrets.token_hex(3)}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    bus = bus_arn.rsplit("/", 1)[1]
    events.put_rule(Name="bench-unsigned", EventBusName=bus, EventPattern=json.dumps(
        {"source": ["ecr-audit"], "detail": {"alert": ["UNSIGNED"]}}))
    events.put_targets(Rule="bench-unsigned", EventBusName=bus, Targets=[{"Id": "q", "Arn": arn}])
    return url


def lock_held(addresses: list[str]) -> tuple[float, float]:
    """Batches and seconds of evidence head lock held, summed over the workers' /metrics."""
    batches = seconds = 0.0
    for address in addresses:
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as answer:
            for line in answer.read().decode().splitlines():
                if line.startswith("ecr_audit_evidence_lock_held_seconds_count"):
                    batches += float(line.rsplit(" ", 1)[1])
                elif line.startswith("ecr_audit_evidence_lock_held_seconds_sum"):
                    seconds += float(line.rsplit(" ", 1)[1])
    return batches, seconds


def start_workers(count: int, env: dict[str, str], log_dir: Path) -> list[tuple[subprocess.Popen[bytes], str]]:
    """Starts `count` workers; returns each with the address of its HTTP server (/metrics)."""
    binary = os.environ.get("ECR_AUDIT_BIN") or str(ROOT / "target" / "release" / "ecr-audit")
    subprocess.run([binary, "migrate"], env=env, check=True, capture_output=True)
    workers = []
    for index in range(count):
        address = f"127.0.0.1:{free_port()}"
        worker_env = {**env, "ECR_AUDIT_HTTP_ADDR": address}
        with (log_dir / f"worker-{index}.log").open("wb") as log:
            process = subprocess.Popen([binary, "worker"], env=worker_env, stdout=log, stderr=subprocess.STDOUT)
            workers.append((process, address))
    time.sleep(3)  # start-up: migrations checked, queue attributes read
    for worker, _ in workers:
        if worker.poll() is not None:
            raise SystemExit(f"a worker exited at start-up; see {log_dir}")
    return workers


def free_port() -> int:
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))]


def push_evenly(ecr: Any, pushes: int, spread: float) -> dict[str, float]:
    """Pushes over `spread` seconds into 10 repositories; returns digest -> when PutImage returned."""
    repositories = [f"bench/app-{n}" for n in range(10)]
    for name in repositories:
        ecr.create_repository(repositoryName=name, imageTagMutability="IMMUTABLE")
    time.sleep(2)  # the repositories' own events are processed before the clock starts
    pushed: dict[str, float] = {}
    start = time.monotonic()
    for n in range(pushes):
        due = start + n * spread / pushes
        time.sleep(max(0.0, due - time.monotonic()))
        answer = ecr.put_image(repositoryName=repositories[n % 10], imageManifest=manifest(secrets.token_hex(8)),
                               imageTag=f"v{n}")
        pushed[answer["image"]["imageId"]["imageDigest"]] = time.time()
    return pushed


def run(workers: int, pushes: int, spread: float, endpoint: str, admin_url: str) -> dict[str, Any]:
    account = new_account_id()
    deployer = assume(endpoint, f"arn:aws:iam::{account}:role/deployer")
    stack = deploy(lambda service, _a: client(endpoint, deployer, service), account, "central.yaml",
                   {"DeployService": "false", "CreateAlertBus": "true"})
    task = assume(endpoint, stack.outputs["TaskRoleArn"])
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("AWS_ACCESS", "AWS_SECRET", "AWS_SESSION", "ECR_AUDIT_"))},
           "AWS_ACCESS_KEY_ID": task["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": task["SecretAccessKey"],
           "AWS_SESSION_TOKEN": task["SessionToken"], "DATABASE_URL": fresh_database(admin_url),
           "ECR_AUDIT_QUEUE_URL": stack.outputs["QueueUrl"], "ECR_AUDIT_ALERT_BUS": stack.outputs["AlertBusArn"],
           "ECR_AUDIT_SIGNING_GRACE": "0s", "ECR_AUDIT_RECONCILE_INTERVAL": "0s", "ECR_AUDIT_LOG_FORMAT": "json",
           "RUST_LOG": "warn"}
    alerts = Alerts(client(endpoint, deployer, "sqs"), "")
    alerts.url = alert_queue(alerts.sqs, client(endpoint, deployer, "events"), stack.outputs["AlertBusArn"])
    log_dir = ROOT / "target" / "bench-latency" / f"{workers}-workers"
    log_dir.mkdir(parents=True, exist_ok=True)
    processes = start_workers(workers, env, log_dir)
    reader = threading.Thread(target=alerts.run, daemon=True)
    reader.start()
    try:
        began = time.monotonic()
        pushed = push_evenly(client(endpoint, deployer, "ecr"), pushes, spread)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not pushed.keys() <= alerts.arrived.keys():
            time.sleep(0.2)
        drained = time.monotonic() - began
        time.sleep(3)  # a duplicate would arrive now
        batches, held = lock_held([address for _, address in processes])
    finally:
        alerts.stop.set()
        for process, _ in processes:
            process.terminate()
        for process, _ in processes:
            process.wait(timeout=40)
        delete(lambda service, _a: client(endpoint, deployer, service), stack)
    reader.join(timeout=5)
    received = [d for d in pushed if d in alerts.arrived]
    to_alert = [alerts.arrived[d][0] - pushed[d] for d in received]
    to_commit = [alerts.committed[d] - pushed[d] for d in received]
    return {
        "workers": workers, "pushes": pushes, "spread_s": spread,
        "lost": len(pushed) - len(received),
        "duplicates": sum(len(alerts.arrived[d]) - 1 for d in received),
        "foreign": len(set(alerts.arrived) - set(pushed)),
        "drained_s": round(drained, 2),
        "alerts_per_s": round(len(received) / drained, 1) if drained else 0.0,
        **{f"commit_p{int(q * 100)}_ms": round(1000 * percentile(to_commit, q)) for q in (0.5, 0.95, 0.99) if to_commit},
        **{f"alert_p{int(q * 100)}_ms": round(1000 * percentile(to_alert, q)) for q in (0.5, 0.95, 0.99) if to_alert},
        "alert_mean_ms": round(1000 * statistics.mean(to_alert)) if to_alert else None,
        "batches": int(batches),
        "lock_held_mean_ms": round(1000 * held / batches, 2) if batches else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="1", help="comma-separated worker counts, e.g. 1,2,4")
    parser.add_argument("--pushes", type=int, default=500)
    parser.add_argument("--spread", type=float, default=60.0, help="seconds the pushes are spread over")
    args = parser.parse_args()
    endpoint, admin_url = os.environ["AWS_ENDPOINT_URL"], os.environ["DATABASE_URL"]
    rows = [run(int(n), args.pushes, args.spread, endpoint, admin_url) for n in args.workers.split(",")]
    columns = list(rows[0])
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(str(row.get(c)) for c in columns) + " |")
    # For scripts/bench's one table (scripts/bench_table.py).
    for row in rows:
        for key in ("commit_p99_ms", "alert_p99_ms", "lost", "duplicates", "lock_held_mean_ms"):
            if row.get(key) is not None:
                print(f"figure latency_{row['workers']}w_{key} {row[key]}")


if __name__ == "__main__":
    main()

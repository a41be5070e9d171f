#!/usr/bin/env python3
"""What a reconcile sweep of an AWS Organization costs, at the emulator (docs/PERFORMANCE.md).

Creates an organization in a management account of its own with N-1 member accounts (one
repository each), then runs `ecr-audit reconcile` twice with Organizations discovery over
three regions, as the central account, and prints per sweep: the wall time, every AWS call
the emulator received (by operation), and the AssumeRole requests with the external id.

Run with the services up (`source target/services/env.sh`) and the binary built:
    .venv/bin/python scripts/bench-organization.py [ACCOUNTS]   (default 60)
It works in a fresh database (`orgbench_<random>`) and fresh account ids, so it can run
beside the tests on the shared emulator; the database is dropped at the end.
"""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
import urllib.request
from collections import Counter

import boto3

ENDPOINT = os.environ["AWS_ENDPOINT_URL"]
REGIONS = "us-east-1,eu-west-1,eu-central-1"
EXTERNAL_ID = "bench-external-id"
BINARY = os.environ.get("ECR_AUDIT_BIN", "target/debug/ecr-audit")


def credentials(account: str) -> dict[str, str]:
    sts = boto3.client("sts", endpoint_url=ENDPOINT, region_name="us-east-1")
    return sts.assume_role(RoleArn=f"arn:aws:iam::{account}:role/bench-setup", RoleSessionName="bench-setup")["Credentials"]


def client(account: str, service: str):
    c = credentials(account)
    return boto3.client(service, endpoint_url=ENDPOINT, region_name="us-east-1", aws_access_key_id=c["AccessKeyId"],
                        aws_secret_access_key=c["SecretAccessKey"], aws_session_token=c["SessionToken"])


def control(method: str, path: str):
    return json.load(urllib.request.urlopen(urllib.request.Request(ENDPOINT + path, method=method)))


def psql(database_url: str, sql: str) -> None:
    subprocess.run(["psql", database_url, "-q", "-c", sql], check=True)


def main() -> None:
    accounts = int(sys.argv[1]) if len(sys.argv) > 1 else 60
    management = f"46{random.randrange(10**10):010d}"
    org = client(management, "organizations")
    org.create_organization(FeatureSet="ALL")
    for i in range(accounts - 1):
        member = org.create_account(Email=f"bench{i}@example.com", AccountName=f"bench{i}")["CreateAccountStatus"]["AccountId"]
        client(member, "ecr").create_repository(repositoryName="bench-app")

    base = os.environ["DATABASE_URL"].rsplit("/", 1)[0]
    database = f"orgbench_{management}"
    psql(f"{base}/postgres", f"CREATE DATABASE {database}")
    c = credentials(management)
    env = dict(os.environ, AWS_ACCESS_KEY_ID=c["AccessKeyId"], AWS_SECRET_ACCESS_KEY=c["SecretAccessKey"],
               AWS_SESSION_TOKEN=c["SessionToken"], ECR_AUDIT_ACCOUNT_ID=management, ECR_AUDIT_ORGANIZATION="true",
               ECR_AUDIT_ROLE_NAME_PATTERN="arn:aws:iam::{account}:role/ecr-audit-reader",
               ECR_AUDIT_EXTERNAL_ID=EXTERNAL_ID, ECR_AUDIT_REGIONS=REGIONS,
               DATABASE_URL=f"{base}/{database}", ECR_AUDIT_LOG_FORMAT="json", RUST_LOG="warn")
    try:
        subprocess.run([BINARY, "migrate"], env=env, check=True)
        for sweep in (1, 2):
            control("DELETE", "/_emulator/requests")
            control("DELETE", "/_emulator/assume-role-requests")
            started = time.monotonic()
            run = subprocess.run([BINARY, "reconcile"], env=env, capture_output=True, text=True)
            elapsed = time.monotonic() - started
            totals: Counter[str] = Counter()
            for counts in control("GET", "/_emulator/requests?by=account").values():
                totals.update(counts)
            assumed = control("GET", "/_emulator/assume-role-requests")["requests"]
            print(f"sweep {sweep}: {elapsed:.1f} s, exit {run.returncode}: {run.stdout.strip()}")
            print(f"  AWS calls: {sum(totals.values())}; AssumeRole {len(assumed)} "
                  f"({sum(1 for r in assumed if r['externalId'] == EXTERNAL_ID)} with the external id)")
            print("  " + ", ".join(f"{k} {v}" for k, v in totals.most_common()))
            if run.returncode:
                print(run.stderr[-2000:])
    finally:
        psql(f"{base}/postgres", f"DROP DATABASE IF EXISTS {database}")


if __name__ == "__main__":
    main()

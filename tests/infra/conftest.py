"""Fixtures for the CloudFormation template tests.

The stack tests deploy the templates into the AWS emulator that `scripts/services up`
starts (AWS_ENDPOINT_URL). That server is shared with other tests and the demo, so these
tests never reset it: each session works in accounts of its own (random 12-digit ids,
chosen per request with the `x-moto-account-id` header), under unique stack names, and
deletes its stacks at the end.
"""
from __future__ import annotations

import os
from typing import Iterator

import pytest
from infra_support import ClientFactory, Stack, check_account_isolation, client_factory, delete, deploy, new_account_id


@pytest.fixture(scope="session")
def aws() -> ClientFactory:
    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    if not endpoint:
        pytest.fail(
            'AWS_ENDPOINT_URL is not set: run `eval "$(scripts/services up)"` first (scripts/check-infra does it)',
            pytrace=False,
        )
    return client_factory(endpoint)


@pytest.fixture(scope="session")
def central_account(aws: ClientFactory) -> str:
    account = new_account_id()
    check_account_isolation(aws, account)
    return account


@pytest.fixture(scope="session")
def spoke_account(aws: ClientFactory, central_account: str) -> str:
    account = new_account_id()
    while account == central_account:
        account = new_account_id()
    check_account_isolation(aws, account)
    return account


@pytest.fixture(scope="session")
def central_stack(aws: ClientFactory, central_account: str, spoke_account: str) -> Iterator[Stack]:
    stack = deploy(aws, central_account, "central.yaml", {
        "DeployService": "false",
        "CreateAlertBus": "true",
        "SpokeAccountIds": spoke_account,
    })
    yield stack
    delete(aws, stack)


@pytest.fixture(scope="session")
def spoke_stack(aws: ClientFactory, spoke_account: str, central_account: str, central_stack: Stack) -> Iterator[Stack]:
    stack = deploy(aws, spoke_account, "spoke.yaml", {
        "CentralAccountId": central_account,
        "CentralTaskRoleArn": central_stack.outputs["TaskRoleArn"],
        "ExternalId": "ecr-audit-test-external-id",
    })
    yield stack
    delete(aws, stack)

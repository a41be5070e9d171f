"""The AWS-managed `aws/ecr` KMS key.

A repository created with `KMS` (or `KMS_DSSE`) encryption and no key is encrypted by AWS
with the account's AWS-managed `aws/ecr` key, and `DescribeRepositories` names that key. moto
invents a random key ARN that KMS does not know, so `DescribeKey` on it fails; here the key
exists, carries the `alias/aws/ecr` alias and reports `KeyManager: AWS`, as in AWS.
"""
from __future__ import annotations

from typing import Any

from moto.ecr.models import Repository
from moto.kms.models import kms_backends

ALIAS = "alias/aws/ecr"


def aws_managed_key_arn(account_id: str, region: str) -> str:
    """Returns the ARN of the account's `aws/ecr` key, creating it on first use."""
    backend = kms_backends[account_id][region]
    key_id = backend.get_key_id_from_alias(ALIAS)
    if key_id is None:
        key = backend.create_key(None, "ENCRYPT_DECRYPT", "SYMMETRIC_DEFAULT",
                                 "Default key that protects my ECR data when no other key is defined", None)
        key.key_manager = "AWS"
        backend.create_alias(key.id, ALIAS)
        key_id = key.id
    return backend.keys[key_id].arn


def _determine_encryption_config(self: Repository, encryption_config: dict[str, str] | None) -> dict[str, Any]:
    if not encryption_config:
        return {"encryptionType": "AES256"}
    config = dict(encryption_config)
    if config.get("encryptionType") in ("KMS", "KMS_DSSE") and not config.get("kmsKey"):
        config["kmsKey"] = aws_managed_key_arn(self.account_id, self.region_name)
    return config


def install() -> None:
    Repository._determine_encryption_config = _determine_encryption_config  # type: ignore[method-assign]

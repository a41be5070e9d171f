"""IAM equals the code: the roles grant exactly the AWS operations the worker calls.

The set of operations is derived from the Rust sources, not from a list kept by hand:
every fluent SDK call (`client.describe_images()`, `.get_queue_url()` on its own line, …)
in `src/**/*.rs` whose name is an operation of one of the `aws-sdk-*` crates that
Cargo.toml depends on. The operations of each crate are read from that crate's own
sources (the exact version of Cargo.lock, in the cargo registry), where every operation
module `src/operation/<snake_name>.rs` names its wire operation (`"DescribeImages"`).
Nothing depends on which module of `src/` makes a call, so code may move freely.

Then:
- the central task role (its inline policies and any AWS::IAM::Policy attached to it)
  grants every called operation, and nothing else but the allow-list below;
- the spoke reader role grants every called read of the posture services (ECR,
  Inspector, Signer, KMS: what the worker reads in another account through that role),
  and nothing else;
- the execution role grants exactly what ECS needs to start the worker (allow-list).
"""
from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from infra_support import as_list, load_template

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"

# The IAM service prefix of each SDK crate (the crate name without `aws-sdk-`). A crate
# missing here fails the test, so a new dependency cannot slip by unchecked.
IAM_PREFIX = {
    "ecr": "ecr",
    "ecrpublic": "ecr-public",
    "eventbridge": "events",
    "inspector2": "inspector2",
    "kms": "kms",
    "organizations": "organizations",
    "s3": "s3",
    "signer": "signer",
    "sqs": "sqs",
    "sts": "sts",
}
# Operations authorized by another operation's action (Service Authorization Reference;
# for ListImageReferrers also the comments in infra/cloudformation/central.yaml).
AUTHORIZED_BY = {
    "ecr:ListImageReferrers": "ecr:BatchGetImage",
    "sqs:ChangeMessageVisibilityBatch": "sqs:ChangeMessageVisibility",
    "sqs:DeleteMessageBatch": "sqs:DeleteMessage",
    "sqs:SendMessageBatch": "sqs:SendMessage",
    "s3:ListObjectsV2": "s3:ListBucket",
}
# Services the worker reads in spoke accounts through the reader role (ECR Public: ECR.4).
POSTURE_PREFIXES = {"ecr", "ecr-public", "inspector2", "signer", "kms"}

# KMS operations on the central stack's own evidence signing key (src/evidence/heads.rs), not
# posture reads of another account: granted to the task role only, on that key.
CENTRAL_KEY_ONLY = {"kms:Sign", "kms:GetPublicKey"}

# Granted to the task role although no fluent SDK call in src/ makes them.
TASK_ROLE_EXTRA = {
    # aws_config::sts::AssumeRoleProvider (not a fluent call) assumes each spoke's reader role.
    "sts:AssumeRole": "the credentials provider assumes the spoke reader roles",
    # PutObject with Object Lock headers (src/evidence/anchor.rs) also needs this action.
    "s3:PutObjectRetention": "PutObject sets each evidence head's retention",
}
# The execution role is used by ECS, not by the worker's code.
EXECUTION_ROLE_ALLOWED = {
    "ecr:GetAuthorizationToken": "ECS logs in to the registry to pull the worker image",
    "ecr:BatchCheckLayerAvailability": "image pull",
    "ecr:GetDownloadUrlForLayer": "image pull",
    "ecr:BatchGetImage": "image pull",
    "logs:CreateLogStream": "the awslogs driver writes the worker's log",
    "logs:PutLogEvents": "the awslogs driver writes the worker's log",
    "secretsmanager:GetSecretValue": "ECS injects DATABASE_URL from its secret",
    "kms:Decrypt": "the secret's customer-managed key, if it has one",
}

FLUENT_CALL = re.compile(r"\.\s*([a-z][a-z0-9_]*)\s*\(\s*\)")
CRATE_MENTION = re.compile(r"\baws_sdk_([a-z0-9]+)\b")
OPERATION_NAME = re.compile(r'invoke_with_stop_point\(\s*"[^"]*",\s*"([A-Za-z0-9]+)"')


# ------------------------------------------------------------------ the code's operations
def sdk_crates() -> dict[str, str]:
    """{crate suffix: version} of the aws-sdk-* crates Cargo.toml depends on, versions from Cargo.lock."""
    manifest = tomllib.loads((ROOT / "Cargo.toml").read_text())
    wanted = {name for name in manifest.get("dependencies", {}) if name.startswith("aws-sdk-")}
    lock = tomllib.loads((ROOT / "Cargo.lock").read_text())
    versions = {p["name"]: p["version"] for p in lock["package"] if p["name"] in wanted}
    assert set(versions) == wanted, f"not in Cargo.lock: {wanted - set(versions)}"
    return {name.removeprefix("aws-sdk-"): version for name, version in versions.items()}


def crate_source(crate: str, version: str) -> Path:
    cargo_home = Path(os.environ.get("CARGO_HOME", Path.home() / ".cargo"))
    found = sorted((cargo_home / "registry" / "src").glob(f"*/aws-sdk-{crate}-{version}"))
    if not found:
        pytest.fail(f"aws-sdk-{crate} {version} is not in {cargo_home}/registry/src: run `cargo fetch` first", pytrace=False)
    return found[0]


def crate_operations(crate: str, version: str) -> dict[str, str]:
    """{snake_case fluent method: OperationName} of one SDK crate."""
    operations = {}
    for module in (crate_source(crate, version) / "src" / "operation").glob("*.rs"):
        match = OPERATION_NAME.search(module.read_text())
        if match:
            operations[module.stem] = match.group(1)
    assert operations, f"no operations found in aws-sdk-{crate} {version}"
    return operations


def without_comments_and_tests(source: str) -> str:
    """The code of a file without `//` comments and without `#[cfg(test)]` items (their
    calls go to the emulator in unit tests, not to AWS under the task role)."""
    source = re.sub(r"//[^\n]*", "", source)
    while (marker := source.find("#[cfg(test)]")) >= 0:
        # The item ends at its first `;` (`mod tests;`, `use …;`) or with the block its
        # first `{` opens (`mod tests { … }`, `fn …() { … }`).
        semicolon, brace = source.find(";", marker), source.find("{", marker)
        if brace < 0 or 0 <= semicolon < brace:
            end = semicolon if semicolon >= 0 else len(source) - 1
        else:
            end = matching_brace(source, brace)
            if end < 0:
                return source[:marker]
        source = source[:marker] + source[end + 1:]
    return source


def files_of_test_modules(path: Path, source: str) -> set[Path]:
    """The files of the modules a file declares as `#[cfg(test)] mod NAME;`."""
    names = re.findall(r"#\[cfg\(test\)\]\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;", source)
    own_dir = path.parent if path.name in ("mod.rs", "lib.rs", "main.rs") else path.with_suffix("")
    return {candidate for name in names for candidate in (own_dir / f"{name}.rs", own_dir / name / "mod.rs")}


def matching_brace(text: str, start: int) -> int:
    depth = 0
    for index in range(start, len(text)):
        if text[index] == "{":
            depth += 1
        elif text[index] == "}":
            depth -= 1
            if depth == 0:
                return index
    return -1


@dataclass(frozen=True)
class Call:
    action: str  # "ecr:DescribeImages"
    where: str  # "src/enrich/ecr.rs"


def called_operations() -> list[Call]:
    crates = sdk_crates()
    unknown = set(crates) - set(IAM_PREFIX)
    assert not unknown, f"add the IAM prefix of aws-sdk-{unknown} to IAM_PREFIX"
    by_method: dict[str, list[tuple[str, str]]] = {}
    for crate, version in crates.items():
        for method, operation in crate_operations(crate, version).items():
            by_method.setdefault(method, []).append((crate, operation))

    sources = {path: path.read_text() for path in sorted(SRC.rglob("*.rs"))}
    test_files = {f for path, source in sources.items() for f in files_of_test_modules(path, source)}
    calls = []
    for path, source in sources.items():
        if path in test_files:
            continue
        code = without_comments_and_tests(source)
        mentioned = set(CRATE_MENTION.findall(code))
        for method in set(FLUENT_CALL.findall(code)):
            candidates = by_method.get(method, [])
            if len(candidates) > 1:
                # The same name in several crates (tag_resource, …): the file names its crate.
                candidates = [c for c in candidates if c[0] in mentioned]
            assert len(candidates) <= 1, f"{path}: .{method}() could be any of {candidates}; name the client's crate in that file"
            for crate, operation in candidates:
                calls.append(Call(f"{IAM_PREFIX[crate]}:{operation}", str(path.relative_to(ROOT))))
    return calls


def required_actions(calls: list[Call]) -> set[str]:
    return {AUTHORIZED_BY.get(call.action, call.action) for call in calls}


# ------------------------------------------------------------------ the templates' grants
def role_actions(template: dict[str, Any], role: str) -> set[str]:
    """Every action an Allow statement grants the role: its inline policies and any
    AWS::IAM::Policy resource attached to it."""
    resources = template["Resources"]
    documents = [p["PolicyDocument"] for p in resources[role]["Properties"].get("Policies", [])]
    for resource in resources.values():
        if resource["Type"] == "AWS::IAM::Policy" and {"Ref": role} in as_list(resource["Properties"].get("Roles")):
            documents.append(resource["Properties"]["PolicyDocument"])
    actions = set()
    for document in documents:
        for statement in document["Statement"]:
            if "Fn::If" in statement:  # [condition, statement, AWS::NoValue]
                statement = statement["Fn::If"][1]
            assert statement["Effect"] == "Allow" and "NotAction" not in statement, statement
            actions.update(as_list(statement["Action"]))
    return actions


CALLS = called_operations()
CENTRAL = load_template("central.yaml")
SPOKE = load_template("spoke.yaml")


def test_test_code_is_left_out() -> None:
    code = without_comments_and_tests(
        "fn live() { c.get_queue_url(); }\n#[cfg(test)]\nmod tests;\n// c.list_images()\n"
        "#[cfg(test)]\nmod unit { fn t() { c.describe_images(); } }\nfn after() { c.receive_message(); }\n"
    )
    assert ".get_queue_url()" in code and ".receive_message()" in code
    assert ".describe_images()" not in code and ".list_images()" not in code
    declared = files_of_test_modules(SRC / "parse" / "mod.rs", "#[cfg(test)]\nmod tests;")
    assert SRC / "parse" / "tests.rs" in declared


def test_the_scan_finds_the_calls_the_worker_is_known_to_make() -> None:
    # Guards the derivation itself: a regex that silently found nothing would make every
    # comparison below vacuous.
    found = {call.action for call in CALLS}
    assert {"ecr:DescribeImages", "sqs:ReceiveMessage", "sqs:GetQueueUrl", "sts:GetCallerIdentity", "kms:DescribeKey"} <= found
    assert not any(call.action.endswith(("StartReconcileRun", "BatchCommitted")) for call in CALLS)


def test_task_role_grants_every_call() -> None:
    missing = required_actions(CALLS) - role_actions(CENTRAL, "TaskRole")
    detail = sorted({f"{c.action} ({c.where})" for c in CALLS if AUTHORIZED_BY.get(c.action, c.action) in missing})
    assert not missing, f"central.yaml TaskRole lacks: {detail}"


def test_task_role_grants_nothing_uncalled() -> None:
    extra = role_actions(CENTRAL, "TaskRole") - required_actions(CALLS) - set(TASK_ROLE_EXTRA)
    assert not extra, f"central.yaml TaskRole grants actions no code calls: {sorted(extra)}"


def test_reader_role_grants_every_posture_read_and_nothing_else() -> None:
    reads = {a for a in required_actions(CALLS) if a.split(":")[0] in POSTURE_PREFIXES} - CENTRAL_KEY_ONLY
    granted = role_actions(SPOKE, "ReaderRole")
    assert reads - granted == set(), f"spoke.yaml ReaderRole lacks: {sorted(reads - granted)}"
    assert granted - reads == set(), f"spoke.yaml ReaderRole grants actions no code calls: {sorted(granted - reads)}"


def test_execution_role_grants_only_what_ecs_needs() -> None:
    granted = role_actions(CENTRAL, "ExecutionRole")
    assert granted == set(EXECUTION_ROLE_ALLOWED), sorted(granted ^ set(EXECUTION_ROLE_ALLOWED))

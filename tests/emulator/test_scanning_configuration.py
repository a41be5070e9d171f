"""The effective scan frequency of repositories, and the `ECR Scan Resource Change` event.

Expected values come from the ECR user guide ("Filters to choose which repositories are
scanned"): a filter without `*` matches names that contain it, a filter with `*` is an
anchored wildcard, continuous scanning wins over scan on push when both enhanced rules
match, and repositories no rule matches are MANUAL. moto 5.2.5 alone gets several of these
wrong (prefix-only regular expressions, the last rule winning, repositories created after
the configuration staying MANUAL); these tests pin the emulator's corrected behaviour.
"""
from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

#: The user guide's table: rows are filters, columns repository names.
NAMES = ["prod", "repo-prod", "prod-repo", "repo-prod-repo", "prodrepo"]
GUIDE_TABLE = {
    "prod": [True, True, True, True, True],
    "*prod": [True, True, False, False, False],
    "prod*": [True, False, True, False, True],
    "*prod*": [True, True, True, True, True],
    "prod*repo": [False, False, True, False, True],
}


def wildcard(*filters: str) -> list[dict[str, str]]:
    return [{"filter": f, "filterType": "WILDCARD"} for f in filters]


def frequencies(ecr, names: list[str]) -> dict[str, tuple[str, bool, list[str]]]:
    configs = ecr.batch_get_repository_scanning_configuration(repositoryNames=names)["scanningConfigurations"]
    return {c["repositoryName"]: (c["scanFrequency"], c["scanOnPush"], [f["filter"] for f in c["appliedScanFilters"]]) for c in configs}


def resource_changes(events: list[dict]) -> list[dict]:
    return [e for e in events if e["detail-type"] == "ECR Scan Resource Change"]


@pytest.mark.parametrize("pattern", sorted(GUIDE_TABLE))
def test_filters_follow_the_user_guide_table(ecr, pattern):
    for name in NAMES:
        ecr.create_repository(repositoryName=name)
    ecr.put_registry_scanning_configuration(scanType="BASIC", rules=[{"scanFrequency": "SCAN_ON_PUSH", "repositoryFilters": wildcard(pattern)}])

    found = frequencies(ecr, NAMES)

    expected = dict(zip(NAMES, GUIDE_TABLE[pattern]))
    assert {name: found[name][0] == "SCAN_ON_PUSH" for name in NAMES} == expected
    for name, hit in expected.items():
        assert found[name][2] == ([pattern] if hit else [])


def test_continuous_wins_over_scan_on_push_whatever_the_rule_order(ecr):
    for name in ("prod-api", "dev-api", "tools"):
        ecr.create_repository(repositoryName=name)
    ecr.put_registry_scanning_configuration(
        scanType="ENHANCED",
        rules=[
            {"scanFrequency": "CONTINUOUS_SCAN", "repositoryFilters": wildcard("prod-*")},
            {"scanFrequency": "SCAN_ON_PUSH", "repositoryFilters": wildcard("*api")},
        ],
    )

    assert frequencies(ecr, ["prod-api", "dev-api", "tools"]) == {
        "prod-api": ("CONTINUOUS_SCAN", True, ["prod-*"]),
        "dev-api": ("SCAN_ON_PUSH", True, ["*api"]),
        "tools": ("MANUAL", False, []),
    }


def test_repositories_created_after_the_configuration_are_covered(ecr):
    ecr.put_registry_scanning_configuration(scanType="BASIC", rules=[{"scanFrequency": "SCAN_ON_PUSH", "repositoryFilters": wildcard("team")}])
    ecr.create_repository(repositoryName="my-team-app")
    assert frequencies(ecr, ["my-team-app"]) == {"my-team-app": ("SCAN_ON_PUSH", True, ["team"])}


def test_the_repository_flag_counts_only_without_a_registry_configuration(ecr):
    ecr.create_repository(repositoryName="flagged", imageScanningConfiguration={"scanOnPush": True})
    ecr.create_repository(repositoryName="plain")
    assert frequencies(ecr, ["flagged", "plain"]) == {"flagged": ("SCAN_ON_PUSH", True, []), "plain": ("MANUAL", False, [])}

    ecr.put_image_scanning_configuration(repositoryName="flagged", imageScanningConfiguration={"scanOnPush": False})
    assert frequencies(ecr, ["flagged"])["flagged"][0] == "MANUAL"
    ecr.put_image_scanning_configuration(repositoryName="flagged", imageScanningConfiguration={"scanOnPush": True})

    # Once the registry has a configuration of its own, BASIC follows only its rules: a
    # repository no SCAN_ON_PUSH filter matches is MANUAL, whatever its flag.
    ecr.put_registry_scanning_configuration(scanType="BASIC", rules=[{"scanFrequency": "SCAN_ON_PUSH", "repositoryFilters": wildcard("nothing-*")}])
    assert frequencies(ecr, ["flagged"])["flagged"] == ("MANUAL", False, [])
    ecr.put_registry_scanning_configuration(scanType="ENHANCED", rules=[{"scanFrequency": "SCAN_ON_PUSH", "repositoryFilters": wildcard("nothing-*")}])
    assert frequencies(ecr, ["flagged"])["flagged"] == ("MANUAL", False, [])


def test_at_most_25_repositories_per_call(ecr):
    names = [f"r{i}" for i in range(26)]
    with pytest.raises(ClientError) as refused:
        ecr.batch_get_repository_scanning_configuration(repositoryNames=names)
    assert refused.value.response["Error"]["Code"] == "InvalidParameterException"
    assert len(ecr.batch_get_repository_scanning_configuration(repositoryNames=names[:25])["failures"]) == 25


def test_a_manual_rule_selects_without_scanning(ecr):
    ecr.create_repository(repositoryName="archive")
    ecr.put_registry_scanning_configuration(
        scanType="ENHANCED",
        rules=[{"scanFrequency": "MANUAL", "repositoryFilters": wildcard("arch*")},
               {"scanFrequency": "SCAN_ON_PUSH", "repositoryFilters": wildcard("nothing")}],
    )
    assert frequencies(ecr, ["archive"]) == {"archive": ("MANUAL", False, ["arch*"])}


def test_missing_repositories_are_failures(ecr):
    answer = ecr.batch_get_repository_scanning_configuration(repositoryNames=["ghost"])
    assert answer["scanningConfigurations"] == []
    assert answer["failures"] == [{"repositoryName": "ghost", "failureCode": "REPOSITORY_NOT_FOUND", "failureReason": "REPOSITORY_NOT_FOUND"}]


def test_get_registry_scanning_configuration_round_trip(ecr):
    assert ecr.get_registry_scanning_configuration()["scanningConfiguration"] == {"scanType": "BASIC", "rules": []}
    rules = [{"scanFrequency": "CONTINUOUS_SCAN", "repositoryFilters": wildcard("prod-*", "*-critical")}]

    put = ecr.put_registry_scanning_configuration(scanType="ENHANCED", rules=rules)

    assert put["registryScanningConfiguration"] == {"scanType": "ENHANCED", "rules": rules}
    got = ecr.get_registry_scanning_configuration()
    assert got["registryId"] == "123456789012"
    assert got["scanningConfiguration"] == {"scanType": "ENHANCED", "rules": rules}


@pytest.mark.parametrize(
    "scan_type, rules",
    [
        ("BASIC", [{"scanFrequency": "CONTINUOUS_SCAN", "repositoryFilters": wildcard("*")}]),
        ("ENHANCED", [{"scanFrequency": "SCAN_ON_PUSH", "repositoryFilters": wildcard("*")}] * 3),
        ("ENHANCED", [{"scanFrequency": "SCAN_ON_PUSH", "repositoryFilters": wildcard("Upper*")}]),
        ("ENHANCED", [{"scanFrequency": "SCAN_ON_PUSH", "repositoryFilters": [{"filter": "a", "filterType": "PREFIX_MATCH"}]}]),
    ],
    ids=["continuous-under-basic", "three-rules", "bad-filter", "bad-filter-type"],
)
def test_invalid_configurations_are_refused_and_change_nothing(ecr, scan_type, rules):
    with pytest.raises(ClientError) as refused:
        ecr.put_registry_scanning_configuration(scanType=scan_type, rules=rules)
    assert refused.value.response["Error"]["Code"] == "InvalidParameterException"
    assert ecr.get_registry_scanning_configuration()["scanningConfiguration"] == {"scanType": "BASIC", "rules": []}


def test_turning_enhanced_scanning_on_emits_one_scan_resource_change(ecr, event_queue):
    for name in ("prod-api", "prod-web", "dev-api", "tools"):
        ecr.create_repository(repositoryName=name)
    ecr.put_registry_scanning_configuration(scanType="BASIC", rules=[{"scanFrequency": "SCAN_ON_PUSH", "repositoryFilters": wildcard("prod-*")}])
    assert resource_changes(event_queue()) == [], "BASIC to BASIC: AWS documents the event for enhanced scanning only"

    ecr.put_registry_scanning_configuration(
        scanType="ENHANCED",
        rules=[{"scanFrequency": "CONTINUOUS_SCAN", "repositoryFilters": wildcard("prod-web")},
               {"scanFrequency": "SCAN_ON_PUSH", "repositoryFilters": wildcard("*api")}],
    )
    [change] = resource_changes(event_queue())

    assert change["source"] == "aws.ecr"
    assert change["account"] == "123456789012"
    assert change["resources"] == []
    assert change["detail"] == {
        "action-type": "SCAN_FREQUENCY_CHANGE",
        "repositories": [
            {"repository-name": "dev-api", "repository-arn": "arn:aws:ecr:us-east-1:123456789012:repository/dev-api",
             "scan-frequency": "SCAN_ON_PUSH", "previous-scan-frequency": "MANUAL"},
            {"repository-name": "prod-web", "repository-arn": "arn:aws:ecr:us-east-1:123456789012:repository/prod-web",
             "scan-frequency": "CONTINUOUS_SCAN", "previous-scan-frequency": "SCAN_ON_PUSH"},
        ],
        "resource-type": "REPOSITORY",
        "scan-type": "ENHANCED",
    }
    assert "prod-api" not in {r["repository-name"] for r in change["detail"]["repositories"]}, "unchanged: SCAN_ON_PUSH before and after"


def test_the_same_enhanced_configuration_again_emits_nothing(ecr, event_queue):
    ecr.create_repository(repositoryName="svc")
    rules = [{"scanFrequency": "CONTINUOUS_SCAN", "repositoryFilters": wildcard("*")}]
    ecr.put_registry_scanning_configuration(scanType="ENHANCED", rules=rules)
    assert len(resource_changes(event_queue())) == 1

    ecr.put_registry_scanning_configuration(scanType="ENHANCED", rules=rules)
    assert resource_changes(event_queue()) == []


def test_leaving_enhanced_scanning_reports_the_new_frequencies(ecr, event_queue):
    ecr.create_repository(repositoryName="svc", imageScanningConfiguration={"scanOnPush": True})
    ecr.create_repository(repositoryName="other")
    ecr.put_registry_scanning_configuration(scanType="ENHANCED", rules=[{"scanFrequency": "CONTINUOUS_SCAN", "repositoryFilters": wildcard("*")}])
    event_queue()

    ecr.put_registry_scanning_configuration(scanType="BASIC", rules=[])
    [change] = resource_changes(event_queue())

    assert change["detail"]["scan-type"] == "BASIC"
    assert {(r["repository-name"], r["previous-scan-frequency"], r["scan-frequency"]) for r in change["detail"]["repositories"]} == {
        # The flag of "svc" no longer counts: the registry has a configuration.
        ("svc", "CONTINUOUS_SCAN", "MANUAL"),
        ("other", "CONTINUOUS_SCAN", "MANUAL"),
    }


def test_a_new_repository_under_an_enhanced_rule_is_a_scan_resource_change(ecr, event_queue):
    ecr.put_registry_scanning_configuration(scanType="ENHANCED", rules=[{"scanFrequency": "SCAN_ON_PUSH", "repositoryFilters": wildcard("svc-*")}])
    event_queue()
    ecr.create_repository(repositoryName="svc-new")
    ecr.create_repository(repositoryName="unscanned")

    [change] = resource_changes(event_queue())
    assert change["detail"]["repositories"] == [
        {"repository-name": "svc-new", "repository-arn": "arn:aws:ecr:us-east-1:123456789012:repository/svc-new",
         "scan-frequency": "SCAN_ON_PUSH", "previous-scan-frequency": "MANUAL"},
    ]

//! Parsing tests of the ledger events: replication, pull-through cache, lifecycle expiry,
//! `BatchDeleteImage`, `DeleteRepository` with `force`; well formed and malformed.

use serde_json::{Value, json};

use super::*;

const DIGEST: &str = "sha256:0b4d2a5f6c1e3d7a9b8c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a";
const OTHER: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

fn parse_envelope(value: &Value) -> Result<AuditEvent, ParseError> {
    parse(
        value.to_string().as_bytes(),
        InputFormat::Envelope,
        &ParseContext::default(),
    )
}

fn envelope(detail_type: &str, account: &str, region: &str, detail: Value) -> Value {
    json!({"version": "0", "id": "9d3b5c1e-0000-4000-8000-000000000002", "detail-type": detail_type,
           "source": "aws.ecr", "account": account, "time": "2026-11-23T16:06:25Z", "region": region,
           "resources": [], "detail": detail})
}

fn replication(result: &str) -> Value {
    envelope(
        "ECR Replication Action",
        "210987654321",
        "eu-west-1",
        json!({"result": result, "repository-name": "prod/api", "image-digest": DIGEST,
               "source-account": "123456789012", "action-type": "REPLICATE",
               "source-region": "us-east-1", "image-tag": "v1"}),
    )
}

#[test]
fn a_replication_is_about_the_destination_registry() {
    let event = parse_envelope(&replication("SUCCESS")).expect("replication");
    assert_eq!(event.account.as_str(), "210987654321");
    assert_eq!(event.region.as_str(), "eu-west-1");
    assert_eq!(event.change.kind(), "image_replicated");
    assert_eq!(event.change.digest().map(Digest::as_str), Some(DIGEST));
    assert_eq!(event.change.tag(), Some("v1"));
    match event.change {
        Change::ImageReplicated {
            result,
            source_account,
            source_region,
            ..
        } => {
            assert_eq!(result, "SUCCESS");
            assert_eq!(source_account.as_deref(), Some("123456789012"));
            assert_eq!(source_region.as_deref(), Some("us-east-1"));
        }
        other => panic!("unexpected {other:?}"),
    }
    let failed = parse_envelope(&replication("FAILED")).expect("failed replication");
    assert!(matches!(failed.change, Change::ImageReplicated { result, .. } if result == "FAILED"));
}

#[test]
fn a_malformed_replication_is_rejected_by_name() {
    let mut event = replication("SUCCESS");
    event["detail"]["image-digest"] = json!("sha256:short");
    assert!(matches!(
        parse_envelope(&event),
        Err(ParseError::InvalidIdentifier {
            field: "image-digest",
            ..
        })
    ));
    event["detail"]
        .as_object_mut()
        .map(|d| d.remove("repository-name"));
    assert_eq!(
        parse_envelope(&event),
        Err(ParseError::MissingField("repository-name"))
    );
    let mut event = replication("SUCCESS");
    event["detail"]["image-tag"] = json!(7);
    assert!(matches!(
        parse_envelope(&event),
        Err(ParseError::WrongType {
            field: "image-tag",
            ..
        })
    ));
}

fn pull_through(status: &str, digest: Option<&str>) -> Value {
    let mut detail = json!({"rule-version": "1", "sync-status": status,
                            "ecr-repository-prefix": "ecr-public",
                            "repository-name": "ecr-public/docker/library/alpine",
                            "upstream-registry-url": "public.ecr.aws", "image-tag": "3.20"});
    if let Some(digest) = digest {
        detail["image-digest"] = json!(digest);
    }
    envelope(
        "ECR Pull Through Cache Action",
        "123456789012",
        "us-east-1",
        detail,
    )
}

#[test]
fn a_pull_through_sync_names_its_repository_and_digest() {
    let event = parse_envelope(&pull_through("SUCCESS", Some(DIGEST))).expect("sync");
    assert_eq!(event.change.kind(), "pull_through_cached");
    assert_eq!(
        event.change.repository().map(RepositoryName::as_str),
        Some("ecr-public/docker/library/alpine")
    );
    assert_eq!(event.change.digest().map(Digest::as_str), Some(DIGEST));
    // Another status is evidence only; it need not name a digest.
    let failed = parse_envelope(&pull_through("FAILED", None)).expect("failed sync");
    assert!(
        matches!(failed.change, Change::PullThroughCached { sync_status, digest: None, .. } if sync_status == "FAILED")
    );
}

#[test]
fn a_malformed_pull_through_sync_is_rejected_by_name() {
    assert_eq!(
        parse_envelope(&pull_through("SUCCESS", None)),
        Err(ParseError::MissingField("image-digest"))
    );
    let mut event = pull_through("SUCCESS", Some(DIGEST));
    event["detail"]
        .as_object_mut()
        .map(|d| d.remove("sync-status"));
    assert_eq!(
        parse_envelope(&event),
        Err(ParseError::MissingField("sync-status"))
    );
    assert!(matches!(
        parse_envelope(&pull_through("SUCCESS", Some("md5:x"))),
        Err(ParseError::InvalidIdentifier { .. })
    ));
}

fn lifecycle(actions: Value) -> Value {
    envelope(
        SERVICE_EVENT_DETAIL_TYPE,
        "123456789012",
        "us-east-1",
        json!({"eventVersion": "1.05",
               "userIdentity": {"accountId": "123456789012", "invokedBy": "AWS Internal"},
               "eventTime": "2026-11-23T16:06:25Z", "eventSource": "ecr.amazonaws.com",
               "eventName": "PolicyExecutionEvent", "awsRegion": "us-east-1",
               "sourceIPAddress": "AWS Internal", "userAgent": "AWS Internal",
               "requestParameters": null, "responseElements": null,
               "eventID": "5a1e0c3b-0000-4000-8000-000000000003", "readOnly": true,
               "eventType": "AwsServiceEvent", "recipientAccountId": "123456789012",
               "serviceEventDetails": {
                   "repositoryName": "team-api",
                   "lifecycleEventPolicy": {
                       "lifecycleEventRules": [{"rulePriority": 1, "description": "keep two",
                                                "lifecycleEventSelection": {"tagStatus": "Any"},
                                                "action": "expire"}],
                       "lastEvaluatedAt": 0, "policyVersion": 1, "policyId": "p"},
                   "lifecycleEventImageActions": actions}}),
    )
}

fn expired(digest: &str) -> Value {
    json!({"lifecycleEventImage": {"digest": digest, "tagStatus": "Tagged", "tagList": ["one"],
                                   "pushedAt": 1_795_449_985_000_i64},
           "rulePriority": 1})
}

#[test]
fn a_lifecycle_expiry_lists_the_digests_and_the_rules() {
    let event = parse_envelope(&lifecycle(json!([expired(DIGEST), expired(OTHER)])))
        .expect("lifecycle expiry");
    assert_eq!(event.id, "5a1e0c3b-0000-4000-8000-000000000003");
    assert_eq!(event.detail_type, SERVICE_EVENT_DETAIL_TYPE);
    assert_eq!(event.change.kind(), "images_deleted");
    let Change::ImagesDeleted {
        repository,
        removal,
        images,
        omitted,
        omitted_reason,
    } = event.change
    else {
        panic!("not a removal");
    };
    assert_eq!(omitted_reason, None);
    assert_eq!(repository.as_str(), "team-api");
    assert_eq!(
        removal,
        Removal::LifecyclePolicy {
            rules: vec![LifecycleRule {
                priority: 1,
                description: Some("keep two".into())
            }]
        }
    );
    let digests: Vec<&str> = images.iter().map(|i| i.digest.as_str()).collect();
    assert_eq!(digests, [DIGEST, OTHER]);
    assert!(
        images
            .iter()
            .all(|i| i.rule_priority == Some(1) && !i.by_tag)
    );
    assert_eq!(omitted, 0);
}

#[test]
fn a_lifecycle_expiry_takes_a_bounded_number_of_digests() {
    let many: Vec<Value> = (0..MAX_DIGESTS_PER_EVENT + 25)
        .map(|n| expired(&format!("sha256:{n:064x}")))
        .collect();
    let event = parse_envelope(&lifecycle(Value::Array(many))).expect("large expiry");
    let Change::ImagesDeleted {
        images,
        omitted,
        omitted_reason,
        ..
    } = event.change
    else {
        panic!("not a removal");
    };
    assert_eq!(images.len(), MAX_DIGESTS_PER_EVENT);
    assert_eq!(omitted, 25);
    let reason = omitted_reason.expect("a reason for the omitted digests");
    assert!(
        reason.contains("125 digests") && reason.contains("reconcile"),
        "{reason}"
    );
}

#[test]
fn a_malformed_lifecycle_expiry_is_rejected_by_name() {
    let cases = [
        (json!("not a list"), "lifecycleEventImageActions"),
        (json!([7]), "lifecycleEventImageActions"),
        (json!([{"rulePriority": 1}]), "lifecycleEventImage"),
        (
            json!([{"lifecycleEventImage": {"digest": DIGEST}, "rulePriority": "one"}]),
            "rulePriority",
        ),
    ];
    for (actions, field) in cases {
        let err = parse_envelope(&lifecycle(actions.clone())).expect_err("malformed");
        let named = match &err {
            ParseError::WrongType { field, .. } | ParseError::MissingField(field) => *field,
            _ => "",
        };
        assert_eq!(named, field, "{actions}: {err}");
    }
    let bad_digest = lifecycle(json!([expired("sha256:nothex")]));
    assert!(matches!(
        parse_envelope(&bad_digest),
        Err(ParseError::InvalidIdentifier {
            field: "lifecycleEventImage.digest",
            ..
        })
    ));
    let mut no_details = lifecycle(json!([]));
    no_details["detail"]
        .as_object_mut()
        .map(|d| d.remove("serviceEventDetails"));
    assert_eq!(
        parse_envelope(&no_details),
        Err(ParseError::MissingField("serviceEventDetails"))
    );
}

fn cloudtrail_call(name: &str, params: Value, response: Value) -> Value {
    envelope(
        "AWS API Call via CloudTrail",
        "123456789012",
        "us-east-1",
        json!({"eventVersion": "1.08",
               "userIdentity": {"type": "IAMUser", "arn": "arn:aws:iam::123456789012:user/alice",
                                "accountId": "123456789012"},
               "eventTime": "2026-11-23T16:06:25Z", "eventSource": "ecr.amazonaws.com",
               "eventName": name, "awsRegion": "us-east-1",
               "requestParameters": params, "responseElements": response,
               "eventID": "7c2d4e6f-0000-4000-8000-000000000004", "eventType": "AwsApiCall",
               "recipientAccountId": "123456789012"}),
    )
}

#[test]
fn a_batch_delete_names_each_digest_and_whether_it_was_asked_for_by_tag() {
    let event = parse_envelope(&cloudtrail_call(
        "BatchDeleteImage",
        json!({"repositoryName": "team-api",
               "imageIds": [{"imageDigest": DIGEST}, {"imageTag": "old"}, {"imageTag": "gone"}]}),
        json!({"imageIds": [{"imageDigest": DIGEST}, {"imageDigest": OTHER, "imageTag": "old"}],
               "failures": [{"imageId": {"imageTag": "gone"}, "failureCode": "ImageNotFound"}]}),
    ))
    .expect("batch delete");
    assert_eq!(
        event.actor.as_ref().map(|a| a.arn.as_str()),
        Some("arn:aws:iam::123456789012:user/alice")
    );
    let Change::ImagesDeleted {
        removal, images, ..
    } = event.change
    else {
        panic!("not a removal");
    };
    assert_eq!(removal, Removal::BatchDeleteImage { failures: 1 });
    let seen: Vec<(&str, bool)> = images
        .iter()
        .map(|i| (i.digest.as_str(), i.by_tag))
        .collect();
    assert_eq!(seen, [(DIGEST, false), (OTHER, true)]);
}

#[test]
fn a_malformed_batch_delete_is_rejected_by_name_and_a_failed_one_is_evidence() {
    let params = json!({"repositoryName": "team-api", "imageIds": [{"imageDigest": DIGEST}]});
    let bad = cloudtrail_call("BatchDeleteImage", params.clone(), json!({"imageIds": {}}));
    assert!(matches!(
        parse_envelope(&bad),
        Err(ParseError::WrongType {
            field: "imageIds",
            ..
        })
    ));
    let bad = cloudtrail_call(
        "BatchDeleteImage",
        params.clone(),
        json!({"imageIds": [{"imageDigest": "sha256:zz"}]}),
    );
    assert!(matches!(
        parse_envelope(&bad),
        Err(ParseError::InvalidIdentifier {
            field: "imageIds.imageDigest",
            ..
        })
    ));
    let mut failed = cloudtrail_call("BatchDeleteImage", params, Value::Null);
    failed["detail"]["errorCode"] = json!("AccessDenied");
    let event = parse_envelope(&failed).expect("failed call");
    assert!(matches!(event.change, Change::FailedApiCall { .. }));
}

#[test]
fn delete_repository_keeps_force() {
    let event = parse_envelope(&cloudtrail_call(
        "DeleteRepository",
        json!({"repositoryName": "team-api", "force": true}),
        Value::Null,
    ))
    .expect("delete repository");
    assert!(matches!(
        event.change,
        Change::RepositoryChanged {
            call: RepositoryCall::DeleteRepository { force: Some(true) },
            ..
        }
    ));
}

//! Parsing tests: fixtures of every envelope and CloudTrail record, hostile input, properties.

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;

const DIGEST: &str = "sha256:0b4d2a5f6c1e3d7a9b8c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a";

fn ctx() -> ParseContext {
    ParseContext {
        default_account: AccountId::parse("111122223333").ok(),
        default_region: Region::parse("eu-west-1").ok(),
    }
}

fn parse_value(value: &Value, format: InputFormat) -> Result<AuditEvent, ParseError> {
    parse(value.to_string().as_bytes(), format, &ctx())
}

fn image_action(action: &str, extra: Value) -> Value {
    let mut detail = json!({
        "result": "SUCCESS",
        "repository-name": "team/app",
        "image-digest": DIGEST,
        "action-type": action,
        "image-tag": "v1"
    });
    if let (Some(d), Some(e)) = (detail.as_object_mut(), extra.as_object()) {
        d.extend(e.clone());
    }
    json!({
        "version": "0",
        "id": "3fa6b2d1-0000-4000-8000-000000000001",
        "detail-type": "ECR Image Action",
        "source": "aws.ecr",
        "account": "123456789012",
        "time": "2026-11-20T10:00:00Z",
        "region": "us-east-1",
        "resources": [],
        "detail": detail
    })
}

fn cloudtrail(name: &str, params: Value, response: Value) -> Value {
    json!({
        "version": "0",
        "id": "envelope-id",
        "detail-type": "AWS API Call via CloudTrail",
        "source": "aws.ecr",
        "account": "123456789012",
        "time": "2026-11-20T10:00:05Z",
        "region": "us-east-1",
        "resources": [],
        "detail": {
            "eventVersion": "1.08",
            "userIdentity": {
                "type": "AssumedRole",
                "principalId": "AROAEXAMPLE:ci",
                "arn": "arn:aws:sts::123456789012:assumed-role/ci-deployer/ci",
                "accountId": "123456789012",
                "sessionContext": {"sessionIssuer": {"arn": "arn:aws:iam::123456789012:role/ci-deployer"}}
            },
            "eventTime": "2026-11-20T10:00:04Z",
            "eventSource": "ecr.amazonaws.com",
            "eventName": name,
            "awsRegion": "us-east-1",
            "requestParameters": params,
            "responseElements": response,
            "eventID": "ct-event-1",
            "eventType": "AwsApiCall",
            "recipientAccountId": "123456789012"
        }
    })
}

#[test]
fn image_push_is_parsed_with_tag_and_media_types() {
    let event = parse_value(
        &image_action(
            "PUSH",
            json!({"artifact-media-type": "application/vnd.oci.image.config.v1+json"}),
        ),
        InputFormat::Envelope,
    );
    let event = event.expect("valid push");
    assert_eq!(event.id, "3fa6b2d1-0000-4000-8000-000000000001");
    assert_eq!(event.account.as_str(), "123456789012");
    assert_eq!(event.region.as_str(), "us-east-1");
    match event.change {
        Change::ImagePushed {
            repository,
            digest,
            tag,
            artifact_media_type,
            ..
        } => {
            assert_eq!(repository.as_str(), "team/app");
            assert_eq!(digest.as_str(), DIGEST);
            assert_eq!(tag.as_deref(), Some("v1"));
            assert_eq!(
                artifact_media_type.as_deref(),
                Some("application/vnd.oci.image.config.v1+json")
            );
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn image_actions_cover_delete_storage_class_and_unknown_values() {
    let cases = [
        ("DELETE", json!({}), "image_deleted"),
        (
            "UPDATE_STORAGE_CLASS",
            json!({"target-storage-class": "ARCHIVE"}),
            "image_storage_class_changed",
        ),
        ("SOMETHING_NEW", json!({}), "ignored"),
        ("PUSH", json!({"result": "FAILURE"}), "ignored"),
    ];
    for (action, extra, kind) in cases {
        let event = parse_value(&image_action(action, extra), InputFormat::Envelope).expect(action);
        assert_eq!(event.change.kind(), kind, "{action}");
    }
}

#[test]
fn missing_account_falls_back_to_resource_arn_then_configuration() {
    let mut envelope = image_action("PUSH", json!({}));
    if let Some(o) = envelope.as_object_mut() {
        o.remove("account");
        o.insert(
            "resources".into(),
            json!(["arn:aws:ecr:us-east-1:444455556666:repository/team/app"]),
        );
    }
    let event = parse_value(&envelope, InputFormat::Envelope).expect("arn fallback");
    assert_eq!(event.account.as_str(), "444455556666");

    if let Some(o) = envelope.as_object_mut() {
        o.insert("resources".into(), json!([]));
    }
    let event = parse_value(&envelope, InputFormat::Envelope).expect("configured fallback");
    assert_eq!(event.account.as_str(), "111122223333");

    let no_default = parse(
        envelope.to_string().as_bytes(),
        InputFormat::Envelope,
        &ParseContext::default(),
    );
    assert_eq!(no_default, Err(ParseError::NoAccount));
}

#[test]
fn unknown_detail_types_are_ignored_with_a_reason() {
    let mut envelope = image_action("PUSH", json!({}));
    if let Some(o) = envelope.as_object_mut() {
        o.insert("detail-type".into(), json!("ECR Future Action"));
    }
    let event = parse_value(&envelope, InputFormat::Envelope).expect("ignored, not an error");
    match event.change {
        Change::Ignored { reason } => {
            assert!(reason.contains("ECR Future Action"), "{reason}")
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn malformed_messages_are_parse_errors_with_stable_codes() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"not json".to_vec(), "invalid_json"),
        (b"[1,2]".to_vec(), "not_an_object"),
        (vec![0xff, 0xfe], "invalid_json"),
        (json!({"id": "x"}).to_string().into_bytes(), "missing_field"),
        (
            {
                let mut e = image_action("PUSH", json!({}));
                e["time"] = json!(12);
                e.to_string().into_bytes()
            },
            "wrong_type",
        ),
        (
            {
                let mut e = image_action("PUSH", json!({}));
                e["time"] = json!("yesterday");
                e.to_string().into_bytes()
            },
            "invalid_time",
        ),
        (
            image_action("PUSH", json!({"image-digest": "sha256:xyz"}))
                .to_string()
                .into_bytes(),
            "invalid_identifier",
        ),
        (
            image_action("PUSH", json!({"repository-name": "Bad Name"}))
                .to_string()
                .into_bytes(),
            "invalid_identifier",
        ),
    ];
    for (body, code) in cases {
        let err = parse(&body, InputFormat::Envelope, &ctx()).expect_err(code);
        assert_eq!(err.code(), code, "{err}");
    }
}

#[test]
fn cloudtrail_tag_mutability_change_carries_actor_and_event_id() {
    let envelope = cloudtrail(
        "PutImageTagMutability",
        json!({"repositoryName": "team/app", "imageTagMutability": "MUTABLE"}),
        json!({"repositoryName": "team/app", "imageTagMutability": "MUTABLE"}),
    );
    let event = parse_value(&envelope, InputFormat::Envelope).expect("valid");
    assert_eq!(
        event.id, "ct-event-1",
        "CloudTrail eventID is the idempotency key"
    );
    assert_eq!(event.time.to_rfc3339(), "2026-11-20T10:00:04+00:00");
    let actor = event.actor.expect("actor");
    assert_eq!(
        actor.arn,
        "arn:aws:sts::123456789012:assumed-role/ci-deployer/ci"
    );
    assert_eq!(
        actor.issuer_arn.as_deref(),
        Some("arn:aws:iam::123456789012:role/ci-deployer")
    );
    assert_eq!(
        event.change,
        Change::RepositoryChanged {
            repository: RepositoryName::parse("team/app").expect("name"),
            call: RepositoryCall::PutImageTagMutability {
                image_tag_mutability: Some("MUTABLE".into())
            },
        }
    );
}

#[test]
fn every_repository_call_of_the_walking_pipeline_is_understood() {
    let calls = [
        ("CreateRepository", "CreateRepository"),
        ("DeleteRepository", "DeleteRepository"),
        ("PutLifecyclePolicy", "PutLifecyclePolicy"),
        ("DeleteLifecyclePolicy", "DeleteLifecyclePolicy"),
        (
            "PutImageScanningConfiguration",
            "PutImageScanningConfiguration",
        ),
    ];
    for (event_name, expected) in calls {
        let event = parse_value(
            &cloudtrail(
                event_name,
                json!({"repositoryName": "team/app"}),
                Value::Null,
            ),
            InputFormat::Envelope,
        )
        .expect(event_name);
        match event.change {
            Change::RepositoryChanged { call, .. } => assert_eq!(call.name(), expected),
            other => panic!("{event_name}: {other:?}"),
        }
    }
    let registry = parse_value(
        &cloudtrail(
            "PutRegistryScanningConfiguration",
            json!({"scanType": "ENHANCED", "rules": []}),
            Value::Null,
        ),
        InputFormat::Envelope,
    )
    .expect("registry");
    assert_eq!(
        registry.change,
        Change::RegistryChanged {
            call: RegistryCall::PutRegistryScanningConfiguration {
                scan_type: Some("ENHANCED".into())
            }
        }
    );
}

#[test]
fn put_image_names_the_pusher_and_failed_calls_change_nothing() {
    let push = parse_value(
        &cloudtrail(
            "PutImage",
            json!({"repositoryName": "team/app", "imageTag": "v2", "imageManifest": "{}"}),
            json!({"image": {"imageId": {"imageDigest": DIGEST, "imageTag": "v2"}}}),
        ),
        InputFormat::Envelope,
    )
    .expect("put image");
    assert_eq!(push.change.kind(), "image_push_recorded");
    assert_eq!(push.change.digest().map(Digest::as_str), Some(DIGEST));

    let mut failed = cloudtrail(
        "PutImageTagMutability",
        json!({"repositoryName": "team/app", "imageTagMutability": "MUTABLE"}),
        Value::Null,
    );
    failed["detail"]["errorCode"] = json!("AccessDenied");
    failed["detail"]["errorMessage"] = json!("User is not authorized");
    let failed = parse_value(&failed, InputFormat::Envelope).expect("failed call");
    match failed.change {
        Change::FailedApiCall {
            event_name,
            error_code,
            requested,
            ..
        } => {
            assert_eq!(event_name, "PutImageTagMutability");
            assert_eq!(error_code, "AccessDenied");
            assert_eq!(
                requested,
                Some(RepositoryCall::PutImageTagMutability {
                    image_tag_mutability: Some("MUTABLE".into())
                }),
                "what the denied call asked for"
            );
        }
        other => panic!("{other:?}"),
    }

    let truncated = parse_value(
        &cloudtrail(
            "PutImage",
            json!({"repositoryName": "team/app"}),
            Value::Null,
        ),
        InputFormat::Envelope,
    )
    .expect("truncated record is still an event");
    assert_eq!(truncated.change.kind(), "ignored");
}

#[test]
fn cloudtrail_log_records_parse_without_an_envelope() {
    let envelope = cloudtrail(
        "DeleteLifecyclePolicy",
        json!({"repositoryName": "team/app"}),
        Value::Null,
    );
    let record = &envelope["detail"];
    let event = parse_value(record, InputFormat::CloudTrailRecord).expect("record");
    assert_eq!(event.id, "ct-event-1");
    assert_eq!(event.detail_type, "AWS API Call via CloudTrail");
    assert_eq!(event.change.kind(), "repository_changed");

    let mut without_id = record.clone();
    if let Some(o) = without_id.as_object_mut() {
        o.remove("eventID");
    }
    assert_eq!(
        parse_value(&without_id, InputFormat::CloudTrailRecord),
        Err(ParseError::MissingField("eventID"))
    );
}

#[test]
fn scan_events_from_both_scanners_are_understood() {
    let mut basic = image_action("PUSH", json!({}));
    basic["detail-type"] = json!("ECR Image Scan");
    basic["detail"] = json!({"scan-status": "COMPLETE", "repository-name": "team/app", "image-digest": DIGEST,
        "image-tags": ["v1"], "finding-severity-counts": {"CRITICAL": 2, "HIGH": 5}});
    match parse_value(&basic, InputFormat::Envelope)
        .expect("basic scan")
        .change
    {
        Change::ScanCompleted {
            source,
            raw_status,
            severity_counts,
            ..
        } => {
            assert_eq!(source, ScanSource::Basic);
            assert_eq!(raw_status, "COMPLETE");
            assert_eq!(severity_counts.get("CRITICAL"), Some(&2));
            assert_eq!(
                severity_counts.get("MEDIUM"),
                None,
                "absent severity means 0"
            );
        }
        other => panic!("{other:?}"),
    }

    let mut enhanced = basic.clone();
    enhanced["source"] = json!("aws.inspector2");
    enhanced["detail-type"] = json!("Inspector2 Scan");
    enhanced["detail"] = json!({"scan-status": "INITIAL_SCAN_COMPLETE",
        "repository-name": "arn:aws:ecr:us-east-1:123456789012:repository/team/app",
        "image-digest": DIGEST, "image-tags": ["v1"],
        "finding-severity-counts": {"CRITICAL": 0, "HIGH": 1, "MEDIUM": 3, "TOTAL": 4}});
    let event = parse_value(&enhanced, InputFormat::Envelope).expect("inspector scan");
    assert_eq!(
        event.change.repository().map(RepositoryName::as_str),
        Some("team/app"),
        "ARN quirk handled"
    );

    enhanced["detail"]["finding-severity-counts"] = json!({"HIGH": "many"});
    assert_eq!(
        parse_value(&enhanced, InputFormat::Envelope).map_err(|e| e.code()),
        Err("wrong_type")
    );
}

#[test]
fn inspector_findings_and_referrers_are_hints_about_a_digest() {
    let mut finding = image_action("PUSH", json!({}));
    finding["source"] = json!("aws.inspector2");
    finding["detail-type"] = json!("Inspector2 Finding");
    finding["detail"] = json!({"findingArn": "arn:aws:inspector2:us-east-1:123456789012:finding/f1",
        "severity": "HIGH", "status": "ACTIVE", "type": "PACKAGE_VULNERABILITY",
        "resources": [{"type": "AWS_ECR_CONTAINER_IMAGE", "details": {"awsEcrContainerImage":
            {"repositoryName": "team/app", "imageHash": DIGEST, "imageTags": ["v1"], "registry": "123456789012"}}}]});
    assert_eq!(
        parse_value(&finding, InputFormat::Envelope)
            .expect("finding")
            .change
            .kind(),
        "finding_changed"
    );

    finding["detail"]["resources"] = json!([{"type": "AWS_EC2_INSTANCE", "details": {}}]);
    assert_eq!(
        parse_value(&finding, InputFormat::Envelope)
            .expect("ignored")
            .change
            .kind(),
        "ignored"
    );

    let mut referrer = image_action(
        "PUSH",
        json!({"artifact-media-type": "application/vnd.cncf.notary.signature"}),
    );
    referrer["detail-type"] = json!("ECR Referrer Action");
    assert_eq!(
        parse_value(&referrer, InputFormat::Envelope)
            .expect("referrer")
            .change
            .kind(),
        "referrer_changed"
    );
}

/// Found by the `parse_cloudtrail` fuzz target (minimised input below): an empty id was
/// accepted, so every later event with an empty id would have been dropped as a duplicate of
/// the first.
#[test]
fn empty_event_ids_are_refused() {
    let minimised = br#"{"eventTime":"2026-11-20T10:00:04Z","eventName":"","eventID":""}"#;
    assert_eq!(
        parse(minimised, InputFormat::CloudTrailRecord, &ctx()),
        Err(ParseError::WrongType {
            field: "eventID",
            expected: "a non-empty string"
        })
    );

    let mut envelope = image_action("PUSH", json!({}));
    envelope["id"] = json!("");
    assert_eq!(
        parse_value(&envelope, InputFormat::Envelope).map_err(|e| e.code()),
        Err("wrong_type")
    );

    // An empty eventID inside an envelope is refused too, not replaced by the envelope's id.
    let mut wrapped = cloudtrail(
        "DeleteLifecyclePolicy",
        json!({"repositoryName": "team/app"}),
        Value::Null,
    );
    wrapped["detail"]["eventID"] = json!("");
    assert_eq!(
        parse_value(&wrapped, InputFormat::Envelope),
        Err(ParseError::WrongType {
            field: "eventID",
            expected: "a non-empty string"
        })
    );
}

/// Found by the `parse_envelope` fuzz target (minimised inputs below). A NUL in a severity name
/// was accepted, and jsonb (the evidence detail) refuses it even in keys, so the message would
/// have failed its transaction on every delivery instead of being rejected once; a negative
/// count was accepted and would have read as "no findings".
#[test]
fn severity_counts_with_nul_names_or_negative_counts_are_refused() {
    let nul_name = br#"{"rs":"0","id":"00","detail-type":"Inspector2 Scan","source":"aws.inspector2","time":"2026-11-20T10:00:00Z","detail":{"scan-status":"INE","repository-name":"arp","image-digest":"sha256:0b4d2a5f6c1e3d7a9b8c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a","finding-severity-counts":{"...\u0000TA":4}}}"#;
    assert_eq!(
        parse(nul_name, InputFormat::Envelope, &ctx()),
        Err(ParseError::WrongType {
            field: "finding-severity-counts",
            expected: "an object keyed by severity names without NUL characters"
        })
    );

    let negative = br#"{"id":"-","detail-type":"Inspector2 Scan","source":"aws.inspector2","time":"2026-11-20T10:00:00Z","rgi":[],"detail":{"scan-status":"T","repository-name":"tem","image-digest":"sha256:0b4d2a5f6c1e3d7a9b8c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a","finding-severity-counts":{"":-2,"TH":3}}}"#;
    assert_eq!(
        parse(negative, InputFormat::Envelope, &ctx()),
        Err(ParseError::WrongType {
            field: "finding-severity-counts",
            expected: "an object of non-negative integer counts"
        })
    );

    // Zero stays a count: only what is below it is refused.
    let mut zero = image_action("PUSH", json!({}));
    zero["detail-type"] = json!("ECR Image Scan");
    zero["detail"] = json!({"scan-status": "COMPLETE", "repository-name": "team/app",
        "image-digest": DIGEST, "finding-severity-counts": {"CRITICAL": 0}});
    assert_eq!(
        parse_value(&zero, InputFormat::Envelope).map(|e| e.change.kind()),
        Ok("scan_completed")
    );
}

fn arbitrary_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
        prop_oneof![
            Just("ECR Image Action"),
            Just("AWS API Call via CloudTrail"),
            Just("PUSH"),
            Just("aws.ecr"),
            Just("ecr.amazonaws.com"),
            Just("PutImage"),
            Just(DIGEST),
            Just("2026-11-20T10:00:00Z"),
            Just("123456789012"),
            Just("us-east-1"),
            Just("team/app"),
        ]
        .prop_map(|s| Value::String(s.to_owned())),
    ];
    let keys = prop_oneof![
        Just("id"),
        Just("detail-type"),
        Just("source"),
        Just("time"),
        Just("detail"),
        Just("account"),
        Just("region"),
        Just("resources"),
        Just("action-type"),
        Just("repository-name"),
        Just("image-digest"),
        Just("result"),
        Just("eventID"),
        Just("eventName"),
        Just("eventSource"),
        Just("eventTime"),
        Just("requestParameters"),
        Just("responseElements"),
        Just("userIdentity"),
        Just("errorCode"),
        Just("repositoryName"),
        Just("image"),
        Just("imageId"),
        Just("imageDigest"),
        Just("awsRegion"),
    ];
    leaf.prop_recursive(4, 64, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(keys.clone().prop_map(str::to_owned), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn parsing_never_panics_on_arbitrary_json(value in arbitrary_json()) {
        let body = value.to_string();
        let _ = parse(body.as_bytes(), InputFormat::Envelope, &ctx());
        let _ = parse(body.as_bytes(), InputFormat::CloudTrailRecord, &ctx());
    }

    #[test]
    fn parsing_never_panics_on_arbitrary_bytes(body in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = parse(&body, InputFormat::Envelope, &ctx());
    }
}

#[test]
fn a_scan_frequency_change_re_reads_the_registry() {
    let event = json!({
        "version": "0", "id": "scan-freq-1", "detail-type": "ECR Scan Resource Change",
        "source": "aws.ecr", "account": "111122223333", "time": "2026-11-20T10:00:00Z",
        "region": "eu-west-1", "resources": [],
        "detail": {"action-type": "SCAN_FREQUENCY_CHANGE", "scan-type": "ENHANCED",
                   "repositories": [{"repository-name": "team/app",
                                     "repository-arn": "arn:aws:ecr:eu-west-1:111122223333:repository/team/app",
                                     "scan-frequency": "CONTINUOUS_SCAN",
                                     "previous-scan-frequency": "MANUAL"}]}
    });
    let parsed = parse_value(&event, InputFormat::Envelope).expect("parse");
    assert_eq!(
        parsed.change,
        Change::RegistryChanged {
            call: RegistryCall::ScanResourceChange {
                repositories: vec![RepositoryName::parse("team/app").expect("name")],
            }
        }
    );
    assert_eq!(parsed.change.kind(), "registry_changed");

    // A list that cannot be read whole is not trusted in part: every repository is re-read.
    let whole_registry = |repositories: Value| {
        let mut changed = event.clone();
        changed["detail"]["repositories"] = repositories;
        match parse_value(&changed, InputFormat::Envelope)
            .expect("parse")
            .change
        {
            Change::RegistryChanged {
                call: RegistryCall::ScanResourceChange { repositories },
            } => repositories.is_empty(),
            other => panic!("{other:?}"),
        }
    };
    assert!(whole_registry(
        json!([{"repository-name": "team/app"}, {"repository-name": "Bad Name!"}])
    ));
    assert!(whole_registry(
        json!([{"repository-arn": "arn:aws:ecr:eu-west-1:1:repository/x"}])
    ));
    assert!(whole_registry(json!("team/app")));
    assert!(whole_registry(json!(
        (0..1001)
            .map(|i| json!({"repository-name": format!("r{i}")}))
            .collect::<Vec<_>>()
    )));
    assert!(!whole_registry(
        json!([{"repository-name": "team/a"}, {"repository-name": "team/a"}])
    ));
}

#[test]
#[allow(
    clippy::too_many_lines,
    reason = "a table of CloudTrail calls and what each must re-read"
)]
fn pull_through_rule_and_creation_template_calls_re_read_the_registry() {
    let cases = [
        (
            "CreatePullThroughCacheRule",
            json!({"ecrRepositoryPrefix": "hub", "upstreamRegistryUrl": "registry-1.docker.io"}),
            RegistryCall::CreatePullThroughCacheRule {
                ecr_repository_prefix: Some("hub".into()),
            },
        ),
        (
            "DeletePullThroughCacheRule",
            json!({"ecrRepositoryPrefix": "hub"}),
            RegistryCall::DeletePullThroughCacheRule {
                ecr_repository_prefix: Some("hub".into()),
            },
        ),
        (
            "CreateRepositoryCreationTemplate",
            json!({"prefix": "hub", "appliedFor": ["PULL_THROUGH_CACHE"]}),
            RegistryCall::CreateRepositoryCreationTemplate {
                prefix: Some("hub".into()),
            },
        ),
        (
            "UpdateRepositoryCreationTemplate",
            json!({"prefix": "ROOT", "appliedFor": ["CREATE_ON_PUSH"]}),
            RegistryCall::UpdateRepositoryCreationTemplate {
                prefix: Some("ROOT".into()),
            },
        ),
        (
            "DeleteRepositoryCreationTemplate",
            json!({"prefix": "hub"}),
            RegistryCall::DeleteRepositoryCreationTemplate {
                prefix: Some("hub".into()),
            },
        ),
    ];
    for (event_name, params, expected) in cases {
        let parsed = parse_value(
            &cloudtrail(event_name, params, Value::Null),
            InputFormat::Envelope,
        )
        .expect(event_name);
        assert_eq!(expected.name(), event_name);
        assert_eq!(
            parsed.change,
            Change::RegistryChanged { call: expected },
            "{event_name}"
        );
        assert_eq!(parsed.change.kind(), "registry_changed");
    }
    // Changing a rule's credentials does not change what it creates.
    let update = parse_value(
        &cloudtrail(
            "UpdatePullThroughCacheRule",
            json!({"ecrRepositoryPrefix": "hub", "credentialArn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:ecr-pullthroughcache/hub"}),
            Value::Null,
        ),
        InputFormat::Envelope,
    )
    .expect("update");
    assert_eq!(update.change.kind(), "ignored");
}

#[test]
fn event_times_are_held_to_the_queues_own_timestamp() {
    let sent_at = DateTime::parse_from_rfc3339("2026-11-20T12:00:00Z")
        .expect("time")
        .with_timezone(&Utc);
    let minutes = chrono::Duration::minutes;
    // (case, claimed offset from sent_at, offset taken)
    let cases = [
        ("a minute before", minutes(-1), minutes(-1)),
        ("within the skew ahead", minutes(4), minutes(4)),
        ("in the future", minutes(90), EVENT_TIME_AHEAD),
        ("two days early", minutes(-2 * 24 * 60), -EVENT_TIME_BEHIND),
    ];
    for (case, claimed, taken) in cases {
        let mut event =
            parse_value(&image_action("PUSH", json!({})), InputFormat::Envelope).expect("parse");
        event.time = sent_at + claimed;
        let clamped = bound_event_time(&mut event, sent_at);
        assert_eq!(event.time, sent_at + taken, "{case}");
        assert_eq!(clamped, claimed != taken, "{case}");
        assert_eq!(
            event.claimed_time,
            clamped.then_some(sent_at + claimed),
            "{case}"
        );
    }
}

#[test]
fn ids_in_ecr_audits_own_namespace_are_refused() {
    for id in [
        "e1/team/app/ECR.2".to_owned(),
        "reconcile/1/123456789012/us-east-1/x".to_owned(),
        "x".repeat(129),
    ] {
        let mut envelope = image_action("PUSH", json!({}));
        envelope["id"] = json!(id);
        assert_eq!(
            parse_value(&envelope, InputFormat::Envelope).map_err(|e| e.code()),
            Err("reserved_id"),
            "{id}"
        );
        let mut wrapped = cloudtrail(
            "DeleteLifecyclePolicy",
            json!({"repositoryName": "team/app"}),
            Value::Null,
        );
        wrapped["detail"]["eventID"] = json!(id);
        assert_eq!(
            parse_value(&wrapped, InputFormat::Envelope).map_err(|e| e.code()),
            Err("reserved_id"),
            "{id}"
        );
    }
}

#[test]
fn every_string_of_a_message_is_bounded_before_it_is_kept() {
    let long = "x".repeat(100_000);
    let mut envelope = image_action("PUSH", json!({}));
    envelope["detail-type"] = json!(long);
    let ignored = parse_value(&envelope, InputFormat::Envelope).expect("parse");
    assert!(ignored.detail_type.chars().count() <= MAX_MESSAGE_STRING + 1);
    let Change::Ignored { reason } = &ignored.change else {
        panic!("an unknown detail-type is ignored: {:?}", ignored.change);
    };
    assert!(reason.len() < 2 * MAX_MESSAGE_STRING, "{}", reason.len());

    let mut failed = cloudtrail(
        "PutImageTagMutability",
        json!({"repositoryName": "team/app", "imageTagMutability": long}),
        Value::Null,
    );
    failed["detail"]["errorCode"] = json!("AccessDenied");
    failed["detail"]["errorMessage"] = json!(long);
    failed["detail"]["userIdentity"]["arn"] = json!(long);
    let event = parse_value(&failed, InputFormat::Envelope).expect("parse");
    let stored = serde_json::to_string(&event).expect("serialise");
    assert!(stored.len() < 8 * MAX_MESSAGE_STRING, "{}", stored.len());
}

/// A CloudTrail record of an AWS Signer call, as EventBridge delivers it (source `aws.signer`).
fn signer_call(name: &str, params: Value) -> Value {
    let mut event = cloudtrail(name, params, Value::Null);
    event["source"] = json!("aws.signer");
    event["detail"]["eventSource"] = json!("signer.amazonaws.com");
    event
}

#[test]
fn signer_revocations_name_what_they_revoke_as_the_stored_arns_do() {
    let job = parse_value(
        &signer_call(
            "RevokeSignature",
            json!({"jobId": "5bd1a2c3-0000-4000-8000-00000000000a", "reason": "key leak"}),
        ),
        InputFormat::Envelope,
    )
    .expect("parses");
    assert_eq!(job.change.kind(), "signer_revoked");
    assert_eq!(job.id, "ct-event-1");
    let Change::SignerRevoked { revocation } = &job.change else {
        panic!("not a revocation: {:?}", job.change);
    };
    assert_eq!(revocation.name(), "RevokeSignature");
    assert_eq!(
        revocation.revoked_arn(job.region.as_str(), &job.account),
        "arn:aws:signer:us-east-1:123456789012:/signing-jobs/5bd1a2c3-0000-4000-8000-00000000000a"
    );

    let profile = parse_value(
        &signer_call(
            "RevokeSigningProfile",
            json!({"profileName": "release", "profileVersion": "a1B2c3D4e5",
                   "reason": "rotated", "effectiveTime": 1_764_547_200}),
        ),
        InputFormat::Envelope,
    )
    .expect("parses");
    let Change::SignerRevoked { revocation } = &profile.change else {
        panic!("not a revocation: {:?}", profile.change);
    };
    assert_eq!(
        revocation,
        &SignerRevocation::RevokeSigningProfile {
            profile_name: "release".into(),
            profile_version: "a1B2c3D4e5".into(),
            effective_time: Some("1764547200".into()),
            reason: Some("rotated".into()),
        }
    );
    assert_eq!(
        revocation.revoked_arn("us-gov-west-1", &profile.account),
        "arn:aws-us-gov:signer:us-gov-west-1:123456789012:/signing-profiles/release/a1B2c3D4e5"
    );
}

#[test]
fn a_revoked_job_of_another_account_is_named_with_its_owner() {
    let event = parse_value(
        &signer_call(
            "RevokeSignature",
            json!({"jobId": "job-1", "jobOwner": "444455556666", "reason": "r"}),
        ),
        InputFormat::Envelope,
    )
    .expect("parses");
    let Change::SignerRevoked { revocation } = &event.change else {
        panic!("not a revocation");
    };
    assert_eq!(
        revocation.revoked_arn("eu-west-1", &event.account),
        "arn:aws:signer:eu-west-1:444455556666:/signing-jobs/job-1"
    );
    let bad_owner = signer_call(
        "RevokeSignature",
        json!({"jobId": "job-1", "jobOwner": "not-an-account", "reason": "r"}),
    );
    assert_eq!(
        parse_value(&bad_owner, InputFormat::Envelope).map_err(|e| e.code()),
        Err("invalid_identifier")
    );
}

#[test]
fn other_failed_or_incomplete_signer_calls_change_nothing() {
    let other = parse_value(
        &signer_call("StartSigningJob", json!({"profileName": "release"})),
        InputFormat::Envelope,
    )
    .expect("parses");
    assert!(matches!(other.change, Change::Ignored { .. }), "{other:?}");

    // An id that cannot be put into an ARN safely is not trusted as one.
    for params in [
        json!({"reason": "no job"}),
        json!({"jobId": "../x", "reason": "r"}),
        json!({"jobId": "a%27b", "reason": "r"}),
    ] {
        let event = parse_value(
            &signer_call("RevokeSignature", params),
            InputFormat::Envelope,
        )
        .expect("parses");
        assert!(matches!(event.change, Change::Ignored { .. }), "{event:?}");
    }
    let incomplete = parse_value(
        &signer_call("RevokeSigningProfile", json!({"profileName": "release"})),
        InputFormat::Envelope,
    )
    .expect("parses");
    assert!(matches!(incomplete.change, Change::Ignored { .. }));

    let mut failed = signer_call("RevokeSignature", json!({"jobId": "job-1"}));
    failed["detail"]["errorCode"] = json!("AccessDeniedException");
    let failed = parse_value(&failed, InputFormat::Envelope).expect("parses");
    assert!(
        matches!(&failed.change, Change::FailedApiCall { event_name, repository: None, .. } if event_name == "RevokeSignature"),
        "{failed:?}"
    );
}

#[test]
fn a_signer_record_from_a_cloudtrail_log_file_is_understood_too() {
    let event = signer_call(
        "RevokeSigningProfile",
        json!({"profileName": "release", "profileVersion": "v1", "reason": "r",
               "effectiveTime": "Dec 1, 2026 12:00:00 AM"}),
    );
    let record = &event["detail"];
    let parsed = parse_value(record, InputFormat::CloudTrailRecord).expect("parses");
    assert_eq!(parsed.change.kind(), "signer_revoked");
}

/// An ECR Public CloudTrail record (source `aws.ecr-public`, us-east-1).
fn public_cloudtrail(name: &str, params: Value) -> Value {
    let mut record = cloudtrail(name, params, Value::Null);
    record["source"] = json!("aws.ecr-public");
    record["detail"]["eventSource"] = json!("ecr-public.amazonaws.com");
    record
}

#[test]
fn ecr_public_calls_re_read_the_public_repository_in_its_pseudo_region() {
    let arn = "arn:aws:ecr-public::123456789012:repository/tools/cli";
    let cases = [
        (
            "TagResource",
            json!({"resourceArn": arn, "tags": [{"key": "team", "value": "a"}]}),
            RepositoryCall::TagResource,
        ),
        (
            "UntagResource",
            json!({"resourceArn": arn, "tagKeys": ["team"]}),
            RepositoryCall::UntagResource,
        ),
        (
            "CreateRepository",
            json!({"repositoryName": "tools/cli"}),
            RepositoryCall::CreateRepository,
        ),
        (
            "DeleteRepository",
            json!({"repositoryName": "tools/cli", "force": true}),
            RepositoryCall::DeleteRepository { force: Some(true) },
        ),
    ];
    for (name, params, call) in cases {
        let event =
            parse_value(&public_cloudtrail(name, params), InputFormat::Envelope).expect(name);
        assert_eq!(event.region.as_str(), "ecr-public", "{name}");
        assert_eq!(
            event.change,
            Change::RepositoryChanged {
                repository: RepositoryName::parse("tools/cli").expect("name"),
                call,
            },
            "{name}"
        );
        assert!(event.actor.is_some(), "{name}");
    }
    // A failed call is evidence and changes nothing; a read or another call is not evaluated.
    let mut failed = public_cloudtrail("TagResource", json!({"resourceArn": arn}));
    failed["detail"]["errorCode"] = json!("AccessDeniedException");
    let failed = parse_value(&failed, InputFormat::Envelope).expect("failed");
    assert_eq!(failed.change.kind(), "failed_api_call");
    assert_eq!(failed.region.as_str(), "ecr-public");
    for name in ["DescribeRepositories", "PutRepositoryCatalogData"] {
        let event =
            parse_value(&public_cloudtrail(name, json!({})), InputFormat::Envelope).expect(name);
        assert_eq!(event.change.kind(), "ignored", "{name}");
    }
}

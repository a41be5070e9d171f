//! Unit tests of the trust module that need no fixtures: policy parsing and validation,
//! policy selection, the level table, hostile bytes into the envelope parsers.

use super::policy::{
    Action, Enforcement, Level, PolicyError, TrustPolicyDocument, TrustedIdentity, Validation,
};
use super::*;

fn policy_json(policies: &str) -> String {
    format!(r#"{{"version":"1.0","trustPolicies":[{policies}]}}"#)
}

const STRICT_APP: &str = r#"{"name":"app","registryScopes":["r.example/team/app"],
    "signatureVerification":{"level":"strict"},"trustStores":["ca:acme"],
    "trustedIdentities":["x509.subject: C=US, ST=WA, O=acme"]}"#;

fn parse(policies: &str) -> Result<TrustPolicyDocument, PolicyError> {
    TrustPolicyDocument::from_json(policy_json(policies).as_bytes())
}

fn problem(policies: &str) -> String {
    match parse(policies) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("accepted: {policies}"),
    }
}

#[test]
fn a_valid_policy_parses_with_its_identities_and_stores() {
    let doc = parse(&format!(
        r#"{STRICT_APP},{{"name":"signer","registryScopes":["r.example/team/signed"],
        "signatureVerification":{{"level":"permissive","override":{{"revocation":"skip"}}}},
        "trustStores":["signingAuthority:aws-signer"],
        "trustedIdentities":["arn:aws:signer:us-east-1:111122223333:/signing-profiles/p"]}},
        {{"name":"global","registryScopes":["*"],"signatureVerification":{{"level":"audit"}},
        "trustStores":["ca:acme"],"trustedIdentities":["*"]}}"#
    ))
    .expect("valid");
    assert_eq!(doc.policies.len(), 3);
    assert_eq!(
        doc.policies[0].trusted_identities,
        vec![TrustedIdentity::Subject(vec![
            ("C".into(), "US".into()),
            ("ST".into(), "WA".into()),
            ("O".into(), "acme".into())
        ])]
    );
    assert_eq!(doc.policies[1].enforcement.revocation, Action::Skip);
    assert_eq!(
        doc.policy_for("r.example/team/app")
            .map(|p| p.name.as_str()),
        Some("app")
    );
    assert_eq!(
        doc.policy_for("r.example/elsewhere")
            .map(|p| p.name.as_str()),
        Some("global")
    );
    assert_eq!(doc.file_sha256.len(), 64);
}

#[test]
fn without_a_global_policy_an_unknown_scope_has_no_policy() {
    let doc = parse(STRICT_APP).expect("valid");
    assert!(doc.policy_for("r.example/other").is_none());
}

#[test]
fn invalid_policies_are_refused_with_the_rule_they_break() {
    assert!(matches!(
        TrustPolicyDocument::from_json(br#"{"version":"2.0","trustPolicies":[]}"#),
        Err(PolicyError::Version(_))
    ));
    assert!(matches!(
        TrustPolicyDocument::from_json(b"{"),
        Err(PolicyError::Json(_))
    ));
    assert!(matches!(parse(""), Err(PolicyError::Empty)));
    assert!(matches!(
        parse(&format!("{STRICT_APP},{STRICT_APP}")),
        Err(PolicyError::DuplicateName(_))
    ));
    let twice = STRICT_APP.replace(r#""name":"app""#, r#""name":"app2""#);
    assert!(matches!(
        parse(&format!("{STRICT_APP},{twice}")),
        Err(PolicyError::ScopeInTwoPolicies { .. })
    ));
    let global = |name: &str| {
        format!(
            r#"{{"name":"{name}","registryScopes":["*"],"signatureVerification":{{"level":"audit"}},
            "trustStores":["ca:a"],"trustedIdentities":["*"]}}"#
        )
    };
    assert!(matches!(
        parse(&format!("{},{}", global("g1"), global("g2"))),
        Err(PolicyError::TwoGlobalPolicies { .. })
    ));
    for (from, to, expected) in [
        (
            r#"["r.example/team/app"]"#,
            r#"["*","r.example/x"]"#,
            "must be the only scope",
        ),
        (
            r#"["r.example/team/app"]"#,
            r#"["r.example/team/*"]"#,
            "REGISTRY/REPOSITORY",
        ),
        (
            r#"["r.example/team/app"]"#,
            r#"["app"]"#,
            "REGISTRY/REPOSITORY",
        ),
        (r#"["r.example/team/app"]"#, "[]", "registryScopes is empty"),
        (
            r#""strict""#,
            r#""paranoid""#,
            "is not strict, permissive, audit or skip",
        ),
        (r#"["ca:acme"]"#, r#"["tsa:acme"]"#, "is not supported"),
        (r#"["ca:acme"]"#, r#"["acme"]"#, "must be TYPE:NAME"),
        (
            r#"["ca:acme"]"#,
            r#"["ca:../etc"]"#,
            "not a valid directory name",
        ),
        (r#"["ca:acme"]"#, "[]", "trustStores is empty"),
        (
            r#"["x509.subject: C=US, ST=WA, O=acme"]"#,
            r#"["x509.subject: CN=me"]"#,
            "at least C, ST",
        ),
        (
            r#"["x509.subject: C=US, ST=WA, O=acme"]"#,
            r#"["someone"]"#,
            "must be \"*\"",
        ),
        (
            r#"["x509.subject: C=US, ST=WA, O=acme"]"#,
            r#"["*","x509.subject: C=US, ST=WA, O=acme"]"#,
            "only trusted identity",
        ),
        (
            r#"["x509.subject: C=US, ST=WA, O=acme"]"#,
            r#"["x509.subject: C=US, ST=WA, O=acme","x509.subject: C=US, ST=WA, O=acme, OU=x"]"#,
            "overlap",
        ),
        (
            r#"["x509.subject: C=US, ST=WA, O=acme"]"#,
            r#"["arn:aws:signer:us-east-1:111122223333:/signing-profiles/p"]"#,
            "need a signingAuthority trust store",
        ),
        (
            r#""strict"}"#,
            r#""strict","override":{"integrity":"log"}}"#,
            "integrity cannot be overridden",
        ),
        (
            r#""strict"}"#,
            r#""strict","override":{"expiry":"skip"}}"#,
            "is not allowed",
        ),
    ] {
        let changed = STRICT_APP.replacen(from, to, 1);
        assert_ne!(changed, STRICT_APP, "substitution {from} did not apply");
        let message = problem(&changed);
        assert!(message.contains(expected), "{to}: {message}");
        assert!(
            message.contains("\"app\""),
            "the message names the policy: {message}"
        );
    }
    let skip_global =
        r#"{"name":"g","registryScopes":["*"],"signatureVerification":{"level":"skip"}}"#;
    assert!(problem(skip_global).contains("global scope"));
    let unknown_field = STRICT_APP.replace(r#""name""#, r#""nmae":1,"name""#);
    assert!(matches!(parse(&unknown_field), Err(PolicyError::Json(_))));
}

#[test]
fn level_table_matches_notation() {
    use Action::{Enforce, Log, Skip};
    let row = |level| {
        let e = Enforcement::for_level(level);
        [
            e.action(Validation::Integrity),
            e.action(Validation::Authenticity),
            e.action(Validation::AuthenticTimestamp),
            e.action(Validation::Expiry),
            e.action(Validation::Revocation),
        ]
    };
    assert_eq!(row(Level::Strict), [Enforce; 5]);
    assert_eq!(row(Level::Permissive), [Enforce, Enforce, Log, Log, Log]);
    assert_eq!(row(Level::Audit), [Enforce, Log, Log, Log, Log]);
    assert_eq!(row(Level::Skip), [Skip; 5]);
}

fn verify_bytes(media_type: &str, bytes: &[u8]) -> SignatureCheck {
    let doc = parse(STRICT_APP).expect("valid");
    let stores = TrustStores::new();
    let limits = Limits::default();
    let verifier = Verifier {
        policy: &doc,
        stores: &stores,
        limits: &limits,
    };
    let subject = Descriptor {
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        digest: crate::domain::Digest::parse(&format!("sha256:{}", "a".repeat(64)))
            .expect("digest"),
        size: 1,
    };
    verifier.verify_notation(
        media_type,
        bytes,
        &subject,
        "r.example/team/app",
        chrono::Utc::now(),
    )
}

#[test]
fn hostile_bytes_are_rejected_not_panicked_on() {
    let nested_json = format!("{}{}", "[".repeat(50_000), "]".repeat(10));
    let nested_cbor = [vec![0xd2], vec![0x81; 60_000]].concat();
    for (media_type, bytes, failure) in [
        (
            "application/jose+json",
            b"".to_vec(),
            Failure::EnvelopeUnreadable,
        ),
        (
            "application/jose+json",
            nested_json.into_bytes(),
            Failure::EnvelopeUnreadable,
        ),
        (
            "application/jose+json",
            vec![b' '; 70_000],
            Failure::EnvelopeTooLarge,
        ),
        (
            "application/jose+json",
            br#"{"payload":"","protected":"e30","header":{"x5c":[]},"signature":""}"#.to_vec(),
            Failure::EnvelopeUnreadable,
        ),
        (
            "application/jose+json",
            br#"{"payload":"","protected":"eyJhbGciOiJub25lIn0","header":{},"signature":""}"#
                .to_vec(),
            Failure::UnsupportedAlgorithm,
        ),
        (
            "application/cose",
            vec![0xd2, 0x84, 0x40, 0xa0, 0xf6, 0x40],
            Failure::EnvelopeUnreadable,
        ),
        (
            "application/cose",
            nested_cbor[..40_000].to_vec(),
            Failure::EnvelopeUnreadable,
        ),
        (
            "application/cose",
            vec![0xff; 10],
            Failure::EnvelopeUnreadable,
        ),
        (
            "application/pgp-signature",
            b"x".to_vec(),
            Failure::UnsupportedEnvelope,
        ),
    ] {
        assert_eq!(
            verify_bytes(media_type, &bytes).failure(),
            Some(failure),
            "{media_type} {} bytes",
            bytes.len()
        );
    }
}

mod aws_signer_default {
    use super::super::aws_signer::{
        DEFAULT_STORE_NAME, PINNED_ROOTS, check_pins, default_policy, der_fingerprints,
    };
    use super::super::policy::{Level, StoreKind, TrustedIdentity};

    const PROFILE: &str = "arn:aws:signer:us-east-1:111122223333:/signing-profiles/release";
    const OTHER: &str = "arn:aws:signer:us-east-1:111122223333:/signing-profiles/nightly";

    #[test]
    fn the_pinned_roots_match_their_pinned_fingerprints() {
        check_pins().expect("pinned roots match");
        for root in &PINNED_ROOTS {
            let fingerprints = der_fingerprints(root.bytes);
            assert_eq!(
                fingerprints,
                vec![root.der_sha256.to_owned()],
                "{}",
                root.file
            );
        }
        // The commercial root is the one cross-checked against independent fingerprints
        // (config/trust/aws-signer/PROVENANCE.md), and the only one trusted by default.
        assert_eq!(
            PINNED_ROOTS[0].der_sha256,
            "90a87d0543c3f094dbff9589b6649affe2f3d6e0f308799be2258461c686473f"
        );
        let defaults: Vec<&str> = PINNED_ROOTS
            .iter()
            .filter(|r| r.in_default)
            .map(|r| r.partition)
            .collect();
        assert_eq!(defaults, ["aws"]);
    }

    #[test]
    fn the_commercial_root_is_the_file_aws_publishes_byte_for_byte() {
        use sha2::{Digest as _, Sha256};
        assert_eq!(
            hex::encode(Sha256::digest(PINNED_ROOTS[0].bytes)),
            "0ccf529561f610b9eb7f9b0ee02fffe2f74f7ffdf0ac56348ca224e879461c9b"
        );
    }

    #[test]
    fn the_default_trusts_the_pinned_root_for_the_managed_signing_profiles_only() {
        let policy = default_policy([PROFILE, OTHER, PROFILE]).expect("a default policy");
        let only = &policy.document.policies[0];
        assert_eq!(policy.document.policies.len(), 1);
        assert_eq!(only.registry_scopes, ["*"]);
        assert_eq!(only.enforcement.level, Level::Strict);
        assert_eq!(
            only.trusted_identities,
            [
                TrustedIdentity::SignerProfile(OTHER.to_owned()),
                TrustedIdentity::SignerProfile(PROFILE.to_owned())
            ]
        );
        let roots = policy
            .stores
            .roots(StoreKind::SigningAuthority, DEFAULT_STORE_NAME)
            .expect("the default store");
        assert_eq!(roots.len(), 1);
        assert!(policy.missing_stores().is_empty());
        assert!(
            policy
                .version
                .starts_with(&crate::trust::aws_signer::version_family())
        );
    }

    #[test]
    fn the_default_version_moves_with_the_rules_and_ignores_their_order() {
        let one = default_policy([PROFILE]).expect("policy").version;
        let both = default_policy([PROFILE, OTHER]).expect("policy").version;
        let swapped = default_policy([OTHER, PROFILE]).expect("policy").version;
        assert_ne!(one, both);
        assert_eq!(both, swapped);
    }

    #[test]
    fn no_profile_or_only_malformed_ones_is_no_default() {
        assert!(default_policy([]).is_none());
        assert!(default_policy(["not-an-arn", "arn:aws:s3:::bucket"]).is_none());
        let kept = default_policy(["not-an-arn", PROFILE]).expect("the valid one is kept");
        assert_eq!(kept.document.policies[0].trusted_identities.len(), 1);
    }
}

#[test]
fn every_failure_has_its_own_verification_metric_label() {
    use crate::telemetry::VerificationCheck;
    let mut names: Vec<&str> = Failure::ALL.iter().map(|f| f.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), Failure::ALL.len(), "failure names are unique");
    for failure in Failure::ALL {
        let label = VerificationCheck::from_check(failure.as_str());
        assert_eq!(label.as_str(), failure.as_str());
    }
    assert_eq!(
        VerificationCheck::from_check("made_up"),
        VerificationCheck::Other
    );
}

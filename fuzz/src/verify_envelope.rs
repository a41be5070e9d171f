//! What must hold for every envelope the signature verifier sees: it never panics, it answers
//! the same twice, a rejection names its check with a short non-empty reason, and a verified
//! signature is of the fixed subject. The seeds in fuzz/corpus/verify_envelope/ are real
//! signatures by tests/signing/ under the root in fuzz/verify_envelope/root.pem, so mutations
//! reach the certificate and signature checks, not only the parsers.

use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use ecr_audit::domain::Digest;
use ecr_audit::trust::{
    Descriptor, Limits, SignatureCheck, StoreKind, TrustPolicyDocument, TrustStores, Verifier,
};

const POLICY: &[u8] = include_bytes!("../verify_envelope/trustpolicy.json");
const ROOT: &[u8] = include_bytes!("../verify_envelope/root.pem");
const SCOPE: &str = "111122223333.dkr.ecr.us-east-1.amazonaws.com/team/app";

struct Config {
    policy: TrustPolicyDocument,
    stores: TrustStores,
    limits: Limits,
    subject: Descriptor,
    now: DateTime<Utc>,
}

fn config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let mut stores = TrustStores::new();
        stores.add(StoreKind::Ca, "test", ROOT).expect("fuzz root");
        Config {
            policy: TrustPolicyDocument::from_json(POLICY).expect("fuzz policy"),
            stores,
            limits: Limits::default(),
            subject: serde_json::from_slice::<serde_json::Value>(include_bytes!(
                "../verify_envelope/subject.json"
            ))
            .ok()
            .and_then(|v| {
                Some(Descriptor {
                    media_type: v["mediaType"].as_str()?.to_owned(),
                    digest: Digest::parse(v["digest"].as_str()?).ok()?,
                    size: v["size"].as_u64()?,
                })
            })
            .expect("fuzz subject"),
            // A fixed instant inside the seeds' validity, so runs are reproducible.
            now: DateTime::parse_from_rfc3339(include_str!("../verify_envelope/now.txt").trim())
                .expect("fuzz now")
                .with_timezone(&Utc),
        }
    })
}

/// Feeds `data` (first byte: even → JWS, odd → COSE) to the verifier and checks its promises.
///
/// # Panics
/// When the verifier breaks one: that is the finding.
pub fn check(data: &[u8]) {
    let Some((selector, envelope)) = data.split_first() else {
        return;
    };
    let media_type = if selector % 2 == 0 {
        "application/jose+json"
    } else {
        "application/cose"
    };
    let c = config();
    let verifier = Verifier {
        policy: &c.policy,
        stores: &c.stores,
        limits: &c.limits,
    };
    let outcome = verifier.verify_notation(media_type, envelope, &c.subject, SCOPE, c.now);
    assert_eq!(
        outcome,
        verifier.verify_notation(media_type, envelope, &c.subject, SCOPE, c.now),
        "verifying the same bytes twice gave two answers"
    );
    match outcome {
        SignatureCheck::Rejected(rejection) => {
            assert!(
                !rejection.reason.is_empty(),
                "{:?} without a reason",
                rejection.failure
            );
            assert!(
                rejection.reason.chars().count() <= 301,
                "reason too long: {}",
                rejection.reason.len()
            );
        }
        SignatureCheck::Verified(verified) => {
            assert!(verified.envelope_digest.starts_with("sha256:"));
            assert_eq!(verified.policy, "fuzz");
        }
        SignatureCheck::Skipped { .. } => panic!("the fuzz policy never skips"),
    }
}

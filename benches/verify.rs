//! Verification cost per signature, printed as a table: `scripts/bench` runs it
//! (`cargo bench --bench verify -- N`).
//!
//! Signatures are made fresh by the independent Python signer (tests/signing/make_fixtures.py,
//! run with the test virtualenv's Python) and verified `N` times each (default 2000) through
//! the same entry points the pipeline uses: `Verifier::verify_notation` for Notary JWS and
//! COSE envelopes (parse, signature, chain to the trust store, identity, times) and
//! `verify_cosign_simple_signing` for Cosign key signatures. The figures are CPU time on one
//! core, without the download (which the pipeline does once per envelope and trust-policy
//! version, docs/PERFORMANCE.md).

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use chrono::Utc;
use ecr_audit::domain::Digest;
use ecr_audit::trust::{
    CosignKey, Descriptor, Limits, SignatureCheck, TrustPolicyDocument, TrustStores, Verifier,
    aws_signer, verify_cosign_simple_signing,
};

const SCOPE_CA: &str = "111122223333.dkr.ecr.us-east-1.amazonaws.com/team/app";
const SCOPE_SIGNER: &str = "111122223333.dkr.ecr.us-east-1.amazonaws.com/team/signed";

/// (label, fixture file, envelope media type, repository scope) of each Notary row.
const NOTARY_CASES: &[(&str, &str, &str, &str)] = &[
    ("Notation JWS, EC P-256 (ca)", "good.jws", JWS, SCOPE_CA),
    ("Notation COSE, EC P-256 (ca)", "good.cose", COSE, SCOPE_CA),
    (
        "Notation JWS, RSA 3072 PS384 (ca)",
        "good_rsa.jws",
        JWS,
        SCOPE_CA,
    ),
    (
        "Notation COSE, RSA 3072 PS384 (ca)",
        "good_rsa.cose",
        COSE,
        SCOPE_CA,
    ),
    (
        "AWS Signer-like JWS (signingAuthority)",
        "good_signer.jws",
        JWS,
        SCOPE_SIGNER,
    ),
    (
        "AWS Signer-like COSE (signingAuthority)",
        "good_signer.cose",
        COSE,
        SCOPE_SIGNER,
    ),
    (
        "forged JWS (bad signature)",
        "bad_signature.jws",
        JWS,
        SCOPE_CA,
    ),
    ("junk JWS (15 bytes)", "junk.jws", JWS, SCOPE_CA),
];
const JWS: &str = "application/jose+json";
const COSE: &str = "application/cose";

fn main() {
    let runs: u32 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(2000);
    let dir = tempfile::tempdir().expect("temporary directory");
    make_fixtures(dir.path());
    let root = dir.path();
    let policy = TrustPolicyDocument::from_json(&read(root, "trustpolicy.json")).expect("policy");
    let limits = Limits::default();
    let stores = TrustStores::load(&root.join("truststore"), &limits).expect("trust store");
    let subject = descriptor(&read(root, "subject.json"));
    let verifier = Verifier {
        policy: &policy,
        stores: &stores,
        limits: &limits,
    };
    let now = Utc::now();

    println!("signature verification, {runs} runs each, one core (µs per signature):");
    println!("| signature | envelope bytes | outcome | µs |");
    println!("|---|---|---|---|");
    notary_rows(runs, root, &verifier, &subject, now);
    let key = CosignKey::from_pem(&read(root, "cosign.pub")).expect("cosign.pub");
    let keys = [key];
    let payload = read(root, "cosign-good.payload");
    let signature = String::from_utf8(read(root, "cosign-good.sig")).expect("utf-8");
    let (micros, outcome) = time(runs, || {
        verify_cosign_simple_signing(
            black_box(&payload),
            &signature,
            &subject.digest,
            &keys,
            &limits,
        )
    });
    println!(
        "| Cosign key signature, ECDSA P-256 | {} | {outcome} | {micros:.1} |",
        payload.len()
    );

    let profile = "arn:aws:signer:us-east-1:111122223333:/signing-profiles/app_profile";
    let start = Instant::now();
    for _ in 0..runs {
        black_box(aws_signer::default_policy([black_box(profile)]));
    }
    let micros = start.elapsed().as_secs_f64() * 1e6 / f64::from(runs);
    println!("| (building the default AWS Signer policy for one registry) | – | – | {micros:.1} |");
}

/// The Notary rows: good signatures of each kind, a forged one and junk.
fn notary_rows(
    runs: u32,
    root: &Path,
    verifier: &Verifier<'_>,
    subject: &Descriptor,
    now: chrono::DateTime<Utc>,
) {
    for &(label, file, media_type, scope) in NOTARY_CASES {
        let bytes = if file == "junk.jws" {
            b"not an envelope".to_vec()
        } else {
            read(root, file)
        };
        let (micros, outcome) = time(runs, || {
            verifier.verify_notation(media_type, black_box(&bytes), subject, scope, now)
        });
        println!("| {label} | {} | {outcome} | {micros:.1} |", bytes.len());
    }
}

/// Mean µs of `runs` calls of `verify`, and the outcome's short name (the same each time).
fn time(runs: u32, mut verify: impl FnMut() -> SignatureCheck) -> (f64, String) {
    let outcome = match verify() {
        SignatureCheck::Verified(_) => "verified".to_owned(),
        SignatureCheck::Skipped { .. } => "skipped".to_owned(),
        SignatureCheck::Rejected(r) => format!("rejected: {}", r.failure.as_str()),
    };
    let start = Instant::now();
    for _ in 0..runs {
        black_box(verify());
    }
    (
        start.elapsed().as_secs_f64() * 1e6 / f64::from(runs),
        outcome,
    )
}

fn make_fixtures(dir: &Path) {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = std::env::var_os("ECR_AUDIT_EMULATOR_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest_dir.join(".venv/bin/python"));
    let status = Command::new(&python)
        .arg(manifest_dir.join("tests/signing/make_fixtures.py"))
        .arg(dir)
        .status()
        .unwrap_or_else(|e| panic!("{}: {e} (run `scripts/services up` once)", python.display()));
    assert!(status.success(), "make_fixtures.py failed: {status}");
}

fn read(root: &Path, name: &str) -> Vec<u8> {
    std::fs::read(root.join(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

fn descriptor(bytes: &[u8]) -> Descriptor {
    let value: serde_json::Value = serde_json::from_slice(bytes).expect("subject.json");
    Descriptor {
        media_type: value["mediaType"].as_str().expect("mediaType").to_owned(),
        digest: Digest::parse(value["digest"].as_str().expect("digest")).expect("digest"),
        size: value["size"].as_u64().expect("size"),
    }
}

//! Signed tree heads: the tree's size and root at a moment, as canonical JSON signed with an
//! AWS KMS asymmetric key (`ECC_NIST_P256`, `ECDSA_SHA_256` over the pre-computed SHA-256
//! digest), stored in `evidence_heads` (docs/EVIDENCE.md, "Signed tree heads").
//!
//! The worker never holds the private key: it asks KMS to sign a digest. Verifying needs only
//! the public key (`GetPublicKey`, exported as PEM).

use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use sqlx::{PgConnection, PgPool};

use super::chain::{micros, truncate_to_micros};
use super::tree::{self, TreeError};

/// The algorithm every signed head names.
pub const ALGORITHM: &str = "ECDSA_SHA_256";

/// What a head states; serialised in this member order, compactly, it is the signed message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TreeHead {
    pub log_id: String,
    /// The seq of the tree's first leaf (1 unless retention archived a prefix before the tree
    /// existed); leaf `i` is the record `first_seq + i`.
    pub first_seq: i64,
    pub tree_size: u64,
    /// Lowercase hex of the RFC 9162 root hash.
    pub root_hash: String,
    #[serde(with = "micros")]
    pub timestamp: DateTime<Utc>,
}

impl TreeHead {
    /// The exact bytes that are signed: compact JSON, members in declaration order.
    pub fn canonical(&self) -> Vec<u8> {
        // Strings, integers and a time cannot fail to serialise.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The seq of the last record the head covers.
    pub fn last_seq(&self) -> i64 {
        self.first_seq - 1 + i64::try_from(self.tree_size).unwrap_or(i64::MAX)
    }
}

/// A head with its signature, as stored, exported, anchored and verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedHead {
    pub head: TreeHead,
    /// `ECDSA_SHA_256`, or null for an unsigned head.
    pub algorithm: Option<String>,
    /// The KMS key that signed (its ARN as KMS reports it).
    pub key_id: Option<String>,
    /// Base64 of the DER ECDSA signature.
    pub signature: Option<String>,
}

/// Why a head could not be made, stored or checked.
#[derive(Debug, thiserror::Error)]
pub enum HeadError {
    #[error("evidence heads query failed: {0}")]
    Sql(#[from] sqlx::Error),
    #[error(transparent)]
    Tree(#[from] TreeError),
    #[error("KMS {operation} failed for key {key}: {message}")]
    Kms {
        operation: &'static str,
        key: String,
        message: String,
    },
    #[error("the public key is not an ECDSA P-256 SubjectPublicKeyInfo (PEM or DER)")]
    BadPublicKey,
    #[error("a stored head is not well-formed: {0}")]
    Malformed(String),
}

/// Why a signed head does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureProblem {
    #[error("unanchored: the head is not signed (no ECR_AUDIT_EVIDENCE_KEY when it was made)")]
    Unsigned,
    #[error(
        "the head's signature does not verify with the public key (another key, or an altered head)"
    )]
    Invalid,
    #[error("the head names algorithm {0}, not ECDSA_SHA_256")]
    Algorithm(String),
}

/// The signing side: AWS KMS.
#[derive(Clone, Debug)]
pub struct KmsSigner {
    client: aws_sdk_kms::Client,
    key: String,
}

impl KmsSigner {
    pub fn new(sdk: &aws_config::SdkConfig, key: String) -> Self {
        Self {
            client: aws_sdk_kms::Client::new(sdk),
            key,
        }
    }

    fn failed(&self, operation: &'static str, e: impl std::fmt::Display) -> HeadError {
        HeadError::Kms {
            operation,
            key: self.key.clone(),
            message: e.to_string(),
        }
    }

    /// Signs the SHA-256 digest of `message`: one `kms:Sign` call. Returns the key's ARN and the
    /// DER signature.
    ///
    /// # Errors
    /// When KMS refuses or cannot be reached.
    pub async fn sign(&self, message: &[u8]) -> Result<(String, Vec<u8>), HeadError> {
        let digest = Sha256::digest(message);
        let out = self
            .client
            .sign()
            .key_id(&self.key)
            .message(aws_smithy_types::Blob::new(digest.to_vec()))
            .message_type(aws_sdk_kms::types::MessageType::Digest)
            .signing_algorithm(aws_sdk_kms::types::SigningAlgorithmSpec::EcdsaSha256)
            .send()
            .await
            .map_err(|e| {
                self.failed(
                    "Sign",
                    aws_smithy_types::error::display::DisplayErrorContext(e),
                )
            })?;
        let signature = out
            .signature
            .map(aws_smithy_types::Blob::into_inner)
            .ok_or_else(|| self.failed("Sign", "no signature in the answer"))?;
        Ok((out.key_id.unwrap_or_else(|| self.key.clone()), signature))
    }

    /// The public key, DER SubjectPublicKeyInfo: one `kms:GetPublicKey` call.
    ///
    /// # Errors
    /// When KMS refuses or cannot be reached.
    pub async fn public_key(&self) -> Result<Vec<u8>, HeadError> {
        let out = self
            .client
            .get_public_key()
            .key_id(&self.key)
            .send()
            .await
            .map_err(|e| {
                self.failed(
                    "GetPublicKey",
                    aws_smithy_types::error::display::DisplayErrorContext(e),
                )
            })?;
        out.public_key
            .map(aws_smithy_types::Blob::into_inner)
            .ok_or_else(|| self.failed("GetPublicKey", "no public key in the answer"))
    }
}

/// A DER public key as PEM (`-----BEGIN PUBLIC KEY-----`).
pub fn to_pem(der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN PUBLIC KEY-----\n");
    for chunk in body.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(chunk));
        pem.push('\n');
    }
    pem.push_str("-----END PUBLIC KEY-----\n");
    pem
}

/// The EC point of a P-256 SubjectPublicKeyInfo given as PEM or DER.
///
/// # Errors
/// When the bytes are not such a key.
pub fn public_key_point(pem_or_der: &[u8]) -> Result<Vec<u8>, HeadError> {
    let der = match std::str::from_utf8(pem_or_der) {
        Ok(text) if text.contains("-----BEGIN") => {
            let body: String = text
                .lines()
                .filter(|l| !l.starts_with("-----"))
                .collect::<String>()
                .split_whitespace()
                .collect();
            STANDARD.decode(body).map_err(|_| HeadError::BadPublicKey)?
        }
        _ => pem_or_der.to_vec(),
    };
    use x509_parser::prelude::FromDer as _;
    let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(&der)
        .map_err(|_| HeadError::BadPublicKey)?;
    Ok(spki.subject_public_key.data.to_vec())
}

/// Checks a head's signature against the public key's EC point.
///
/// # Errors
/// When the head is unsigned, names another algorithm, or the signature does not verify.
pub fn verify_signature(head: &SignedHead, point: &[u8]) -> Result<(), SignatureProblem> {
    let (Some(algorithm), Some(signature)) = (&head.algorithm, &head.signature) else {
        return Err(SignatureProblem::Unsigned);
    };
    if algorithm != ALGORITHM {
        return Err(SignatureProblem::Algorithm(algorithm.clone()));
    }
    let signature = STANDARD
        .decode(signature)
        .map_err(|_| SignatureProblem::Invalid)?;
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, point)
        .verify(&head.head.canonical(), &signature)
        .map_err(|_| SignatureProblem::Invalid)
}

/// The newest head's tree size, when there is one.
///
/// # Errors
/// When the query fails.
pub async fn latest_size(pool: &PgPool) -> Result<Option<u64>, HeadError> {
    let size: Option<i64> = sqlx::query_scalar("SELECT max(tree_size) FROM evidence_heads")
        .fetch_one(pool)
        .await?;
    Ok(size.and_then(|s| u64::try_from(s).ok()))
}

/// The current tree size and root, read in one snapshot.
async fn current_head(conn: &mut PgConnection) -> Result<Option<TreeHead>, HeadError> {
    let (log_id, base) = tree::log_identity(conn).await?;
    let head_seq: i64 = sqlx::query_scalar("SELECT seq FROM evidence_chain_head WHERE id = 1")
        .fetch_one(&mut *conn)
        .await?;
    let size = u64::try_from(head_seq - base).unwrap_or(0);
    if size == 0 {
        return Ok(None);
    }
    let root = tree::root(conn, size).await?;
    Ok(Some(TreeHead {
        log_id,
        first_seq: base + 1,
        tree_size: size,
        root_hash: hex::encode(root),
        timestamp: truncate_to_micros(Utc::now()),
    }))
}

/// Makes a head of the current tree unless the newest head already has its size: one KMS call
/// when a signer is given, none otherwise (an unsigned head). Returns the head stored.
///
/// # Errors
/// When the database or KMS fails.
pub async fn make_head(
    pool: &PgPool,
    signer: Option<&KmsSigner>,
) -> Result<Option<SignedHead>, HeadError> {
    let head = {
        let mut tx = pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
        let head = current_head(&mut tx).await?;
        tx.commit().await?;
        head
    };
    let Some(head) = head else {
        return Ok(None);
    };
    if latest_size(pool).await? >= Some(head.tree_size) {
        return Ok(None);
    }
    let canonical = head.canonical();
    let signed = match signer {
        Some(signer) => {
            let (key_id, signature) = signer.sign(&canonical).await?;
            Some((key_id, signature))
        }
        None => None,
    };
    let inserted = sqlx::query(
        "INSERT INTO evidence_heads (tree_size, root_hash, signed_at, head_json, key_id, signature)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tree_size) DO NOTHING",
    )
    .bind(i64::try_from(head.tree_size).unwrap_or(i64::MAX))
    .bind(&head.root_hash)
    .bind(head.timestamp)
    .bind(String::from_utf8_lossy(&canonical).into_owned())
    .bind(signed.as_ref().map(|(k, _)| k.clone()))
    .bind(signed.as_ref().map(|(_, s)| s.clone()))
    .execute(pool)
    .await?;
    if inserted.rows_affected() == 0 {
        // Another worker made the head of this size first.
        return Ok(None);
    }
    Ok(Some(SignedHead {
        head,
        algorithm: signed.as_ref().map(|_| ALGORITHM.to_owned()),
        key_id: signed.as_ref().map(|(k, _)| k.clone()),
        signature: signed.map(|(_, s)| STANDARD.encode(s)),
    }))
}

type HeadRow = (String, Option<String>, Option<Vec<u8>>);

fn from_row((json, key_id, signature): HeadRow) -> Result<SignedHead, HeadError> {
    let head: TreeHead =
        serde_json::from_str(&json).map_err(|e| HeadError::Malformed(e.to_string()))?;
    Ok(SignedHead {
        head,
        algorithm: signature.as_ref().map(|_| ALGORITHM.to_owned()),
        key_id,
        signature: signature.map(|s| STANDARD.encode(s)),
    })
}

/// Every stored head, oldest first.
///
/// # Errors
/// When the query fails or a stored head is malformed.
pub async fn all(pool: &PgPool) -> Result<Vec<SignedHead>, HeadError> {
    let rows: Vec<HeadRow> = sqlx::query_as(
        "SELECT head_json, key_id, signature FROM evidence_heads ORDER BY tree_size",
    )
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(from_row).collect()
}

/// The newest stored head, read on `conn` (inside an export's snapshot).
///
/// # Errors
/// When the query fails or the stored head is malformed.
pub async fn newest_in(conn: &mut PgConnection) -> Result<Option<SignedHead>, HeadError> {
    let row: Option<HeadRow> = sqlx::query_as(
        "SELECT head_json, key_id, signature FROM evidence_heads ORDER BY tree_size DESC LIMIT 1",
    )
    .fetch_optional(&mut *conn)
    .await?;
    row.map(from_row).transpose()
}

/// The stored head of exactly `size` leaves, or the newest one when `size` is `None`.
///
/// # Errors
/// When the query fails or the stored head is malformed.
pub async fn find(pool: &PgPool, size: Option<u64>) -> Result<Option<SignedHead>, HeadError> {
    let size = size.and_then(|s| i64::try_from(s).ok());
    let row: Option<HeadRow> = sqlx::query_as(
        "SELECT head_json, key_id, signature FROM evidence_heads
          WHERE $1::bigint IS NULL OR tree_size = $1 ORDER BY tree_size DESC LIMIT 1",
    )
    .bind(size)
    .fetch_optional(pool)
    .await?;
    row.map(from_row).transpose()
}

/// Anchors a signed head when an anchor is configured; a failure is logged (the head stays in
/// the database, and `verify` reports a head missing from the anchor).
pub async fn anchor_head(
    anchor: Option<&super::anchor::Anchor>,
    head: &SignedHead,
    metrics: &crate::telemetry::Metrics,
) {
    let Some(anchor) = anchor.filter(|_| head.signature.is_some()) else {
        return;
    };
    match anchor.publish(head).await {
        Ok(key) => {
            metrics.evidence_head_anchor(crate::telemetry::AnchorOutcome::Anchored);
            tracing::info!(key, "evidence tree head anchored");
        }
        Err(e) => {
            metrics.evidence_head_anchor(crate::telemetry::AnchorOutcome::Failed);
            tracing::warn!(error = %e, "could not anchor the evidence tree head");
        }
    }
}

/// What the worker's head task needs.
#[derive(Clone, Debug)]
pub struct HeadTask {
    /// None: unsigned heads.
    pub signer: Option<KmsSigner>,
    /// None: heads are not anchored outside the database.
    pub anchor: Option<super::anchor::Anchor>,
    /// A head once this many records were appended since the last…
    pub records: u64,
    /// …or once this long passed while any were.
    pub interval: std::time::Duration,
}

/// How many records the log holds beyond its newest head.
async fn pending(pool: &PgPool) -> Result<u64, HeadError> {
    let n: i64 = sqlx::query_scalar(
        "SELECT h.seq - l.tree_base - coalesce((SELECT max(tree_size) FROM evidence_heads), 0)
           FROM evidence_chain_head h, evidence_log l WHERE h.id = 1",
    )
    .fetch_one(pool)
    .await?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// The worker's background task: a head once `records` records were appended since the last
/// one, or once `interval` passed while any were; one last head on shutdown. Off the batch's
/// path: appends never wait for KMS.
pub async fn run_periodically(
    pool: PgPool,
    task: HeadTask,
    metrics: std::sync::Arc<crate::telemetry::Metrics>,
    stop: tokio_util::sync::CancellationToken,
) {
    let HeadTask {
        signer,
        anchor,
        records,
        interval,
    } = task;
    let poll = interval.clamp(
        std::time::Duration::from_millis(100),
        std::time::Duration::from_secs(1),
    );
    let mut last = tokio::time::Instant::now();
    loop {
        let stopping = tokio::select! {
            () = stop.cancelled() => true,
            () = tokio::time::sleep(poll) => false,
        };
        let due = match pending(&pool).await {
            Ok(n) => n > 0 && (stopping || n >= records.max(1) || last.elapsed() >= interval),
            Err(e) => {
                tracing::warn!(error = %e, "could not read the evidence tree size");
                false
            }
        };
        if due {
            match make_head(&pool, signer.as_ref()).await {
                Ok(Some(head)) => {
                    last = tokio::time::Instant::now();
                    metrics.evidence_head(if head.signature.is_some() {
                        crate::telemetry::HeadOutcome::Signed
                    } else {
                        crate::telemetry::HeadOutcome::Unsigned
                    });
                    anchor_head(anchor.as_ref(), &head, &metrics).await;
                    tracing::info!(
                        tree_size = head.head.tree_size,
                        root = %head.head.root_hash,
                        signed = head.signature.is_some(),
                        "evidence tree head made"
                    );
                }
                Ok(None) => {}
                Err(e) => {
                    metrics.evidence_head(crate::telemetry::HeadOutcome::Failed);
                    tracing::warn!(error = %e, "could not make an evidence tree head");
                }
            }
        }
        if stopping {
            return;
        }
    }
}

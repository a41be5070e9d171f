//! Fills an empty, migrated database with valid chained evidence for `scripts/bench-export`.
//!
//! Usage: `DATABASE_URL=… bench_fill RECORDS`. The records are built and hashed by the same
//! [`ChainedRecord`] code the store uses, so the chain verifies; they are loaded with `COPY`
//! in chunks (fast, constant memory) and the chain head is set at the end. A mix of kinds and
//! realistic detail sizes: image pushes with their repository re-read, and control transitions.

use std::time::Instant;

use chrono::{Duration, TimeZone, Utc};
use ecr_audit::evidence::{ChainedRecord, EvidenceKind, GENESIS_HASH};
use serde_json::json;
use sqlx::Connection;

const CHUNK: i64 = 20_000;

#[allow(
    clippy::too_many_lines,
    reason = "one synthetic evidence record, field by field"
)]
fn record(seq: i64, prev_hash: String) -> ChainedRecord {
    let start = Utc
        .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()
        .unwrap_or_default();
    let at = start + Duration::milliseconds(seq * 250);
    let repository = format!("team{}/service-{}", seq % 17, seq % 211);
    let transition = seq % 10 >= 7;
    let (kind, event_id, digest, tag, detail) = if transition {
        let control = ["ECR.1", "ECR.2", "ECR.3", "ECR.5"][(seq % 4) as usize];
        let status = if seq % 3 == 0 { "FAIL" } else { "PASS" };
        (
            "control_transition",
            format!("bench-{}/{repository}/{control}", seq - 1),
            None,
            None,
            json!({
                "control": control,
                "from": {"status": "PASS", "reason": "tag immutability is IMMUTABLE"},
                "to": {"status": status, "reason": format!("tag immutability is MUTABLE (set by a change at seq {seq})")},
                "cause_event_id": format!("bench-{}", seq - 1),
                "cause_kind": "repository_changed",
            }),
        )
    } else {
        let digest = format!("sha256:{:064x}", seq * 7919);
        (
            "image_pushed",
            format!("bench-{seq}"),
            Some(digest.clone()),
            Some(format!("v{}", seq % 1000)),
            json!({
                "detail_type": "ECR Image Action",
                "change": {"ImagePushed": {"repository": repository, "digest": digest, "tag": format!("v{}", seq % 1000)}},
                "repositories": [{"repository": repository, "state": "present", "applied": true,
                    "facts_observed_at": at.to_rfc3339(),
                    "controls_after": {
                        "ECR.1": {"status": "PASS", "reason": "scan on push"},
                        "ECR.2": {"status": "PASS", "reason": "tag immutability is IMMUTABLE"},
                        "ECR.3": {"status": "PASS", "reason": "a lifecycle policy exists"},
                        "ECR.5": {"status": "FAIL", "reason": "encrypted with AES256, not a customer managed KMS key"}}}],
                "image_after": {"presence": "pushed", "tags": [format!("v{}", seq % 1000)], "pushed_by": null,
                    "settings": {"tag_immutability": "IMMUTABLE", "tag_protected": true, "encryption_type": "AES256",
                                 "kms_key": null, "customer_managed_key": false}},
            }),
        )
    };
    ChainedRecord {
        seq,
        recorded_at: at,
        event_id,
        event_time: at - Duration::seconds(2),
        kind: EvidenceKind::parse(kind),
        outcome: "processed".to_owned(),
        account: Some("123456789012".to_owned()),
        region: Some("us-east-1".to_owned()),
        repository: Some(repository),
        digest,
        tag,
        actor: transition.then(|| "arn:aws:sts::123456789012:assumed-role/platform/ci".to_owned()),
        detail,
        prev_hash,
        format_version: None,
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let records: i64 = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: bench_fill RECORDS"))?
        .parse()?;
    let url = std::env::var("DATABASE_URL")?;
    let mut connection = sqlx::PgConnection::connect(&url).await?;
    let started = Instant::now();
    let mut prev_hash = GENESIS_HASH.to_owned();
    let mut seq = 0;
    while seq < records {
        let mut out = csv::Writer::from_writer(Vec::with_capacity(16 << 20));
        for _ in 0..CHUNK.min(records - seq) {
            seq += 1;
            let record = record(seq, prev_hash);
            let hash = record.compute_hash();
            let opt = |v: &Option<String>| v.clone().unwrap_or_default();
            out.write_record([
                record.seq.to_string(),
                record.recorded_at.to_rfc3339(),
                record.event_id.clone(),
                record.event_time.to_rfc3339(),
                record.kind.as_str().to_owned(),
                record.outcome.clone(),
                opt(&record.account),
                opt(&record.region),
                opt(&record.repository),
                opt(&record.digest),
                opt(&record.tag),
                opt(&record.actor),
                serde_json::to_string(&record.detail)?,
                record.prev_hash.clone(),
                hash.clone(),
            ])?;
            prev_hash = hash;
        }
        let bytes = out.into_inner().map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut copy = connection
            .copy_in_raw(
                "COPY evidence (seq, recorded_at, event_id, event_time, kind, outcome, account, region,
                      repository, digest, tag, actor, detail, prev_hash, hash)
                 FROM STDIN WITH (FORMAT csv, FORCE_NULL (account, region, repository, digest, tag, actor))",
            )
            .await?;
        copy.send(bytes).await?;
        copy.finish().await?;
    }
    sqlx::query("UPDATE evidence_chain_head SET seq = $1, hash = $2 WHERE id = 1")
        .bind(seq)
        .bind(&prev_hash)
        .execute(&mut connection)
        .await?;
    sqlx::query("ANALYZE evidence")
        .execute(&mut connection)
        .await?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "filled {records} chained records in {seconds:.1} s ({:.0} records/s); head {prev_hash}",
        records as f64 / seconds
    );
    Ok(())
}

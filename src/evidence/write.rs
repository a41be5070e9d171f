//! Appending records at the head of the chain, inside the caller's transaction.
//!
//! Locking the head row orders every appender. A record whose event id is already on the
//! chain (another transaction recorded it first) is dropped, and so is the rest of its group
//! when it was the group's lead record: the caller treats that group as a duplicate.

use std::collections::HashSet;

use sqlx::PgConnection;

use super::chain::ChainedRecord;

/// A record waiting for its place on the chain; `seq` and `prev_hash` are filled in on append.
pub struct PendingRecord {
    /// Records of one group stand or fall together (an event's own record and the
    /// transitions it caused).
    pub group: usize,
    /// The group's own record: if it is already on the chain, the group is a duplicate.
    pub is_lead: bool,
    pub record: ChainedRecord,
}

/// What an append put on the chain.
#[derive(Debug, Default)]
pub struct Appended {
    /// The records appended, in chain order, with their hashes.
    pub chained: Vec<(ChainedRecord, String)>,
    /// Groups whose lead record was already on the chain: nothing of theirs was appended.
    pub duplicate_groups: HashSet<usize>,
    /// Ids of records, in groups whose lead is new, that another record already holds. A new
    /// event cannot have produced them before, so something took the id first: the caller
    /// must refuse the batch rather than drop the record (and its alert) silently.
    pub collisions: Vec<String>,
}

/// Puts the pending records on the chain and moves the head.
///
/// # Errors
/// When a statement fails; the caller's transaction is then to be rolled back.
pub async fn append(
    conn: &mut PgConnection,
    pending: Vec<PendingRecord>,
) -> Result<Appended, sqlx::Error> {
    let (mut seq, mut prev_hash): (i64, String) =
        sqlx::query_as("SELECT seq, hash FROM evidence_chain_head WHERE id = 1 FOR UPDATE")
            .fetch_one(&mut *conn)
            .await?;
    let size_before = seq;
    // With the head locked no other appender can add records, so the ids already on the
    // chain now are all there will be: one query finds them, one statement appends the rest
    // (the head lock is held for two round trips, not one per record).
    let ids: Vec<&str> = pending.iter().map(|p| p.record.event_id.as_str()).collect();
    let existing: HashSet<String> =
        sqlx::query_scalar::<_, String>("SELECT event_id FROM evidence WHERE event_id = ANY($1)")
            .bind(&ids)
            .fetch_all(&mut *conn)
            .await?
            .into_iter()
            .collect();
    let mut appended = Appended::default();
    let led: HashSet<usize> = pending
        .iter()
        .filter(|p| p.is_lead)
        .map(|p| p.group)
        .collect();
    appended.duplicate_groups = pending
        .iter()
        .filter(|p| p.is_lead && existing.contains(&p.record.event_id))
        .map(|p| p.group)
        .collect();
    for PendingRecord {
        group,
        is_lead,
        mut record,
    } in pending
    {
        if appended.duplicate_groups.contains(&group) {
            continue;
        }
        if existing.contains(&record.event_id) {
            if !is_lead && led.contains(&group) {
                appended.collisions.push(record.event_id);
            }
            continue;
        }
        record.seq = seq + 1;
        record.prev_hash = prev_hash.clone();
        let hash = record.compute_hash();
        seq = record.seq;
        prev_hash = hash.clone();
        appended.chained.push((record, hash));
    }
    if !appended.chained.is_empty() {
        insert_records(conn, &appended.chained).await?;
        extend_tree(conn, size_before, &appended.chained).await?;
    }
    sqlx::query("UPDATE evidence_chain_head SET seq = $1, hash = $2 WHERE id = 1")
        .bind(seq)
        .bind(&prev_hash)
        .execute(&mut *conn)
        .await?;
    Ok(appended)
}

/// Grows the Merkle tree by the records just inserted: same transaction, same head lock
/// (docs/EVIDENCE.md, "The Merkle tree").
async fn extend_tree(
    conn: &mut PgConnection,
    head_seq: i64,
    chained: &[(ChainedRecord, String)],
) -> Result<(), sqlx::Error> {
    let hashes: Vec<String> = chained.iter().map(|(_, h)| h.clone()).collect();
    super::tree::extend(conn, head_seq, &hashes)
        .await
        .map_err(|e| match e {
            super::tree::TreeError::Sql(e) => e,
            other => sqlx::Error::Decode(Box::new(other)),
        })
}

/// One column of the chained records, for `UNNEST`.
fn column<T>(chained: &[(ChainedRecord, String)], f: impl Fn(&ChainedRecord) -> T) -> Vec<T> {
    chained.iter().map(|(r, _)| f(r)).collect()
}

/// Inserts chained records in one statement (arrays unnested column by column).
async fn insert_records(
    conn: &mut PgConnection,
    chained: &[(ChainedRecord, String)],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO evidence (seq, recorded_at, event_id, event_time, kind, outcome, account,
              region, repository, digest, tag, actor, detail, prev_hash, hash)
         SELECT * FROM UNNEST($1::bigint[], $2::timestamptz[], $3::text[], $4::timestamptz[],
              $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[],
              $11::text[], $12::text[], $13::jsonb[], $14::text[], $15::text[])",
    )
    .bind(column(chained, |r| r.seq))
    .bind(column(chained, |r| r.recorded_at))
    .bind(column(chained, |r| r.event_id.clone()))
    .bind(column(chained, |r| r.event_time))
    .bind(column(chained, |r| r.kind.as_str().to_owned()))
    .bind(column(chained, |r| r.outcome.clone()))
    .bind(column(chained, |r| r.account.clone()))
    .bind(column(chained, |r| r.region.clone()))
    .bind(column(chained, |r| r.repository.clone()))
    .bind(column(chained, |r| r.digest.clone()))
    .bind(column(chained, |r| r.tag.clone()))
    .bind(column(chained, |r| r.actor.clone()))
    .bind(column(chained, |r| r.detail.clone()))
    .bind(column(chained, |r| r.prev_hash.clone()))
    .bind(chained.iter().map(|(_, h)| h.clone()).collect::<Vec<_>>())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

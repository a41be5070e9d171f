//! Appending records at the head of the chain, inside the caller's transaction.
//!
//! The worker's database role cannot write the evidence tables (docs/EVIDENCE.md, "Database
//! roles"): it locks the head through `evidence_lock_head()` and appends through
//! `evidence_append(canonical[], hashes[])`, which checks each record's seq, link and hash
//! under that lock (migration `20261203000200`). Locking the head row orders every appender.
//! A record whose event id is already on the chain (another transaction recorded it first) is
//! dropped, and so is the rest of its group when it was the group's lead record: the caller
//! treats that group as a duplicate. The ids are read before the head is locked; one recorded
//! in between makes the append fail, and the caller run the batch again.

use std::collections::HashSet;

use sqlx::PgConnection;

use super::chain::{ChainedRecord, FORMAT_VERSION, hash_canonical};

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
    /// When the head was locked (it stays locked until the caller's transaction ends).
    pub locked_at: Option<std::time::Instant>,
}

/// Puts the pending records on the chain and moves the head.
///
/// # Errors
/// When a statement fails; the caller's transaction is then to be rolled back.
pub async fn append(
    conn: &mut PgConnection,
    pending: Vec<PendingRecord>,
) -> Result<Appended, sqlx::Error> {
    // The ids already on the chain are read before the head is locked, so that round trip is
    // not part of the hold every other appender waits for. An id recorded in between (the same
    // event committed by another worker meanwhile) fails the append on the event id's unique
    // index; the store runs the batch again, which then finds it (`StoreError::is_conflict`).
    let ids: Vec<&str> = pending.iter().map(|p| p.record.event_id.as_str()).collect();
    let existing: HashSet<String> =
        sqlx::query_scalar::<_, String>("SELECT event_id FROM evidence WHERE event_id = ANY($1)")
            .bind(&ids)
            .fetch_all(&mut *conn)
            .await?
            .into_iter()
            .collect();
    let (mut seq, mut prev_hash): (i64, String) =
        sqlx::query_as("SELECT seq, hash FROM evidence_lock_head()")
            .fetch_one(&mut *conn)
            .await?;
    let locked_at = std::time::Instant::now();
    let mut appended = Appended {
        locked_at: Some(locked_at),
        ..Appended::default()
    };
    let mut canonical = Vec::with_capacity(pending.len());
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
        record.format_version = Some(FORMAT_VERSION);
        let text = record.canonical();
        let hash = hash_canonical(&text);
        canonical.push(text);
        seq = record.seq;
        prev_hash = hash.clone();
        appended.chained.push((record, hash));
    }
    if !appended.chained.is_empty() {
        insert_canonical(conn, canonical, &appended.chained).await?;
    }
    Ok(appended)
}

/// Appends chained records in one call of the database's append function, which moves the
/// head; the records go as their canonical text, so what is stored is exactly what was hashed.
///
/// # Errors
/// When the function refuses a record (out of order, a broken link, a hash that is not its
/// text's) or a statement fails.
pub(crate) async fn insert_canonical(
    conn: &mut PgConnection,
    canonical: Vec<String>,
    chained: &[(ChainedRecord, String)],
) -> Result<i64, sqlx::Error> {
    let hashes: Vec<&str> = chained.iter().map(|(_, h)| h.as_str()).collect();
    sqlx::query_scalar("SELECT evidence_append($1, $2)")
        .bind(canonical)
        .bind(hashes)
        .fetch_one(&mut *conn)
        .await
}

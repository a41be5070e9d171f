//! Reading the evidence chain out, for exports and archives: one consistent snapshot, streamed.
//!
//! An export runs in one `REPEATABLE READ READ ONLY` transaction, so the chain head, the
//! oldest record and the records streamed all belong to the same moment even while workers
//! keep appending. Rows are streamed from the server as they are read (sqlx's row stream over
//! the extended protocol: the server sends rows as the client consumes them), never collected,
//! so memory does not grow with the number of records.

use futures::TryStreamExt;
use sqlx::{Postgres, Transaction};

use sqlx::PgPool;

use crate::evidence::chain::{ChainedRecord, EVIDENCE_COLUMNS, EvidenceFilter, EvidenceRow};

/// Why streaming stopped: the database, or the consumer of the records.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StreamError<E: std::error::Error + 'static> {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Sink(E),
}

/// A seq and the hash of the record at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChainPosition {
    pub seq: i64,
    pub hash: String,
}

/// An open, consistent view of the chain, ready to stream.
pub(crate) struct EvidenceSnapshot {
    tx: Transaction<'static, Postgres>,
    filter: EvidenceFilter,
    /// The chain head at the snapshot (seq 0 and 64 zeros when nothing was ever recorded).
    pub head: ChainPosition,
    /// The oldest stored record's seq and prev_hash; `None` when the table is empty.
    pub oldest: Option<ChainPosition>,
    /// How many records the filter selects, when asked for (it costs a scan).
    pub matching: Option<u64>,
    /// The newest tree head the snapshot sees.
    pub tree_head: Option<crate::evidence::heads::SignedHead>,
    /// For the proofs of a filtered export, computed a batch at a time beside the stream.
    pub pool: PgPool,
}

const FILTER_SQL: &str = "($1::timestamptz IS NULL OR recorded_at >= $1)
     AND ($2::timestamptz IS NULL OR recorded_at < $2)
     AND ($3::text IS NULL OR repository = $3)
     AND ($4::text IS NULL OR (kind = 'control_transition' AND detail->>'control' = $4))
     AND ($5::bigint IS NULL OR seq <= $5)
     AND ($6::text IS NULL OR digest = $6)";

/// Opens a snapshot of the chain for `filter`; counts the matching records when `count`.
///
/// # Errors
/// When the database fails.
pub(crate) async fn evidence_snapshot(
    pool: &PgPool,
    filter: &EvidenceFilter,
    count: bool,
) -> Result<EvidenceSnapshot, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    let (head_seq, head_hash): (i64, String) =
        sqlx::query_as("SELECT seq, hash FROM evidence_chain_head WHERE id = 1")
            .fetch_one(&mut *tx)
            .await?;
    let oldest: Option<(i64, String)> =
        sqlx::query_as("SELECT seq, prev_hash FROM evidence ORDER BY seq LIMIT 1")
            .fetch_optional(&mut *tx)
            .await?;
    let tree_head = crate::evidence::heads::newest_in(&mut tx)
        .await
        .map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
    let matching = if count {
        let n: i64 = bind_filter(
            sqlx::query_scalar(&format!("SELECT count(*) FROM evidence WHERE {FILTER_SQL}")),
            filter,
        )
        .fetch_one(&mut *tx)
        .await?;
        Some(u64::try_from(n).unwrap_or(0))
    } else {
        None
    };
    Ok(EvidenceSnapshot {
        tx,
        filter: filter.clone(),
        head: ChainPosition {
            seq: head_seq,
            hash: head_hash,
        },
        oldest: oldest.map(|(seq, hash)| ChainPosition { seq, hash }),
        matching,
        tree_head,
        pool: pool.clone(),
    })
}

fn bind_filter<'q, O>(
    query: sqlx::query::QueryScalar<'q, Postgres, O, sqlx::postgres::PgArguments>,
    filter: &'q EvidenceFilter,
) -> sqlx::query::QueryScalar<'q, Postgres, O, sqlx::postgres::PgArguments> {
    query
        .bind(filter.since)
        .bind(filter.until)
        .bind(filter.repository.as_deref())
        .bind(filter.control.as_deref())
        .bind(filter.through_seq)
        .bind(filter.digest.as_deref())
}

impl EvidenceSnapshot {
    /// Streams the selected records in chain order to `each`, with their stored hashes, in
    /// batches of at most `size` (memory is bounded by one batch).
    ///
    /// # Errors
    /// The first database error, or the first error `each` returns.
    pub(crate) async fn for_each_batch<E, F>(
        mut self,
        size: usize,
        mut each: F,
    ) -> Result<(), StreamError<E>>
    where
        E: std::error::Error + 'static,
        F: AsyncFnMut(Vec<(ChainedRecord, String)>) -> Result<(), E>,
    {
        {
            let sql =
                format!("SELECT {EVIDENCE_COLUMNS} FROM evidence WHERE {FILTER_SQL} ORDER BY seq");
            let filter = &self.filter;
            let mut rows = sqlx::query_as::<_, EvidenceRow>(&sql)
                .bind(filter.since)
                .bind(filter.until)
                .bind(filter.repository.as_deref())
                .bind(filter.control.as_deref())
                .bind(filter.through_seq)
                .bind(filter.digest.as_deref())
                .fetch(&mut *self.tx);
            let mut batch = Vec::with_capacity(size);
            while let Some(row) = rows.try_next().await? {
                batch.push(row.into_record());
                if batch.len() >= size {
                    each(std::mem::take(&mut batch))
                        .await
                        .map_err(StreamError::Sink)?;
                }
            }
            if !batch.is_empty() {
                each(batch).await.map_err(StreamError::Sink)?;
            }
        }
        self.tx.commit().await?;
        Ok(())
    }
}

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
        let (n,): (i64,) = bind_filter(
            sqlx::query_as(&format!("SELECT count(*) FROM evidence WHERE {FILTER_SQL}")),
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

/// Binds `filter` to the parameters of [`FILTER_SQL`].
fn bind_filter<'q, O>(
    query: sqlx::query::QueryAs<'q, Postgres, O, sqlx::postgres::PgArguments>,
    filter: &'q EvidenceFilter,
) -> sqlx::query::QueryAs<'q, Postgres, O, sqlx::postgres::PgArguments> {
    query
        .bind(filter.since)
        .bind(filter.until)
        .bind(filter.repository.as_deref())
        .bind(filter.control.as_deref())
        .bind(filter.through_seq)
        .bind(filter.digest.as_deref())
}

/// The selected records in chain order.
static SELECT_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!("SELECT {EVIDENCE_COLUMNS} FROM evidence WHERE {FILTER_SQL} ORDER BY seq")
});

/// The rows `filter` selects, streamed from the server as they are consumed.
fn select<'c>(
    conn: &'c mut sqlx::PgConnection,
    filter: &'c EvidenceFilter,
) -> impl futures::Stream<Item = Result<EvidenceRow, sqlx::Error>> + 'c {
    bind_filter(sqlx::query_as(SELECT_SQL.as_str()), filter).fetch(conn)
}

impl EvidenceSnapshot {
    /// Streams the selected records in chain order to `each`, with their stored hashes, one
    /// at a time on this task: the fastest way when each record is written as it comes.
    ///
    /// # Errors
    /// The first database error, or the first error `each` returns.
    pub(crate) async fn for_each<E, F>(mut self, mut each: F) -> Result<(), StreamError<E>>
    where
        E: std::error::Error + 'static,
        F: FnMut(ChainedRecord, String) -> Result<(), E>,
    {
        {
            let mut rows = select(&mut self.tx, &self.filter);
            while let Some(row) = rows.try_next().await? {
                let (record, hash) = row.into_record();
                each(record, hash).map_err(StreamError::Sink)?;
            }
        }
        self.tx.commit().await?;
        Ok(())
    }

    /// Streams the selected records in chain order, with their stored hashes, in chunks of
    /// `size` from a task of its own, so the database keeps sending the next chunk while the
    /// consumer works on one (a filtered export's proof query). One chunk waits in the
    /// channel at most, which bounds memory.
    pub(crate) fn spawn_chunks(mut self, size: usize) -> RecordChunks {
        let size = size.max(1);
        let (sender, receiver) = tokio::sync::mpsc::channel(1);
        let task = tokio::spawn(async move {
            {
                let mut rows = select(&mut self.tx, &self.filter);
                let mut chunk = Vec::with_capacity(size);
                while let Some(row) = rows.try_next().await? {
                    chunk.push(row.into_record());
                    if chunk.len() == size && sender.send(std::mem::take(&mut chunk)).await.is_err()
                    {
                        // The consumer stopped (its own error): the snapshot rolls back.
                        return Ok(());
                    }
                }
                if !chunk.is_empty() && sender.send(chunk).await.is_err() {
                    return Ok(());
                }
            }
            self.tx.commit().await
        });
        RecordChunks { receiver, task }
    }
}

/// Records streamed by [`EvidenceSnapshot::spawn_chunks`].
pub(crate) struct RecordChunks {
    receiver: tokio::sync::mpsc::Receiver<Vec<(ChainedRecord, String)>>,
    task: tokio::task::JoinHandle<Result<(), sqlx::Error>>,
}

impl RecordChunks {
    /// The next chunk, or `None` at the end (or when reading failed: [`Self::finish`] says).
    pub(crate) async fn next(&mut self) -> Option<Vec<(ChainedRecord, String)>> {
        self.receiver.recv().await
    }

    /// Waits for the reading task: whether every record was read and the snapshot closed.
    ///
    /// # Errors
    /// The database error that ended the stream early.
    pub(crate) async fn finish(self) -> Result<(), sqlx::Error> {
        drop(self.receiver);
        match self.task.await {
            Ok(result) => result,
            Err(err) => Err(sqlx::Error::Io(std::io::Error::other(format!(
                "the evidence reading task ended: {err}"
            )))),
        }
    }
}

//! What deploy-time verdicts read (docs/ENFORCEMENT.md): the images the verdict view holds,
//! each with when its signature was last verified and its latest evidence record, and the
//! repositories' controls. Read whole when the view starts and one image or one repository at
//! a time when a notification says it changed (`src/export/view.rs`).

use chrono::{DateTime, Utc};

use super::views::{IMAGE_COLUMNS, ImageRecord, image_row};
use super::{Store, StoreError};
use crate::readmodel::{ImageRow, PostureRow};

/// One image as the ledger knows it, with what its verdict cites.
#[derive(Debug, Clone)]
pub struct VerdictInputs {
    pub image: ImageRow,
    pub checked_at: Option<DateTime<Utc>>,
    pub posture: Option<PostureRow>,
    /// `seq` and `hash` of the latest evidence record naming the digest.
    pub evidence: Option<(i64, String)>,
}

/// Which image of a repository: by digest, or by the tag that names one now.
#[derive(Debug, Clone, Copy)]
pub enum ImageKey<'a> {
    Digest(&'a str),
    Tag(&'a str),
}

/// One image the verdict view holds (its repository's posture is held apart).
#[derive(Debug, Clone)]
pub struct VerdictImage {
    pub image: ImageRow,
    pub checked_at: Option<DateTime<Utc>>,
    pub evidence: Option<(i64, String)>,
}

/// Which images to read: all, or one digest of one repository.
#[derive(Debug, Clone, Copy, Default)]
pub struct ImageFilter<'a> {
    pub account: Option<&'a str>,
    pub region: Option<&'a str>,
    pub repository: Option<&'a str>,
    pub digest: Option<&'a str>,
}

/// The columns of an image the view holds, with its latest evidence record (deploy verdict
/// records are not cited: a verdict cites the evidence of the image's state, never an earlier
/// verdict); filters follow.
fn select_verdict_images() -> String {
    format!(
        "SELECT {IMAGE_COLUMNS}, i.signature_checked_at,
                e.seq AS evidence_seq, e.hash AS evidence_hash
           FROM images i
           LEFT JOIN LATERAL (
                SELECT seq, hash FROM evidence
                 WHERE digest = i.digest AND account = i.account AND region = i.region
                   AND repository = i.repository AND kind <> 'deploy_verdict'
                 ORDER BY seq DESC LIMIT 1) e ON true"
    )
}

fn verdict_images(rows: Vec<VerdictImageRecord>) -> Vec<VerdictImage> {
    rows.into_iter()
        .map(|row| VerdictImage {
            image: image_row(row.image),
            checked_at: row.signature_checked_at,
            evidence: row.evidence_seq.zip(row.evidence_hash),
        })
        .collect()
}

#[derive(sqlx::FromRow)]
struct VerdictImageRecord {
    #[sqlx(flatten)]
    image: ImageRecord,
    signature_checked_at: Option<DateTime<Utc>>,
    evidence_seq: Option<i64>,
    evidence_hash: Option<String>,
}

impl Store {
    /// The present images (not signatures or other artifacts) `filter` selects, each with
    /// the latest evidence record naming it.
    ///
    /// # Errors
    /// When the database cannot answer.
    pub async fn verdict_images(
        &self,
        filter: ImageFilter<'_>,
    ) -> Result<Vec<VerdictImage>, StoreError> {
        let query = format!(
            "{}
              WHERE i.present AND i.artifact_of IS NULL
                AND ($1::text IS NULL OR i.account = $1) AND ($2::text IS NULL OR i.region = $2)
                AND ($3::text IS NULL OR i.repository = $3) AND ($4::text IS NULL OR i.digest = $4)",
            select_verdict_images()
        );
        let rows: Vec<VerdictImageRecord> = sqlx::query_as(&query)
            .bind(filter.account)
            .bind(filter.region)
            .bind(filter.repository)
            .bind(filter.digest)
            .fetch_all(self.pool())
            .await?;
        Ok(verdict_images(rows))
    }

    /// The images of `keys` (account, region, repository, digest) that are present images, in
    /// one query; a key not returned is deleted or not an image.
    ///
    /// # Errors
    /// When the database cannot answer.
    pub async fn verdict_images_of(
        &self,
        keys: &[(String, String, String, String)],
    ) -> Result<Vec<VerdictImage>, StoreError> {
        let column = |pick: fn(&(String, String, String, String)) -> &String| -> Vec<&str> {
            keys.iter().map(|k| pick(k).as_str()).collect()
        };
        let query = format!(
            "{}
               JOIN UNNEST($1::text[], $2::text[], $3::text[], $4::text[])
                    AS k(account, region, repository, digest)
                 ON i.account = k.account AND i.region = k.region
                AND i.repository = k.repository AND i.digest = k.digest
              WHERE i.present AND i.artifact_of IS NULL",
            select_verdict_images()
        );
        let rows: Vec<VerdictImageRecord> = sqlx::query_as(&query)
            .bind(column(|k| &k.0))
            .bind(column(|k| &k.1))
            .bind(column(|k| &k.2))
            .bind(column(|k| &k.3))
            .fetch_all(self.pool())
            .await?;
        Ok(verdict_images(rows))
    }

    /// The controls of present repositories: every one, or those named `repository` in one
    /// account and region.
    ///
    /// # Errors
    /// When the database cannot answer.
    pub async fn verdict_postures(
        &self,
        repository: Option<(&str, &str, &str)>,
    ) -> Result<Vec<PostureRow>, StoreError> {
        let rows = self.posture(repository.map(|(_, _, name)| name)).await?;
        Ok(rows
            .into_iter()
            .filter(|row| {
                repository.is_none_or(|(account, region, _)| {
                    row.account == account && row.region == region
                })
            })
            .collect())
    }
}

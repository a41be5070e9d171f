//! What a deploy-time verdict reads (docs/ENFORCEMENT.md): one digest's ledger row, when its
//! signature was last verified, its repository's controls and its latest evidence record.

use chrono::{DateTime, Utc};

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

impl Store {
    /// The image `key` names in a repository, or `None` when the ledger holds no such image.
    ///
    /// # Errors
    /// When the database cannot answer.
    pub async fn verdict_inputs(
        &self,
        account: &str,
        region: &str,
        repository: &str,
        key: ImageKey<'_>,
    ) -> Result<Option<VerdictInputs>, StoreError> {
        let Some(image) = self
            .images(Some(repository))
            .await?
            .into_iter()
            .filter(|i| i.account == account && i.region == region && i.artifact_of.is_none())
            .find(|i| match key {
                ImageKey::Digest(d) => i.digest == d,
                ImageKey::Tag(t) => i.tags.iter().any(|x| x == t),
            })
        else {
            return Ok(None);
        };
        let checked_at: Option<DateTime<Utc>> = sqlx::query_scalar(
            "SELECT signature_checked_at FROM images
              WHERE account = $1 AND region = $2 AND repository = $3 AND digest = $4",
        )
        .bind(account)
        .bind(region)
        .bind(repository)
        .bind(&image.digest)
        .fetch_optional(self.pool())
        .await?
        .flatten();
        let evidence: Option<(i64, String)> = sqlx::query_as(
            "SELECT seq, hash FROM evidence
              WHERE digest = $4 AND account = $1 AND region = $2 AND repository = $3
              ORDER BY seq DESC LIMIT 1",
        )
        .bind(account)
        .bind(region)
        .bind(repository)
        .bind(&image.digest)
        .fetch_optional(self.pool())
        .await?;
        let posture = self
            .posture(Some(repository))
            .await?
            .into_iter()
            .find(|p| p.account == account && p.region == region);
        Ok(Some(VerdictInputs {
            image,
            checked_at,
            posture,
            evidence,
        }))
    }
}

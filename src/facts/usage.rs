//! Usage facts: whether a digest runs somewhere (Inspector coverage) and when it was pulled.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::{Digest, RepositoryName};

/// One `AWS_ECR_CONTAINER_IMAGE` entry of Inspector's `ListCoverage`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoveredImage {
    pub repository: RepositoryName,
    pub digest: Digest,
    /// `resourceMetadata.ecrImage.inUseCount`: ECS tasks and EKS pods running the image;
    /// `None` when Inspector did not report it.
    pub in_use_count: Option<i64>,
    pub last_in_use_at: Option<DateTime<Utc>>,
    /// `resourceMetadata.ecrImage.imagePulledAt`.
    pub pulled_at: Option<DateTime<Utc>>,
    /// `scanStatus.statusCode` (`ACTIVE`, `INACTIVE`, or a newer value, kept as data).
    pub status_code: Option<String>,
    /// `scanStatus.reason` (`SUCCESSFUL`, `UNSUPPORTED_OS`, `SCAN_ELIGIBILITY_EXPIRED`,
    /// `PENDING_INITIAL_SCAN`, …, kept as data).
    pub reason: Option<String>,
}

impl CoveredImage {
    /// Whether the image runs: known only when Inspector gave a count.
    pub fn in_use(&self) -> Option<bool> {
        self.in_use_count.map(|n| n > 0)
    }
}

/// The repository and digest named by an ECR image resource id,
/// `arn:aws:ecr:REGION:ACCOUNT:repository/NAME/sha256:HEX`; `None` for any other shape.
pub fn image_of_resource_id(resource_id: &str) -> Option<(RepositoryName, Digest)> {
    let (_, path) = resource_id.split_once(":repository/")?;
    let (name, digest) = path.rsplit_once('/')?;
    Some((
        RepositoryName::parse(name).ok()?,
        Digest::parse(digest).ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_ids_name_repository_and_digest() {
        let digest = format!("sha256:{}", "a".repeat(64));
        let id = format!("arn:aws:ecr:us-east-1:123456789012:repository/team/api/{digest}");
        let (name, parsed) = image_of_resource_id(&id).expect("an image resource id");
        assert_eq!(name.as_str(), "team/api");
        assert_eq!(parsed.as_str(), digest);
        for other in [
            "arn:aws:ecr:us-east-1:123456789012:repository/team",
            "arn:aws:lambda:us-east-1:123456789012:function:f",
            "arn:aws:ecr:us-east-1:123456789012:repository/team/sha256:zz",
        ] {
            assert!(image_of_resource_id(other).is_none(), "{other}");
        }
    }
}

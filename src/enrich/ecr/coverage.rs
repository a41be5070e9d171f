//! Inspector coverage (`ListCoverage`): which ECR images run somewhere, when they were pulled,
//! and why Inspector does or does not scan them. One paged listing per registry, filtered to
//! ECR image resources of the account, so the cost does not grow with calls per digest.

use aws_sdk_inspector2::types::{
    CoverageFilterCriteria, CoverageResourceType, CoverageStringComparison, CoverageStringFilter,
    CoveredResource,
};

use super::{EcrRegistry, to_chrono};
use crate::domain::{AccountId, Region};
use crate::enrich::EnrichError;
use crate::facts::{CoveredImage, Fact, image_of_resource_id};
use crate::telemetry::AwsOperation;

/// Inspector's largest `maxResults` for `ListCoverage`.
pub(super) const MAX_PAGE_SIZE: i32 = 200;

fn equals(value: &str) -> Option<CoverageStringFilter> {
    CoverageStringFilter::builder()
        .comparison(CoverageStringComparison::Equals)
        .value(value)
        .build()
        .ok()
}

/// ECR images of one account: a delegated administrator's coverage lists member accounts too.
fn ecr_images_of(account: &AccountId) -> CoverageFilterCriteria {
    CoverageFilterCriteria::builder()
        .set_resource_type(
            equals(CoverageResourceType::AwsEcrContainerImage.as_str()).map(|f| vec![f]),
        )
        .set_account_id(equals(account.as_str()).map(|f| vec![f]))
        .build()
}

/// One covered resource as a fact; `None` for a resource id that names no ECR image.
fn covered_image(resource: &CoveredResource) -> Option<CoveredImage> {
    let (repository, digest) = image_of_resource_id(resource.resource_id())?;
    let image = resource.resource_metadata().and_then(|m| m.ecr_image());
    let status = resource.scan_status();
    Some(CoveredImage {
        repository,
        digest,
        in_use_count: image.and_then(|i| i.in_use_count()),
        last_in_use_at: image.and_then(|i| i.last_in_use_at()).and_then(to_chrono),
        pulled_at: image.and_then(|i| i.image_pulled_at()).and_then(to_chrono),
        status_code: status.map(|s| s.status_code().as_str().to_owned()),
        reason: status.map(|s| s.reason().as_str().to_owned()),
    })
}

impl EcrRegistry {
    /// Every page of the registry's ECR image coverage. A refusal or an outage is `Unknown`
    /// (counted like any degraded read): use stays unknown, nothing else waits for it.
    pub(super) async fn read_image_coverage(
        &self,
        account: &AccountId,
        region: &Region,
    ) -> Result<Fact<Vec<CoveredImage>>, EnrichError> {
        let clients = self.clients(account, region).await;
        let target = format!("{account}/{region}");
        let criteria = ecr_images_of(account);
        let read = self
            .all_pages(
                &clients,
                AwsOperation::Inspector2ListCoverage,
                &target,
                |token| {
                    clients
                        .inspector
                        .list_coverage()
                        .filter_criteria(criteria.clone())
                        .max_results(self.coverage_page_size)
                        .set_next_token(token)
                        .send()
                },
                |output| {
                    (
                        output
                            .covered_resources()
                            .iter()
                            .filter_map(covered_image)
                            .collect(),
                        output.next_token().map(str::to_owned),
                    )
                },
            )
            .await;
        Ok(self.degrade(read))
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_inspector2::types::{
        EcrContainerImageMetadata, ResourceScanMetadata, ScanStatus, ScanStatusCode,
        ScanStatusReason, ScanType,
    };

    use super::*;

    fn resource(id: &str, reason: &str, count: Option<i64>) -> CoveredResource {
        CoveredResource::builder()
            .resource_type(CoverageResourceType::AwsEcrContainerImage)
            .resource_id(id)
            .account_id("123456789012")
            .scan_type(ScanType::Package)
            .scan_status(
                ScanStatus::builder()
                    .status_code(ScanStatusCode::Inactive)
                    .reason(ScanStatusReason::from(reason))
                    .build()
                    .expect("scan status"),
            )
            .resource_metadata(
                ResourceScanMetadata::builder()
                    .ecr_image(
                        EcrContainerImageMetadata::builder()
                            .set_in_use_count(count)
                            .build(),
                    )
                    .build(),
            )
            .build()
            .expect("covered resource")
    }

    #[test]
    fn reasons_this_version_does_not_know_are_kept_as_given() {
        let digest = format!("sha256:{}", "b".repeat(64));
        let id = format!("arn:aws:ecr:us-east-1:123456789012:repository/team/api/{digest}");
        let covered =
            covered_image(&resource(&id, "SOME_FUTURE_REASON", Some(0))).expect("an ECR image");
        assert_eq!(covered.reason.as_deref(), Some("SOME_FUTURE_REASON"));
        assert_eq!(covered.status_code.as_deref(), Some("INACTIVE"));
        assert_eq!(covered.in_use(), Some(false));
        let known = covered_image(&resource(&id, "UNSUPPORTED_OS", None)).expect("an ECR image");
        assert_eq!(known.reason.as_deref(), Some("UNSUPPORTED_OS"));
        assert_eq!(known.in_use(), None, "no count: unknown, not false");
    }

    #[test]
    fn resources_that_name_no_ecr_image_are_left_out() {
        let lambda = "arn:aws:lambda:us-east-1:123456789012:function:f";
        assert!(covered_image(&resource(lambda, "SUCCESSFUL", Some(1))).is_none());
    }
}

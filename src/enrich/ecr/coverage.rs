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

//! AWS's own answer on how each repository is scanned (`BatchGetRepositoryScanningConfiguration`,
//! up to 25 repositories a call): what ECR.1 is judged from, so the verdict never depends on
//! this project's reading of the registry rules (docs/CONTROLS.md, "ECR.1").

use std::collections::HashMap;

use super::{EcrRegistry, RegionalClients};
use crate::enrich::EnrichError;
use crate::facts::{Fact, ReportedScanning};
use crate::telemetry::AwsOperation;

/// The most repositories one `BatchGetRepositoryScanningConfiguration` call names (the API's
/// limit).
pub(super) const SCANNING_BATCH: usize = 25;

/// One call's answer per repository name; every name asked is in the map.
pub(super) type ReportedByName = HashMap<String, Fact<ReportedScanning>>;

impl EcrRegistry {
    /// Reads the scanning configuration of up to [`SCANNING_BATCH`] repositories of one
    /// registry. A lasting error makes every asked repository's answer `Unknown` with the
    /// reason; a per-repository failure only that repository's.
    pub(super) async fn reported_scanning(
        &self,
        clients: &RegionalClients,
        target: &str,
        names: &[&str],
    ) -> Result<ReportedByName, EnrichError> {
        let operation = AwsOperation::EcrBatchGetRepositoryScanningConfiguration;
        self.pace(clients, operation).await;
        let result = clients
            .ecr
            .batch_get_repository_scanning_configuration()
            .set_repository_names(Some(names.iter().map(|n| (*n).to_owned()).collect()))
            .send()
            .await;
        let output = match self.settle(operation, &target, result) {
            Ok(Ok(output)) => output,
            Ok(Err((code, message))) => {
                let reason = format!("BatchGetRepositoryScanningConfiguration: {code}: {message}");
                return Ok(every_name(names, &Fact::Unknown(reason)));
            }
            // No answer after the retries: ECR.1 falls back to the registry rules, and the
            // repository is read again later (`RepositoryFacts::has_unavailable`).
            Err(transient) => {
                return Ok(every_name(names, &self.degrade(Err(transient))));
            }
        };
        let mut answers = every_name(
            names,
            &Fact::Unknown(
                "BatchGetRepositoryScanningConfiguration did not answer for the repository"
                    .to_owned(),
            ),
        );
        for configuration in output.scanning_configurations() {
            let Some(name) = configuration.repository_name() else {
                continue;
            };
            let reported = ReportedScanning {
                scan_frequency: configuration
                    .scan_frequency()
                    .map_or("MANUAL", |f| f.as_str())
                    .to_owned(),
                scan_on_push: configuration.scan_on_push(),
                applied_filters: configuration
                    .applied_scan_filters()
                    .iter()
                    .map(|f| f.filter().to_owned())
                    .collect(),
            };
            answers.insert(name.to_owned(), Fact::Known(reported));
        }
        for failure in output.failures() {
            let Some(name) = failure.repository_name() else {
                continue;
            };
            let code = failure.failure_code().map_or("unknown", |c| c.as_str());
            let reason = failure.failure_reason().unwrap_or_default();
            answers.insert(
                name.to_owned(),
                Fact::Unknown(format!(
                    "BatchGetRepositoryScanningConfiguration: {code}: {reason}"
                )),
            );
        }
        Ok(answers)
    }

    /// [`Self::reported_scanning`] for any number of repositories, [`SCANNING_BATCH`] a call.
    pub(super) async fn reported_scanning_all(
        &self,
        clients: &RegionalClients,
        target: &str,
        names: &[&str],
    ) -> Result<ReportedByName, EnrichError> {
        let mut answers = HashMap::with_capacity(names.len());
        for chunk in names.chunks(SCANNING_BATCH) {
            answers.extend(self.reported_scanning(clients, target, chunk).await?);
        }
        Ok(answers)
    }
}

fn every_name(names: &[&str], answer: &Fact<ReportedScanning>) -> ReportedByName {
    names
        .iter()
        .map(|name| ((*name).to_owned(), answer.clone()))
        .collect()
}

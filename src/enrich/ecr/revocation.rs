//! AWS Signer revocation (`GetRevocationStatus`): which of a signature's profile version, job
//! and certificates are revoked now. The operation's host prefix `data-` is taken off again
//! when an endpoint override is configured (docs/EMULATOR.md, "Signing jobs and revocation").

use aws_sdk_signer::config::interceptors::BeforeTransmitInterceptorContextMut;
use aws_sdk_signer::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_signer::error::BoxError;

use super::EcrRegistry;
use crate::domain::{AccountId, Region};
use crate::enrich::EnrichError;
use crate::facts::{Fact, RevocationQuery};
use crate::telemetry::AwsOperation;

/// The host prefix Signer's model puts on `GetRevocationStatus` (`data-signer.REGION…`).
const DATA_PREFIX: &str = "data-";

/// Takes the `data-` host prefix off a request sent to an overridden endpoint, which serves
/// every operation on its own host.
#[derive(Debug)]
struct NoHostPrefix;

impl Intercept for NoHostPrefix {
    fn name(&self) -> &'static str {
        "NoHostPrefix"
    }

    fn modify_before_signing(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let request = context.request_mut();
        let uri = request.uri().to_owned();
        if let Some((scheme, rest)) = uri.split_once("://")
            && let Some(unprefixed) = rest.strip_prefix(DATA_PREFIX)
        {
            request.set_uri(format!("{scheme}://{unprefixed}"))?;
        }
        Ok(())
    }
}

/// Account and region of a profile version ARN (`arn:aws:signer:REGION:ACCOUNT:/…`).
fn profile_home(arn: &str) -> Option<(AccountId, Region)> {
    let mut parts = arn.split(':');
    let (region, account) = (parts.nth(3)?, parts.next()?);
    Some((AccountId::parse(account).ok()?, Region::parse(region).ok()?))
}

impl EcrRegistry {
    pub(super) async fn read_revoked_entities(
        &self,
        query: &RevocationQuery,
    ) -> Result<Fact<Vec<String>>, EnrichError> {
        let Some((account, region)) = profile_home(&query.profile_version_arn) else {
            return Ok(Fact::Unknown(format!(
                "not a signing profile version ARN: {}",
                query.profile_version_arn
            )));
        };
        let clients = self.clients(&account, &region).await;
        self.pace(&clients, AwsOperation::SignerGetRevocationStatus)
            .await;
        let mut call = clients
            .signer
            .get_revocation_status()
            .signature_timestamp(aws_smithy_types::DateTime::from_millis(
                query.signature_time.timestamp_millis(),
            ))
            .platform_id(&query.platform_id)
            .profile_version_arn(&query.profile_version_arn)
            .job_arn(&query.job_arn)
            .set_certificate_hashes(Some(query.certificate_hashes.clone()))
            .customize();
        if self.sdk_config.endpoint_url().is_some() {
            call = call.interceptor(NoHostPrefix);
        }
        let result = call.send().await;
        Ok(
            match self.settle(
                AwsOperation::SignerGetRevocationStatus,
                &query.job_arn,
                result,
            )? {
                Ok(output) => Fact::Known(output.revoked_entities().to_vec()),
                Err((code, message)) => {
                    Fact::Unknown(format!("GetRevocationStatus: {code}: {message}"))
                }
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_profile_version_arn_names_its_account_and_region() {
        let (account, region) =
            profile_home("arn:aws:signer:eu-west-1:111122223333:/signing-profiles/p/AbCd1234")
                .expect("parsed");
        assert_eq!(
            (account.as_str(), region.as_str()),
            ("111122223333", "eu-west-1")
        );
        assert!(profile_home("arn:aws:signer").is_none());
    }
}

//! ECR Public reads for ECR.4: the account's public repositories and their tags.
//!
//! ECR Public is one registry per account whose API answers in us-east-1 only; its
//! repositories are keyed with the `ecr-public` pseudo-region (`Region::ecr_public`). Kept
//! apart from `ecr.rs` because both SDKs name their calls alike (`describe_repositories`).

use aws_config::SdkConfig;
use chrono::Utc;

use super::{EcrRegistry, RegionalClients};
use crate::domain::{AccountId, Region, RepositoryKey, RepositoryName};
use crate::enrich::EnrichError;
use crate::facts::{
    Fact, ListedRepository, PublicRepositorySettings, RepositoryFacts, RepositoryState,
};
use crate::telemetry::AwsOperation;

/// The only region the ECR Public API answers in.
pub(super) const ECR_PUBLIC_API_REGION: &str = "us-east-1";

/// An ECR Public client, always for us-east-1.
#[derive(Clone)]
pub(super) struct PublicClient(aws_sdk_ecrpublic::Client);

impl PublicClient {
    pub(super) fn new(config: &SdkConfig) -> Self {
        Self(aws_sdk_ecrpublic::Client::from_conf(
            aws_sdk_ecrpublic::config::Builder::from(config)
                .region(aws_config::Region::new(ECR_PUBLIC_API_REGION))
                .build(),
        ))
    }
}

impl EcrRegistry {
    /// Every public repository of the account, with its tags.
    pub(super) async fn public_repositories(
        &self,
        account: &AccountId,
    ) -> Result<Fact<Vec<ListedRepository>>, EnrichError> {
        let clients = self.clients(account, &Region::ecr_public()).await;
        let observed_at = Utc::now();
        let target = format!("{account}/{}", Region::ecr_public());
        let listed = self
            .all_pages(
                &clients,
                AwsOperation::EcrPublicDescribeRepositories,
                &target,
                |token| {
                    clients
                        .public
                        .0
                        .describe_repositories()
                        .registry_id(account.as_str())
                        .max_results(1000)
                        .set_next_token(token)
                        .send()
                },
                |output| {
                    let found = output
                        .repositories()
                        .iter()
                        .filter_map(|r| {
                            Some((
                                r.repository_name()?.to_owned(),
                                r.repository_arn()?.to_owned(),
                            ))
                        })
                        .collect();
                    (found, output.next_token().map(str::to_owned))
                },
            )
            .await?;
        let Fact::Known(listed) = listed else {
            return Ok(listed.map(|_: Vec<(String, String)>| Vec::new()));
        };
        let mut repositories = Vec::with_capacity(listed.len());
        for (name, arn) in listed {
            // A name we cannot represent is skipped, not guessed at.
            let Ok(name) = RepositoryName::parse(&name) else {
                continue;
            };
            let key = public_key(account, name);
            let tag_keys = self.degrade(self.public_tags(&clients, &key, &arn).await);
            repositories.push(ListedRepository {
                key,
                facts: RepositoryFacts {
                    observed_at,
                    state: RepositoryState::Public(PublicRepositorySettings { arn, tag_keys }),
                },
            });
        }
        Ok(Fact::Known(repositories))
    }

    /// One public repository (`key.region` is `ecr-public`), with its tags.
    pub(super) async fn public_repository(
        &self,
        key: &RepositoryKey,
    ) -> Result<RepositoryFacts, EnrichError> {
        let clients = self.clients(&key.account, &key.region).await;
        let observed_at = Utc::now();
        self.pace(&clients, AwsOperation::EcrPublicDescribeRepositories)
            .await;
        let result = clients
            .public
            .0
            .describe_repositories()
            .registry_id(key.account.as_str())
            .repository_names(key.name.as_str())
            .send()
            .await;
        let state = match self.settle(AwsOperation::EcrPublicDescribeRepositories, key, result)? {
            Ok(output) => match output
                .repositories()
                .first()
                .and_then(|r| r.repository_arn())
            {
                Some(arn) => {
                    let tag_keys = self.degrade(self.public_tags(&clients, key, arn).await);
                    RepositoryState::Public(PublicRepositorySettings {
                        arn: arn.to_owned(),
                        tag_keys,
                    })
                }
                None => RepositoryState::Absent,
            },
            Err((code, _)) if code == "RepositoryNotFoundException" => RepositoryState::Absent,
            // The repository exists as far as we know; only ECR.4 is judged, and it is unknown.
            Err((code, message)) => RepositoryState::Public(PublicRepositorySettings {
                arn: key.arn(),
                tag_keys: Fact::Unknown(format!(
                    "ecr-public DescribeRepositories: {code}: {message}"
                )),
            }),
        };
        Ok(RepositoryFacts { observed_at, state })
    }

    /// The tag keys of a public repository (`ListTagsForResource`).
    async fn public_tags(
        &self,
        clients: &RegionalClients,
        key: &RepositoryKey,
        arn: &str,
    ) -> Result<Fact<Vec<String>>, EnrichError> {
        self.pace(clients, AwsOperation::EcrPublicListTagsForResource)
            .await;
        let result = clients
            .public
            .0
            .list_tags_for_resource()
            .resource_arn(arn)
            .send()
            .await;
        Ok(
            match self.settle(AwsOperation::EcrPublicListTagsForResource, key, result)? {
                Ok(output) => Fact::Known(
                    output
                        .tags()
                        .iter()
                        .filter_map(|tag| tag.key().map(str::to_owned))
                        .collect(),
                ),
                Err((code, message)) => {
                    Fact::Unknown(format!("ecr-public ListTagsForResource: {code}: {message}"))
                }
            },
        )
    }
}

fn public_key(account: &AccountId, name: RepositoryName) -> RepositoryKey {
    RepositoryKey {
        account: account.clone(),
        region: Region::ecr_public(),
        name,
    }
}

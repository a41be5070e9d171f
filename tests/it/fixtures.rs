//! Builders for the values store-level tests feed the store: repository keys, audit events,
//! repository and registry facts, and the plan of a repository setting change.

use std::collections::BTreeMap;

use chrono::Utc;
use ecr_audit::domain::{
    AccountId, Actor, ControlId, Region, RepositoryKey, RepositoryName, Verdict,
};
use ecr_audit::evaluate::{ControlPolicy, repository_controls};
use ecr_audit::facts::{
    Encryption, Fact, RegistryFacts, RegistryScanning, RepositoryFacts, RepositorySettings,
    RepositoryState, TagMutability,
};
use ecr_audit::parse::{AuditEvent, Change, RepositoryCall};
use ecr_audit::plan::{EventPlan, Plan, RepositoryWrite};

use crate::helpers::{ACCOUNT, REGION};

/// `repository` in the tests' account and region.
pub fn repository_key(repository: &str) -> RepositoryKey {
    RepositoryKey {
        account: AccountId::parse(ACCOUNT).expect("account"),
        region: Region::parse(REGION).expect("region"),
        name: RepositoryName::parse(repository).expect("name"),
    }
}

/// A CloudTrail-borne event in the tests' account and region, happening now; `actor` an
/// assumed role's ARN.
pub fn audit_event(id: &str, change: Change, actor: Option<&str>) -> AuditEvent {
    AuditEvent {
        id: id.to_owned(),
        time: Utc::now(),
        account: AccountId::parse(ACCOUNT).expect("account"),
        region: Region::parse(REGION).expect("region"),
        detail_type: "AWS API Call via CloudTrail".into(),
        actor: actor.map(|arn| Actor {
            arn: arn.to_owned(),
            identity_type: Some("AssumedRole".into()),
            issuer_arn: None,
        }),
        change,
        claimed_time: None,
    }
}

/// A `PutImageTagMutability` call on `key` (`mode` as requested, if the event says) and the
/// re-read `facts` it led to, with the controls they evaluate to on a plain registry.
pub fn tag_mutability_plan(
    id: &str,
    key: &RepositoryKey,
    mode: Option<&str>,
    actor: Option<&str>,
    facts: RepositoryFacts,
) -> Plan {
    let controls: Option<BTreeMap<ControlId, Verdict>> =
        repository_controls(&facts, &plain_registry_facts(), &ControlPolicy::default());
    let change = Change::RepositoryChanged {
        repository: key.name.clone(),
        call: RepositoryCall::PutImageTagMutability {
            image_tag_mutability: mode.map(str::to_owned),
        },
    };
    Plan::Event(Box::new(EventPlan {
        distrusted: Vec::new(),
        event: audit_event(id, change, actor),
        ignored: false,
        repositories: vec![RepositoryWrite {
            key: key.clone(),
            facts,
            scanning: None,
            scanning_disagreements: Vec::new(),
            controls,
            only_if_new: false,
            reread: false,
            requested: false,
            fallback: false,
        }],
        image: None,
        deletions: Vec::new(),
        signatures: vec![],
        scans: vec![],
        reverify: None,
    }))
}

/// A repository read as the store tests build it: `mode` tag mutability, scan on push,
/// a lifecycle policy, AES256, no policy; read `observed_offset_secs` from now.
pub fn repository_facts_at(
    key: &RepositoryKey,
    mode: &str,
    observed_offset_secs: i64,
) -> RepositoryFacts {
    RepositoryFacts {
        observed_at: Utc::now() + chrono::Duration::seconds(observed_offset_secs),
        state: RepositoryState::Present(Box::new(RepositorySettings {
            arn: key.arn(),
            tag_mutability: Fact::Known(TagMutability {
                mode: mode.into(),
                exclusion_filters: vec![],
            }),
            scan_on_push: true,
            reported_scanning: ecr_audit::facts::ReportedScanning::not_read(),
            lifecycle_policy: Fact::Known(true),
            lifecycle_policy_text: Fact::Known(Some(r#"{"rules":[]}"#.to_owned())),
            encryption: Fact::Known(Encryption {
                encryption_type: "AES256".into(),
                kms_key: None,
                key_manager: None,
            }),
            policy: Fact::Known(None),
        })),
    }
}

/// A registry with basic scanning and no rules, signing, pull-through rules or templates.
pub fn plain_registry_facts() -> RegistryFacts {
    RegistryFacts {
        observed_at: Utc::now(),
        scanning: Fact::Known(RegistryScanning {
            scan_type: "BASIC".into(),
            rules: vec![],
        }),
        signing: Fact::Known(vec![]),
        pull_through_rules: Fact::Known(vec![]),
        creation_templates: Fact::Known(vec![]),
    }
}

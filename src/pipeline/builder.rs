//! The one way to wire a [`Pipeline`]: the CLI, the tests and the benches all build it here.

use std::sync::Arc;
use std::time::Duration;

use super::Pipeline;
use crate::enrich::Registry;
use crate::enrich::cache::CachedRegistry;
use crate::evaluate::ControlPolicy;
use crate::parse::ParseContext;
use crate::plan::Planner;
use crate::store::Store;
use crate::telemetry::Metrics;
use crate::trust::TrustSettings;

/// How long repository facts are cached unless set (the default of
/// `ECR_AUDIT_REPOSITORY_CACHE_TTL` in src/config.rs).
const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(300);
/// How long a push may stay unsigned unless set (the default of `ECR_AUDIT_SIGNING_GRACE` in
/// src/config.rs).
const DEFAULT_SIGNING_GRACE_MINUTES: i64 = 15;

/// Settings for a [`Pipeline`]; every one has the CLI's default.
pub struct PipelineBuilder {
    registry: Arc<dyn Registry>,
    store: Store,
    metrics: Option<Arc<Metrics>>,
    cache_ttl: Duration,
    parse_context: ParseContext,
    policy: ControlPolicy,
    signing_grace: chrono::Duration,
    trust: Arc<TrustSettings>,
}

impl PipelineBuilder {
    pub(super) fn new(registry: Arc<dyn Registry>, store: Store) -> Self {
        Self {
            registry,
            store,
            metrics: None,
            cache_ttl: DEFAULT_CACHE_TTL,
            parse_context: ParseContext::default(),
            policy: ControlPolicy::default(),
            signing_grace: chrono::Duration::minutes(DEFAULT_SIGNING_GRACE_MINUTES),
            trust: Arc::new(TrustSettings::default()),
        }
    }

    /// The metrics registry to count into; a fresh one unless set.
    #[must_use]
    pub fn metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// How long repository and registry facts are cached between change events.
    #[must_use]
    pub fn cache_ttl(mut self, ttl: Duration) -> Self {
        self.cache_ttl = ttl;
        self
    }

    /// The account and region assumed for events that do not name them.
    #[must_use]
    pub fn parse_context(mut self, parse_context: ParseContext) -> Self {
        self.parse_context = parse_context;
        self
    }

    #[must_use]
    pub fn policy(mut self, policy: ControlPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// How long a push may stay unsigned before it counts as `UNSIGNED`.
    #[must_use]
    pub fn signing_grace(mut self, grace: chrono::Duration) -> Self {
        self.signing_grace = grace;
        self
    }

    /// What signatures are verified against: the trust policy and stores, the Cosign keys
    /// and the read limits. Unless set, none: no signature can be trusted (docs/SIGNATURES.md).
    #[must_use]
    pub fn trust(mut self, trust: Arc<TrustSettings>) -> Self {
        self.trust = trust;
        self
    }

    pub fn build(self) -> Pipeline {
        Pipeline {
            registry: CachedRegistry::new(self.registry, self.cache_ttl),
            store: self.store,
            metrics: self.metrics.unwrap_or_else(|| Arc::new(Metrics::new())),
            parse_context: self.parse_context,
            trust: self.trust,
            planner: Planner {
                policy: self.policy,
                signing_grace: self.signing_grace,
            },
        }
    }
}

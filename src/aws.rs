//! The one AWS configuration loader and the one place where SDK errors are classified.

use std::time::Duration;

use aws_config::{BehaviorVersion, SdkConfig, retry::RetryConfig, timeout::TimeoutConfig};
use aws_sdk_ecr::config::http::HttpResponse;
use aws_sdk_ecr::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

/// Loads the shared SDK configuration from the standard chain (`AWS_REGION`,
/// `AWS_ENDPOINT_URL`, credentials chain, profiles). The behaviour version is pinned so that
/// an SDK upgrade changes defaults only when we decide to.
pub async fn load_sdk_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::v2026_01_12())
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(5)
                .with_initial_backoff(Duration::from_millis(100)),
        )
        .timeout_config(
            TimeoutConfig::builder()
                .operation_attempt_timeout(Duration::from_secs(10))
                .operation_timeout(Duration::from_secs(40))
                .build(),
        )
        .load()
        .await
}

/// `sdk` with credentials of `role`, assumed through STS (presenting `external_id` when one is
/// configured: the spoke roles' trust condition). The provider caches the temporary
/// credentials and refreshes them before they expire.
pub async fn assuming(
    sdk: &SdkConfig,
    role: &str,
    external_id: Option<&str>,
    region: Option<aws_config::Region>,
) -> SdkConfig {
    let mut builder = aws_config::sts::AssumeRoleProvider::builder(role)
        .session_name("ecr-audit")
        .configure(sdk);
    if let Some(region) = region {
        builder = builder.region(region);
    }
    if let Some(external_id) = external_id {
        builder = builder.external_id(external_id);
    }
    let provider = builder.build().await;
    sdk.to_builder()
        .credentials_provider(aws_sdk_ecr::config::SharedCredentialsProvider::new(
            provider,
        ))
        .build()
}

/// What an AWS error means for the message that needed the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AwsErrorClass {
    /// Throttling, timeouts, connection failures and 5xx: try again later.
    Transient(String),
    /// The service answered with this error code: a lasting answer (not found, denied, …).
    Service { code: String, message: String },
}

const THROTTLING_CODES: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "RequestThrottledException",
    "ProvisionedThroughputExceededException",
    "SlowDown",
];

/// Error codes with which AWS refuses a caller its permission: an identity policy without the
/// grant, a resource policy (repository, key, registry) or an SCP that denies it.
const ACCESS_DENIED_CODES: &[&str] = &[
    "AccessDenied",
    "AccessDeniedException",
    "UnauthorizedOperation",
    "UnauthorizedException",
    "AuthorizationError",
];

/// Whether a lasting error code says the caller was refused permission.
pub(crate) fn is_access_denied(code: &str) -> bool {
    ACCESS_DENIED_CODES.contains(&code)
}

/// Classifies any SDK error (every AWS SDK crate shares this error type).
pub(crate) fn classify<E>(err: &SdkError<E, HttpResponse>) -> AwsErrorClass
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match err {
        SdkError::ServiceError(context) => {
            let service_error = context.err();
            let code = service_error.code().unwrap_or("Unknown").to_owned();
            let message = service_error.message().unwrap_or_default().to_owned();
            let status = context.raw().status().as_u16();
            if status >= 500 || status == 429 || THROTTLING_CODES.contains(&code.as_str()) {
                AwsErrorClass::Transient(format!("{code} (HTTP {status}): {message}"))
            } else {
                AwsErrorClass::Service { code, message }
            }
        }
        other => AwsErrorClass::Transient(DisplayErrorContext(other).to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_told_from_other_lasting_errors() {
        for code in [
            "AccessDenied",
            "AccessDeniedException",
            "UnauthorizedOperation",
        ] {
            assert!(is_access_denied(code), "{code}");
        }
        for code in [
            "RepositoryNotFoundException",
            "LifecyclePolicyNotFoundException",
            "ValidationException",
            "accessdenied",
        ] {
            assert!(!is_access_denied(code), "{code}");
        }
    }
}

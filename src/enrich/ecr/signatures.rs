//! Reading what a signature artifact holds: its manifest (`BatchGetImage`) and a blob through
//! the download URL ECR answers (`GetDownloadUrlForLayer`, then an HTTP GET), paced, counted
//! and settled like every other call, with the blob read bounded in size and time.

use std::time::Duration;

use aws_sdk_ecr::types::ImageIdentifier;
use sha2::{Digest as _, Sha256};

use super::EcrRegistry;
use crate::domain::RepositoryKey;
use crate::enrich::EnrichError;
use crate::facts::signature_content::SIGNATURE_MANIFEST_MEDIA_TYPES;
use crate::facts::{BlobRead, Fact, SignatureManifest};
use crate::telemetry::{ApiOutcome, AwsOperation};

/// How long one blob download may take in all. Envelopes are a few KiB; a URL that does not
/// answer within this is retried with the message rather than holding a batch.
pub(super) const BLOB_TIMEOUT: Duration = Duration::from_secs(10);

/// The operation label of the download itself (not an AWS API call, counted beside them).
const BLOB_GET: AwsOperation = AwsOperation::BlobGet;

/// The HTTP client blob downloads use: rustls, a total timeout, few redirects (S3 answers
/// presigned URLs directly).
pub(super) fn blob_client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .timeout(BLOB_TIMEOUT)
        .connect_timeout(BLOB_TIMEOUT / 2)
        .redirect(reqwest::redirect::Policy::limited(3))
        .build()
        .map_err(|e| format!("no HTTP client for blob downloads: {e}"))
}

impl EcrRegistry {
    pub(super) async fn read_signature_manifest(
        &self,
        key: &RepositoryKey,
        reference: &str,
    ) -> Result<Fact<SignatureManifest>, EnrichError> {
        let clients = self.clients_for(key).await;
        let id = if reference.starts_with("sha256:") {
            ImageIdentifier::builder().image_digest(reference)
        } else {
            ImageIdentifier::builder().image_tag(reference)
        };
        self.pace(&clients, AwsOperation::EcrBatchGetImage).await;
        let result = clients
            .ecr
            .batch_get_image()
            .registry_id(key.account.as_str())
            .repository_name(key.name.as_str())
            .image_ids(id.build())
            .set_accepted_media_types(Some(
                SIGNATURE_MANIFEST_MEDIA_TYPES.map(str::to_owned).to_vec(),
            ))
            .send()
            .await;
        let output = match self.settle(AwsOperation::EcrBatchGetImage, key, result)? {
            Ok(output) => output,
            Err((code, message)) => {
                return Ok(Fact::Unknown(format!(
                    "BatchGetImage {reference}: {code}: {message}"
                )));
            }
        };
        let Some(text) = output.images().first().and_then(|i| i.image_manifest()) else {
            let failure = output.failures().first().map_or_else(
                || "no manifest returned".to_owned(),
                |f| {
                    format!(
                        "{:?}: {}",
                        f.failure_code(),
                        f.failure_reason().unwrap_or("")
                    )
                },
            );
            return Ok(Fact::Unknown(format!(
                "BatchGetImage {reference}: {failure}"
            )));
        };
        Ok(match SignatureManifest::from_json(text) {
            Ok(manifest) => Fact::Known(manifest),
            Err(unreadable) => Fact::Unknown(format!(
                "signature manifest {reference} is unreadable: {}",
                unreadable.0
            )),
        })
    }

    pub(super) async fn read_blob(
        &self,
        key: &RepositoryKey,
        digest: &str,
        max_bytes: usize,
    ) -> Result<Fact<BlobRead>, EnrichError> {
        match self.download_url(key, digest).await? {
            Ok(url) => self.download(&url, digest, max_bytes).await,
            Err(reason) => Ok(Fact::Unknown(reason)),
        }
    }

    async fn download_url(
        &self,
        key: &RepositoryKey,
        digest: &str,
    ) -> Result<Result<String, String>, EnrichError> {
        let clients = self.clients_for(key).await;
        self.pace(&clients, AwsOperation::EcrGetDownloadUrlForLayer)
            .await;
        let result = clients
            .ecr
            .get_download_url_for_layer()
            .registry_id(key.account.as_str())
            .repository_name(key.name.as_str())
            .layer_digest(digest)
            .send()
            .await;
        Ok(
            match self.settle(AwsOperation::EcrGetDownloadUrlForLayer, key, result)? {
                Ok(output) => output
                    .download_url()
                    .map(str::to_owned)
                    .ok_or_else(|| format!("GetDownloadUrlForLayer {digest}: no URL answered")),
                Err((code, message)) => Err(format!(
                    "GetDownloadUrlForLayer {digest}: {code}: {message}"
                )),
            },
        )
    }

    /// GETs the URL, stopping as soon as more than `max_bytes` arrive. The URL is a bearer
    /// credential (presigned), so it never appears in errors or logs: only the digest does.
    async fn download(
        &self,
        url: &str,
        digest: &str,
        max_bytes: usize,
    ) -> Result<Fact<BlobRead>, EnrichError> {
        let http = match &self.http {
            Ok(http) => http,
            Err(reason) => return Ok(Fact::Unknown(reason.clone())),
        };
        let transient = |message: String| {
            self.called(BLOB_GET, ApiOutcome::Transient);
            EnrichError::Transient {
                operation: BLOB_GET.as_str(),
                target: digest.to_owned(),
                message,
            }
        };
        let mut response = http
            .get(url)
            .send()
            .await
            .map_err(|e| transient(e.without_url().to_string()))?;
        let status = response.status();
        // A server error, throttling or an expired URL (403) is worth a retry with a new URL.
        if status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 403 {
            return Err(transient(format!("download answered {status}")));
        }
        if !status.is_success() {
            self.called(BLOB_GET, ApiOutcome::ServiceError);
            return Ok(Fact::Unknown(format!(
                "blob {digest}: download answered {status}"
            )));
        }
        if response
            .content_length()
            .is_some_and(|length| length > max_bytes as u64)
        {
            self.called(BLOB_GET, ApiOutcome::Ok);
            return Ok(Fact::Known(BlobRead::TooLarge { limit: max_bytes }));
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| transient(e.without_url().to_string()))?
        {
            if bytes.len() + chunk.len() > max_bytes {
                self.called(BLOB_GET, ApiOutcome::Ok);
                return Ok(Fact::Known(BlobRead::TooLarge { limit: max_bytes }));
            }
            bytes.extend_from_slice(&chunk);
        }
        self.called(BLOB_GET, ApiOutcome::Ok);
        Ok(Fact::Known(checked_blob(bytes, digest)))
    }
}

/// The bytes, if they hash to the digest asked for (blobs are content-addressed).
fn checked_blob(bytes: Vec<u8>, digest: &str) -> BlobRead {
    let actual = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
    if actual == digest {
        BlobRead::Bytes(bytes)
    } else {
        BlobRead::DigestMismatch { actual }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blob_is_kept_only_when_it_hashes_to_its_digest() {
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(b"{}")));
        assert_eq!(
            checked_blob(b"{}".to_vec(), &digest),
            BlobRead::Bytes(b"{}".to_vec())
        );
        assert!(matches!(
            checked_blob(b"[]".to_vec(), &digest),
            BlobRead::DigestMismatch { .. }
        ));
    }
}

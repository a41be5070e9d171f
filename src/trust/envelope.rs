//! Notary signature envelopes, JWS (JSON serialization) and COSE_Sign1, read into one shape:
//! what was signed, the signature, the certificate chain and the signed attributes. Parsing
//! only: no signature or certificate is checked here.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use coset::TaggedCborSerializable as _;
use serde::Deserialize;

use super::Limits;
use super::outcome::{Failure, Rejection};

pub(crate) const JWS_MEDIA_TYPE: &str = "application/jose+json";
pub(crate) const COSE_MEDIA_TYPE: &str = "application/cose";
pub(crate) const PAYLOAD_MEDIA_TYPE: &str = "application/vnd.cncf.notary.payload.v1+json";

const SCHEME: &str = "io.cncf.notary.signingScheme";
const SIGNING_TIME: &str = "io.cncf.notary.signingTime";
const AUTHENTIC_SIGNING_TIME: &str = "io.cncf.notary.authenticSigningTime";
const EXPIRY: &str = "io.cncf.notary.expiry";
const SIGNER_PROFILE_VERSION: &str = "com.amazonaws.signer.signingProfileVersion";
const SIGNER_JOB: &str = "com.amazonaws.signer.signingJob";

/// Critical headers ecr-audit understands. Notation's verification-plugin attributes are not
/// among them: a signature that needs a plugin cannot be verified here.
const KNOWN_CRITICAL: [&str; 6] = [
    SCHEME,
    SIGNING_TIME,
    AUTHENTIC_SIGNING_TIME,
    EXPIRY,
    SIGNER_PROFILE_VERSION,
    SIGNER_JOB,
];

/// The signature algorithms the Notary Project signature specification allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Ps256,
    Ps384,
    Ps512,
    Es256,
    Es384,
    Es512,
}

impl Algorithm {
    fn from_jws(name: &str) -> Option<Self> {
        match name {
            "PS256" => Some(Self::Ps256),
            "PS384" => Some(Self::Ps384),
            "PS512" => Some(Self::Ps512),
            "ES256" => Some(Self::Es256),
            "ES384" => Some(Self::Es384),
            "ES512" => Some(Self::Es512),
            _ => None,
        }
    }

    fn from_cose(alg: &coset::Algorithm) -> Option<Self> {
        use coset::iana::Algorithm as A;
        match alg {
            coset::RegisteredLabelWithPrivate::Assigned(A::PS256) => Some(Self::Ps256),
            coset::RegisteredLabelWithPrivate::Assigned(A::PS384) => Some(Self::Ps384),
            coset::RegisteredLabelWithPrivate::Assigned(A::PS512) => Some(Self::Ps512),
            coset::RegisteredLabelWithPrivate::Assigned(A::ES256) => Some(Self::Es256),
            coset::RegisteredLabelWithPrivate::Assigned(A::ES384) => Some(Self::Es384),
            coset::RegisteredLabelWithPrivate::Assigned(A::ES512) => Some(Self::Es512),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ps256 => "PS256",
            Self::Ps384 => "PS384",
            Self::Ps512 => "PS512",
            Self::Es256 => "ES256",
            Self::Es384 => "ES384",
            Self::Es512 => "ES512",
        }
    }
}

/// The two Notary signing schemes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotaryScheme {
    /// `notary.x509`: the signing time is the signer's claim.
    X509,
    /// `notary.x509.signingAuthority`: the signing time is authentic (e.g. AWS Signer).
    SigningAuthority,
}

impl NotaryScheme {
    fn parse(value: &str) -> Option<Self> {
        match value {
            "notary.x509" => Some(Self::X509),
            "notary.x509.signingAuthority" => Some(Self::SigningAuthority),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::X509 => "notary.x509",
            Self::SigningAuthority => "notary.x509.signingAuthority",
        }
    }
}

/// A signed attribute's value, format-neutral.
enum AttributeValue {
    Text(String),
    Time(DateTime<Utc>),
    Other,
}

/// An envelope read into the parts verification needs.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub algorithm: Algorithm,
    /// The exact bytes the signature covers (JWS signing input or COSE Sig_structure).
    pub signed_bytes: Vec<u8>,
    pub signature: Vec<u8>,
    pub payload: Vec<u8>,
    /// DER certificates, leaf first.
    pub certificates: Vec<Vec<u8>>,
    pub scheme: NotaryScheme,
    pub signing_time: DateTime<Utc>,
    pub expiry: Option<DateTime<Utc>>,
    pub signer_profile_version: Option<String>,
    pub signer_job: Option<String>,
}

fn unreadable(reason: impl Into<String>) -> Rejection {
    Rejection::new(Failure::EnvelopeUnreadable, reason)
}

/// Reads an envelope of `media_type`; the size limit is checked by the caller.
pub fn parse(media_type: &str, bytes: &[u8], limits: &Limits) -> Result<Envelope, Rejection> {
    match media_type {
        JWS_MEDIA_TYPE => parse_jws(bytes, limits),
        COSE_MEDIA_TYPE => parse_cose(bytes, limits),
        other => Err(Rejection::new(
            Failure::UnsupportedEnvelope,
            format!(
                "envelope media type {other:?} is neither {JWS_MEDIA_TYPE} nor {COSE_MEDIA_TYPE}"
            ),
        )),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JwsDocument {
    payload: String,
    protected: String,
    header: JwsUnprotected,
    signature: String,
}

#[derive(Deserialize)]
struct JwsUnprotected {
    #[serde(default)]
    x5c: Vec<String>,
}

fn parse_jws(bytes: &[u8], limits: &Limits) -> Result<Envelope, Rejection> {
    // serde_json stops at 128 levels of nesting, so deep input fails fast without recursion risk.
    let document: JwsDocument = serde_json::from_slice(bytes).map_err(|e| {
        unreadable(format!(
            "JWS envelope is not the flattened JSON serialization: {e}"
        ))
    })?;
    let protected_json = URL_SAFE_NO_PAD
        .decode(&document.protected)
        .map_err(|_| unreadable("JWS protected header is not base64url"))?;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&protected_json)
            .map_err(|e| unreadable(format!("JWS protected header is not a JSON object: {e}")))?;
    let algorithm = jws_algorithm(&header)?;
    let cty = header.get("cty").and_then(serde_json::Value::as_str);
    check_content_type(cty)?;
    let crit = jws_crit(&header)?;
    let lookup = |name: &str| header.get(name).map(|value| jws_attribute(name, value));
    let attributes = read_attributes(&crit, lookup)?;
    let certificates = decode_chain(&document.header.x5c, limits)?;
    let payload = URL_SAFE_NO_PAD
        .decode(&document.payload)
        .map_err(|_| unreadable("JWS payload is not base64url"))?;
    let signature = URL_SAFE_NO_PAD
        .decode(&document.signature)
        .map_err(|_| unreadable("JWS signature is not base64url"))?;
    let signed_bytes = format!("{}.{}", document.protected, document.payload).into_bytes();
    Ok(Envelope {
        algorithm,
        signed_bytes,
        signature,
        payload,
        certificates,
        scheme: attributes.scheme,
        signing_time: attributes.signing_time,
        expiry: attributes.expiry,
        signer_profile_version: attributes.signer_profile_version,
        signer_job: attributes.signer_job,
    })
}

/// The JWS `alg`: one of the algorithms the specification allows, or the rejection.
fn jws_algorithm(
    header: &serde_json::Map<String, serde_json::Value>,
) -> Result<Algorithm, Rejection> {
    let alg = header
        .get("alg")
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| unreadable("JWS protected header has no alg"))?;
    Algorithm::from_jws(alg).ok_or_else(|| {
        Rejection::new(
            Failure::UnsupportedAlgorithm,
            format!("JWS alg {alg:?} is not one of PS256/384/512, ES256/384/512"),
        )
    })
}

/// The JWS `crit` list; the specification requires one.
fn jws_crit(header: &serde_json::Map<String, serde_json::Value>) -> Result<Vec<String>, Rejection> {
    match header.get("crit") {
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| unreadable("JWS crit holds a non-string"))
            })
            .collect(),
        _ => Err(unreadable("JWS protected header has no crit list")),
    }
}

/// A protected-header attribute as the attribute reader sees it: times are RFC 3339 strings.
fn jws_attribute(name: &str, value: &serde_json::Value) -> AttributeValue {
    match value {
        serde_json::Value::String(text) => match name {
            SIGNING_TIME | AUTHENTIC_SIGNING_TIME | EXPIRY => DateTime::parse_from_rfc3339(text)
                .map(|t| AttributeValue::Time(t.with_timezone(&Utc)))
                .unwrap_or(AttributeValue::Other),
            _ => AttributeValue::Text(text.clone()),
        },
        _ => AttributeValue::Other,
    }
}

fn decode_chain(x5c: &[String], limits: &Limits) -> Result<Vec<Vec<u8>>, Rejection> {
    check_chain_length(x5c.len(), limits)?;
    x5c.iter()
        .map(|cert| {
            STANDARD
                .decode(cert)
                .map_err(|_| unreadable("an x5c certificate is not base64"))
        })
        .collect()
}

fn check_chain_length(count: usize, limits: &Limits) -> Result<(), Rejection> {
    if count == 0 {
        return Err(unreadable("the envelope carries no certificate chain"));
    }
    if count > limits.max_chain_certificates {
        return Err(Rejection::new(
            Failure::ChainTooLong,
            format!(
                "the certificate chain has {count} certificates, more than the limit of {}",
                limits.max_chain_certificates
            ),
        ));
    }
    Ok(())
}

fn check_content_type(cty: Option<&str>) -> Result<(), Rejection> {
    match cty {
        Some(PAYLOAD_MEDIA_TYPE) => Ok(()),
        Some(other) => Err(unreadable(format!(
            "payload content type {other:?} is not {PAYLOAD_MEDIA_TYPE}"
        ))),
        None => Err(unreadable("the protected header has no content type")),
    }
}

struct Attributes {
    scheme: NotaryScheme,
    signing_time: DateTime<Utc>,
    expiry: Option<DateTime<Utc>>,
    signer_profile_version: Option<String>,
    signer_job: Option<String>,
}

/// The Notary signed attributes, with the specification's critical-header rules.
fn read_attributes(
    crit: &[String],
    lookup: impl Fn(&str) -> Option<AttributeValue>,
) -> Result<Attributes, Rejection> {
    if let Some(unknown) = crit
        .iter()
        .find(|name| !KNOWN_CRITICAL.contains(&name.as_str()))
    {
        return Err(Rejection::new(
            Failure::UnknownCriticalHeader,
            format!("critical header {unknown:?} is not understood"),
        ));
    }
    if let Some(missing) = crit.iter().find(|name| lookup(name).is_none()) {
        return Err(unreadable(format!(
            "critical header {missing:?} is listed but absent"
        )));
    }
    if !crit.iter().any(|name| name == SCHEME) {
        return Err(unreadable("the signing scheme is not marked critical"));
    }
    let scheme = match lookup(SCHEME) {
        Some(AttributeValue::Text(value)) => NotaryScheme::parse(&value).ok_or_else(|| {
            unreadable(format!(
                "signing scheme {value:?} is not notary.x509 or notary.x509.signingAuthority"
            ))
        })?,
        _ => return Err(unreadable("the signing scheme is missing or not text")),
    };
    let time_of = |name: &str| -> Result<Option<DateTime<Utc>>, Rejection> {
        match lookup(name) {
            None => Ok(None),
            Some(AttributeValue::Time(time)) => Ok(Some(time)),
            Some(_) => Err(unreadable(format!("{name} is not a date-time"))),
        }
    };
    let (time_name, must_be_critical) = match scheme {
        NotaryScheme::X509 => (SIGNING_TIME, false),
        NotaryScheme::SigningAuthority => (AUTHENTIC_SIGNING_TIME, true),
    };
    let signing_time = time_of(time_name)?
        .ok_or_else(|| unreadable(format!("{time_name} is required by {}", scheme.as_str())))?;
    if must_be_critical && !crit.iter().any(|name| name == time_name) {
        return Err(unreadable(format!("{time_name} is not marked critical")));
    }
    let expiry = time_of(EXPIRY)?;
    if expiry.is_some() && !crit.iter().any(|name| name == EXPIRY) {
        return Err(unreadable("the expiry is not marked critical"));
    }
    let text_of = |name: &str| -> Result<Option<String>, Rejection> {
        match lookup(name) {
            None => Ok(None),
            Some(AttributeValue::Text(text)) => Ok(Some(text)),
            Some(_) => Err(unreadable(format!("{name} is not text"))),
        }
    };
    Ok(Attributes {
        scheme,
        signing_time,
        expiry,
        signer_profile_version: text_of(SIGNER_PROFILE_VERSION)?,
        signer_job: text_of(SIGNER_JOB)?,
    })
}

fn parse_cose(bytes: &[u8], limits: &Limits) -> Result<Envelope, Rejection> {
    // coset decodes with ciborium, whose recursion limit stops deep nesting with an error.
    let sign1 = coset::CoseSign1::from_tagged_slice(bytes)
        .map_err(|e| unreadable(format!("not a tagged COSE_Sign1: {e}")))?;
    let header = &sign1.protected.header;
    let alg = header
        .alg
        .as_ref()
        .ok_or_else(|| unreadable("COSE protected header has no alg"))?;
    let algorithm = Algorithm::from_cose(alg).ok_or_else(|| {
        Rejection::new(
            Failure::UnsupportedAlgorithm,
            format!("COSE alg {alg:?} is not one of PS256/384/512, ES256/384/512"),
        )
    })?;
    let cty = match &header.content_type {
        Some(coset::ContentType::Text(text)) => Some(text.as_str()),
        Some(_) => Some("(a CoAP content format)"),
        None => None,
    };
    check_content_type(cty)?;
    let crit = header
        .crit
        .iter()
        .map(|label| match label {
            coset::RegisteredLabelWithPrivate::Text(name) => Ok(name.clone()),
            other => Err(Rejection::new(
                Failure::UnknownCriticalHeader,
                format!("critical header {other:?} is not understood"),
            )),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let lookup = |name: &str| -> Option<AttributeValue> {
        header
            .rest
            .iter()
            .find(|(label, _)| matches!(label, coset::Label::Text(text) if text == name))
            .map(|(_, value)| cose_attribute(value))
    };
    let attributes = read_attributes(&crit, lookup)?;
    let certificates = cose_chain(&sign1.unprotected, limits)?;
    let payload = sign1
        .payload
        .clone()
        .ok_or_else(|| unreadable("the COSE payload is detached"))?;
    let signed_bytes = sign1.tbs_data(&[]);
    Ok(Envelope {
        algorithm,
        signed_bytes,
        signature: sign1.signature,
        payload,
        certificates,
        scheme: attributes.scheme,
        signing_time: attributes.signing_time,
        expiry: attributes.expiry,
        signer_profile_version: attributes.signer_profile_version,
        signer_job: attributes.signer_job,
    })
}

/// Times are CBOR tag 1 (epoch seconds, integer or float); strings are text.
fn cose_attribute(value: &ciborium::Value) -> AttributeValue {
    match value {
        ciborium::Value::Text(text) => AttributeValue::Text(text.clone()),
        ciborium::Value::Tag(1, inner) => {
            let seconds = match inner.as_ref() {
                ciborium::Value::Integer(i) => i64::try_from(*i).ok(),
                ciborium::Value::Float(f) if f.is_finite() && f.abs() < 1e15 => {
                    Some(f.trunc() as i64)
                }
                _ => None,
            };
            seconds
                .and_then(|s| DateTime::<Utc>::from_timestamp(s, 0))
                .map_or(AttributeValue::Other, AttributeValue::Time)
        }
        _ => AttributeValue::Other,
    }
}

/// `x5chain` (label 33): one certificate as a byte string, or an array of them, leaf first.
fn cose_chain(unprotected: &coset::Header, limits: &Limits) -> Result<Vec<Vec<u8>>, Rejection> {
    let value = unprotected
        .rest
        .iter()
        .find(|(label, _)| *label == coset::Label::Int(33))
        .map(|(_, value)| value)
        .ok_or_else(|| unreadable("the COSE envelope has no x5chain"))?;
    match value {
        ciborium::Value::Bytes(der) => Ok(vec![der.clone()]),
        ciborium::Value::Array(items) => {
            check_chain_length(items.len(), limits)?;
            items
                .iter()
                .map(|item| match item {
                    ciborium::Value::Bytes(der) => Ok(der.clone()),
                    _ => Err(unreadable("an x5chain entry is not a byte string")),
                })
                .collect()
        }
        _ => Err(unreadable("x5chain is neither bytes nor an array")),
    }
}

//! X.509 for Notary signatures: the signing key's algorithm, the primitive signature check
//! (aws-lc-rs), the specification's certificate requirements, chain building to a trust store
//! (rustls-webpki) and the leaf's subject.

use aws_lc_rs::signature as sig;
use chrono::{DateTime, Utc};
use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use x509_parser::prelude::{FromDer as _, X509Certificate};

use super::envelope::Algorithm;
use super::outcome::{Failure, Rejection};

/// id-kp-codeSigning (1.3.6.1.5.5.7.3.3), DER contents of the OID.
const CODE_SIGNING_EKU: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x03];

const P256: &str = "1.2.840.10045.3.1.7";
const P384: &str = "1.3.132.0.34";
const P521: &str = "1.3.132.0.35";

/// The chain of an envelope, parsed; index 0 is the leaf.
pub(crate) struct Chain<'a> {
    pub ders: &'a [Vec<u8>],
    pub parsed: Vec<X509Certificate<'a>>,
}

impl<'a> Chain<'a> {
    pub fn parse(ders: &'a [Vec<u8>]) -> Result<Self, Rejection> {
        let parsed = ders
            .iter()
            .enumerate()
            .map(|(index, der)| match X509Certificate::from_der(der) {
                Ok(([], cert)) => Ok(cert),
                _ => Err(Rejection::new(
                    Failure::EnvelopeUnreadable,
                    format!("certificate {index} of the chain is not DER X.509"),
                )),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { ders, parsed })
    }

    pub(crate) fn leaf(&self) -> &X509Certificate<'a> {
        // `parse` is only called on a non-empty chain (the envelope parser refuses empty ones).
        &self.parsed[0]
    }
}

/// The algorithm the specification's selection table assigns to the leaf's key.
pub(crate) fn algorithm_for_key(leaf: &X509Certificate<'_>) -> Result<Algorithm, Rejection> {
    let spki = leaf.public_key();
    let unsupported = |what: String| Rejection::new(Failure::UnsupportedAlgorithm, what);
    match spki.parsed() {
        Ok(x509_parser::public_key::PublicKey::RSA(rsa)) => match rsa.key_size() {
            2048 => Ok(Algorithm::Ps256),
            3072 => Ok(Algorithm::Ps384),
            4096 => Ok(Algorithm::Ps512),
            bits => Err(unsupported(format!(
                "RSA key of {bits} bits (2048, 3072 or 4096 allowed)"
            ))),
        },
        Ok(x509_parser::public_key::PublicKey::EC(_)) => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|oid| oid.to_id_string())
                .unwrap_or_default();
            match curve.as_str() {
                P256 => Ok(Algorithm::Es256),
                P384 => Ok(Algorithm::Es384),
                P521 => Ok(Algorithm::Es512),
                other => Err(unsupported(format!(
                    "EC curve {other:?} (P-256, P-384 or P-521 allowed)"
                ))),
            }
        }
        _ => Err(unsupported(
            "the signing key is neither RSA nor EC".to_owned(),
        )),
    }
}

/// Checks the primitive signature with the leaf's public key. JWS and COSE both carry ECDSA
/// signatures as fixed-width r‖s, and RSASSA-PSS with the hash's length as salt.
pub(crate) fn verify_signature(
    algorithm: Algorithm,
    leaf: &X509Certificate<'_>,
    message: &[u8],
    signature: &[u8],
) -> Result<(), Rejection> {
    let verification: &'static dyn sig::VerificationAlgorithm = match algorithm {
        Algorithm::Ps256 => &sig::RSA_PSS_2048_8192_SHA256,
        Algorithm::Ps384 => &sig::RSA_PSS_2048_8192_SHA384,
        Algorithm::Ps512 => &sig::RSA_PSS_2048_8192_SHA512,
        Algorithm::Es256 => &sig::ECDSA_P256_SHA256_FIXED,
        Algorithm::Es384 => &sig::ECDSA_P384_SHA384_FIXED,
        Algorithm::Es512 => &sig::ECDSA_P521_SHA512_FIXED,
    };
    // For RSA the BIT STRING holds the PKCS#1 RSAPublicKey, for EC the uncompressed point: the
    // forms aws-lc-rs's UnparsedPublicKey takes.
    let key = &leaf.public_key().subject_public_key.data;
    sig::UnparsedPublicKey::new(verification, key.as_ref())
        .verify(message, signature)
        .map_err(|_| {
            Rejection::new(
                Failure::BadSignature,
                format!(
                    "the {} signature does not verify with the leaf certificate's key",
                    algorithm.as_str()
                ),
            )
        })
}

/// The specification's certificate requirements beyond chain building: key usages of the
/// leaf and the CAs, no SHA-1, basic constraints.
pub(crate) fn check_requirements(chain: &Chain<'_>) -> Result<(), Rejection> {
    let usage = |reason: String| Rejection::new(Failure::CertificateUsage, reason);
    leaf_key_usage(chain.leaf()).map_err(|r| usage(r.to_owned()))?;
    leaf_extended_key_usage(chain.leaf()).map_err(|r| usage(r.to_owned()))?;
    if let Ok(Some(bc)) = chain.leaf().basic_constraints()
        && bc.value.ca
        && chain.parsed.len() > 1
    {
        return Err(usage("the leaf is a CA certificate".to_owned()));
    }
    for (index, cert) in chain.parsed.iter().enumerate().skip(1) {
        let is_ca = matches!(cert.basic_constraints(), Ok(Some(bc)) if bc.critical && bc.value.ca);
        let signs_certs =
            matches!(cert.key_usage(), Ok(Some(ku)) if ku.critical && ku.value.key_cert_sign());
        if !is_ca || !signs_certs {
            return Err(usage(format!(
                "certificate {index} is not a CA (critical basicConstraints cA and keyCertSign needed)"
            )));
        }
    }
    for (index, cert) in chain.parsed.iter().enumerate() {
        let algorithm = cert.signature_algorithm.algorithm.to_id_string();
        // sha1WithRSAEncryption and ecdsa-with-SHA1
        if algorithm == "1.2.840.113549.1.1.5" || algorithm == "1.2.840.10045.4.1" {
            return Err(usage(format!("certificate {index} is signed with SHA-1")));
        }
    }
    Ok(())
}

/// The leaf's key usage: critical, digitalSignature, and nothing else.
fn leaf_key_usage(leaf: &X509Certificate<'_>) -> Result<(), &'static str> {
    let Ok(Some(ku)) = leaf.key_usage() else {
        return Err("the leaf has no critical key usage with digitalSignature");
    };
    let v = ku.value;
    if !ku.critical || !v.digital_signature() {
        return Err("the leaf has no critical key usage with digitalSignature");
    }
    let more = v.key_encipherment()
        || v.data_encipherment()
        || v.key_agreement()
        || v.key_cert_sign()
        || v.crl_sign()
        || v.encipher_only()
        || v.decipher_only();
    if more {
        return Err("the leaf's key usage allows more than digitalSignature");
    }
    Ok(())
}

/// The leaf's extended key usage: absent, or code signing alone.
fn leaf_extended_key_usage(leaf: &X509Certificate<'_>) -> Result<(), &'static str> {
    match leaf.extended_key_usage() {
        Ok(None) => Ok(()),
        Ok(Some(eku)) => {
            let v = eku.value;
            let other =
                v.any || v.server_auth || v.client_auth || v.email_protection || v.time_stamping;
            if other || !v.code_signing {
                return Err(
                    "the leaf's extended key usage is not code signing (id-kp-codeSigning)",
                );
            }
            Ok(())
        }
        Err(_) => Err("the leaf's extended key usage is malformed"),
    }
}

/// The instant at which to build the chain: the signing time when every certificate is valid
/// then, else the latest notBefore if all validities share it. None when they never overlap.
pub(crate) fn chain_instant(chain: &Chain<'_>, signing_time: DateTime<Utc>) -> Option<i64> {
    let at = signing_time.timestamp();
    if all_valid_at(chain, at) {
        return Some(at);
    }
    let latest_start = chain
        .parsed
        .iter()
        .map(|c| c.validity().not_before.timestamp())
        .max()?;
    all_valid_at(chain, latest_start).then_some(latest_start)
}

pub(crate) fn all_valid_at(chain: &Chain<'_>, at: i64) -> bool {
    chain.parsed.iter().all(|cert| valid_at(cert, at))
}

pub(crate) fn valid_at(cert: &X509Certificate<'_>, at: i64) -> bool {
    let validity = cert.validity();
    validity.not_before.timestamp() <= at && at <= validity.not_after.timestamp()
}

/// Builds a path from the leaf to one of `roots` at `instant`, requiring code signing when the
/// leaf names extended key usages.
pub fn verify_chain(
    chain: &Chain<'_>,
    roots: &[CertificateDer<'static>],
    instant: i64,
) -> Result<(), Rejection> {
    let untrusted = |reason: String| Rejection::new(Failure::UntrustedChain, reason);
    let anchors: Vec<TrustAnchor<'_>> = roots
        .iter()
        .filter_map(|root| webpki::anchor_from_trusted_cert(root).ok())
        .collect();
    if anchors.is_empty() {
        return Err(untrusted(
            "the policy's trust stores hold no usable root".to_owned(),
        ));
    }
    let leaf_der = CertificateDer::from(chain.ders[0].as_slice());
    let leaf = webpki::EndEntityCert::try_from(&leaf_der)
        .map_err(|e| untrusted(format!("the leaf certificate is not usable: {e}")))?;
    let intermediates: Vec<CertificateDer<'_>> = chain.ders[1..]
        .iter()
        .map(|der| CertificateDer::from(der.as_slice()))
        .collect();
    let seconds = u64::try_from(instant)
        .map_err(|_| untrusted("a certificate is dated before 1970".to_owned()))?;
    let time = UnixTime::since_unix_epoch(std::time::Duration::from_secs(seconds));
    leaf.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        &intermediates,
        time,
        webpki::KeyUsage::required_if_present(CODE_SIGNING_EKU),
        None,
        None,
    )
    .map(|_| ())
    .map_err(|e| match e {
        webpki::Error::RequiredEkuNotFoundContext(_) | webpki::Error::EmptyEkuExtension => {
            Rejection::new(
                Failure::CertificateUsage,
                format!("extended key usage: {e}"),
            )
        }
        other => untrusted(format!(
            "the chain does not lead to a trusted root: {other}"
        )),
    })
}

/// The subject as `C=…, ST=…, O=…, CN=…` (in the certificate's order) and as pairs.
pub fn subject(cert: &X509Certificate<'_>) -> (String, Vec<(String, String)>) {
    let pairs: Vec<(String, String)> = cert
        .subject()
        .iter_attributes()
        .map(|attr| {
            let oid = attr.attr_type().to_id_string();
            let key = match oid.as_str() {
                "2.5.4.6" => "C".to_owned(),
                "2.5.4.8" => "ST".to_owned(),
                "2.5.4.7" => "L".to_owned(),
                "2.5.4.10" => "O".to_owned(),
                "2.5.4.11" => "OU".to_owned(),
                "2.5.4.3" => "CN".to_owned(),
                "2.5.4.5" => "SERIALNUMBER".to_owned(),
                "1.2.840.113549.1.9.1" => "E".to_owned(),
                other => other.to_owned(),
            };
            (key, attr.as_str().unwrap_or("").to_owned())
        })
        .collect();
    let text = pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", escape_rdn_value(v)))
        .collect::<Vec<_>>()
        .join(", ");
    (text, pairs)
}

fn escape_rdn_value(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace(',', "\\,")
        .replace(';', "\\;")
}

"""A throwaway X.509 hierarchy for signature tests: root -> intermediate -> leaf.

Written with the `cryptography` package only, so that the Rust verifier in src/trust/ is
checked against an independent implementation. Keys are ECDSA P-256 unless asked otherwise
(RSA keys are slow to make); a leaf is valid from an hour ago for a year and a CA from five years ago for
fifteen years, unless the caller passes dates.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Key kinds the Notary Project signature specification allows, plus what tests need beyond them.
KEY_TYPES = ("ec-p256", "ec-p384", "ec-p521", "rsa-2048", "rsa-3072", "rsa-4096", "rsa-1024")

# The OID of an extension AWS Signer-like leaves carry in tests: the signing profile version ARN
# the certificate was issued for (UTF8String). Only the signed header attribute counts for
# verification; the extension makes a leaf recognisable when read by hand.
SIGNER_PROFILE_EXTENSION_OID = x509.ObjectIdentifier("1.3.6.1.4.1.57264.99.1")


@dataclass
class Identity:
    """A private key with its certificate; `chain` is leaf first, root last."""

    key: object
    cert: x509.Certificate
    chain: list = field(default_factory=list)


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def new_key(key_type: str = "ec-p256"):
    """A fresh private key of one of KEY_TYPES."""
    if key_type == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "ec-p384":
        return ec.generate_private_key(ec.SECP384R1())
    if key_type == "ec-p521":
        return ec.generate_private_key(ec.SECP521R1())
    if key_type.startswith("rsa-"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(key_type[4:]))
    raise ValueError(f"unknown key type {key_type!r}; one of {KEY_TYPES}")


def _hash_for(key):
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return {256: hashes.SHA256(), 384: hashes.SHA384(), 521: hashes.SHA512()}[key.curve.key_size]
    return hashes.SHA256()


def _name(common_name: str, organization: str = "ecr-audit tests") -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "WA"),
            x509.NameAttribute(NameOID.LOCALITY_NAME, "Seattle"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _validity(not_before, not_after, ca):
    # CAs outlive their leaves, so a leaf's whole validity (past or present) is inside theirs.
    if ca:
        start = not_before or now() - dt.timedelta(days=5 * 365)
        end = not_after or now() + dt.timedelta(days=10 * 365)
    else:
        start = not_before or now() - dt.timedelta(hours=1)
        end = not_after or start + dt.timedelta(days=365)
    return start, end


def _builder(subject, issuer_name, public_key, not_before, not_after, ca=False):
    start, end = _validity(not_before, not_after, ca)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def _ca_extensions(builder, path_length):
    return builder.add_extension(
        x509.BasicConstraints(ca=True, path_length=path_length), critical=True
    ).add_extension(
        x509.KeyUsage(
            digital_signature=False,
            content_commitment=False,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=True,
            crl_sign=True,
            encipher_only=False,
            decipher_only=False,
        ),
        critical=True,
    )


def make_root(common_name="ecr-audit test root", key_type="ec-p256", not_before=None, not_after=None):
    """A self-signed root CA."""
    key = new_key(key_type)
    name = _name(common_name)
    builder = _ca_extensions(_builder(name, name, key.public_key(), not_before, not_after, ca=True), None)
    cert = builder.sign(key, _hash_for(key))
    return Identity(key, cert, [cert])


def make_intermediate(
    issuer: Identity,
    common_name="ecr-audit test intermediate",
    key_type="ec-p256",
    not_before=None,
    not_after=None,
    path_length=None,
):
    """A CA certificate issued by `issuer`."""
    key = new_key(key_type)
    builder = _builder(
        _name(common_name), issuer.cert.subject, key.public_key(), not_before, not_after, ca=True
    )
    builder = _ca_extensions(builder, path_length).add_extension(
        x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), critical=False
    )
    cert = builder.sign(issuer.key, _hash_for(issuer.key))
    return Identity(key, cert, [cert, *issuer.chain])


def make_leaf(
    issuer: Identity,
    common_name="ecr-audit test signer",
    organization="ecr-audit tests",
    key_type="ec-p256",
    not_before=None,
    not_after=None,
    eku=(ExtendedKeyUsageOID.CODE_SIGNING,),
    signer_profile_version_arn=None,
):
    """A code-signing leaf issued by `issuer`.

    `eku` is the list of extended key usages (None leaves the extension out; pass
    `(ExtendedKeyUsageOID.SERVER_AUTH,)` for a wrong-EKU leaf). `signer_profile_version_arn`
    makes an AWS Signer-like leaf: its subject names the profile and it carries the ARN in a
    private extension.
    """
    key = new_key(key_type)
    subject = _name(common_name, organization)
    builder = _builder(subject, issuer.cert.subject, key.public_key(), not_before, not_after)
    builder = builder.add_extension(
        x509.BasicConstraints(ca=False, path_length=None), critical=True
    ).add_extension(
        x509.KeyUsage(
            digital_signature=True,
            content_commitment=False,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=False,
            crl_sign=False,
            encipher_only=False,
            decipher_only=False,
        ),
        critical=True,
    ).add_extension(
        x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), critical=False
    )
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
    if signer_profile_version_arn is not None:
        value = signer_profile_version_arn.encode()
        # DER UTF8String: tag 0x0c, short or long length form.
        if len(value) < 128:
            der = bytes([0x0C, len(value)]) + value
        else:
            der = bytes([0x0C, 0x81, len(value)]) + value
        builder = builder.add_extension(
            x509.UnrecognizedExtension(SIGNER_PROFILE_EXTENSION_OID, der), critical=False
        )
    cert = builder.sign(issuer.key, _hash_for(issuer.key))
    return Identity(key, cert, [cert, *issuer.chain])


def make_hierarchy(key_type="ec-p256", leaf_kwargs=None, root_name="ecr-audit test root"):
    """root -> intermediate -> leaf; returns (root, intermediate, leaf)."""
    root = make_root(root_name)
    intermediate = make_intermediate(root)
    leaf = make_leaf(intermediate, key_type=key_type, **(leaf_kwargs or {}))
    return root, intermediate, leaf


def signer_like_leaf(issuer: Identity, profile_version_arn: str, key_type="ec-p384"):
    """A leaf as AWS Signer issues for a signing profile version (EC P-384, code signing)."""
    profile = profile_version_arn.split("/")[-2] if "/" in profile_version_arn else "profile"
    return make_leaf(
        issuer,
        common_name=f"AWS Signer {profile}",
        organization="AWS Signer",
        key_type=key_type,
        signer_profile_version_arn=profile_version_arn,
    )


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def subject_string(cert: x509.Certificate) -> str:
    """The subject as RFC 4514 text, most significant first (C=…, ST=…, O=…, CN=…)."""
    return ", ".join(
        f"{attr.rfc4514_attribute_name}={attr.value}" for attr in cert.subject
    )

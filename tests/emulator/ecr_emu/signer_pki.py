"""The emulated AWS Signer certificate authorities: root → intermediate → one leaf per profile version.

Managed signing signs with the leaf of the signing profile version, and a
verifier trusts the partition's root (what AWS ships as the `aws-signer-ts`
trust store). One root per partition (`aws`, `aws-us-gov`, `aws-cn`), one
intermediate per account and region, one leaf per profile version ARN; all
keys are ECDSA P-384 (the `Notation-OCI-SHA384-ECDSA` platform). The hierarchy
lives as long as the server process: `POST /_emulator/reset` keeps it, so a
trust store fetched once stays valid. `GET /_emulator/signer/roots` answers the
roots as PEM.

`GetRevocationStatus` names certificates by "certificate hash": the hex
SHA-384 of the certificate's TBS bytes followed by that of its issuer's (a
root is its own issuer), as the Signer API reference describes; `identify()`
maps such a hash back to the leaf's profile version.
"""
from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .state import LOCK

ROOT_LIFETIME = dt.timedelta(days=365 * 30)
INTERMEDIATE_LIFETIME = dt.timedelta(days=365 * 20)
#: Leaves outlive the longest signature validity period a profile can ask for (135 months by default).
LEAF_LIFETIME = dt.timedelta(days=365 * 12)
#: Certificates start a little in the past so that a verifier with a slightly slow clock accepts them.
BACKDATE = dt.timedelta(minutes=5)


def partition_of(region: str) -> str:
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    if region.startswith("cn-"):
        return "aws-cn"
    return "aws"


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key."""

    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    def der(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.DER)

    def pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode()


def _name(**parts: str) -> x509.Name:
    oids = {"C": NameOID.COUNTRY_NAME, "ST": NameOID.STATE_OR_PROVINCE_NAME, "L": NameOID.LOCALITY_NAME,
            "O": NameOID.ORGANIZATION_NAME, "OU": NameOID.ORGANIZATIONAL_UNIT_NAME, "CN": NameOID.COMMON_NAME}
    return x509.Name([x509.NameAttribute(oids[key], value) for key, value in parts.items()])


def _issue(subject: x509.Name, issuer: Issued | None, lifetime: dt.timedelta, is_ca: bool) -> Issued:
    """A new P-384 key and its certificate, signed by `issuer` (self-signed when None)."""
    key = ec.generate_private_key(ec.SECP384R1())
    now = dt.datetime.now(dt.timezone.utc)
    signer_key = issuer.key if issuer else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.certificate.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer_key.public_key()), critical=False
        )
    )
    if is_ca:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )
    else:
        # The Notary Project's signing certificate requirements: digitalSignature, and codeSigning if an EKU is present.
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                          encipher_only=False, decipher_only=False),
            critical=True,
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
    return Issued(key, builder.sign(signer_key, hashes.SHA384()))


def tbs_hash(certificate: x509.Certificate) -> str:
    return hashlib.sha384(certificate.tbs_certificate_bytes).hexdigest()


def certificate_hash(child: x509.Certificate, parent: x509.Certificate) -> str:
    """The Signer API's composite certificate hash: SHA-384 of the child's TBS, then of its issuer's."""
    return tbs_hash(child) + tbs_hash(parent)


@dataclass
class SignerPki:
    """Every emulated Signer CA and leaf, created on first use."""

    roots: dict[str, Issued] = field(default_factory=dict)
    intermediates: dict[tuple[str, str, str], Issued] = field(default_factory=dict)
    leaves: dict[str, Issued] = field(default_factory=dict)
    #: certificate hash → the profile version ARN of a leaf, or "" for a CA certificate.
    hashes: dict[str, str] = field(default_factory=dict)

    def root(self, partition: str) -> Issued:
        with LOCK:
            if partition not in self.roots:
                issued = _issue(_name(C="US", O="AWS Signer (emulated)", CN=f"AWS Signer Root CA ({partition})"), None,
                                ROOT_LIFETIME, is_ca=True)
                self.roots[partition] = issued
                self.hashes[certificate_hash(issued.certificate, issued.certificate)] = ""
            return self.roots[partition]

    def intermediate(self, partition: str, account: str, region: str) -> Issued:
        with LOCK:
            key = (partition, account, region)
            if key not in self.intermediates:
                root = self.root(partition)
                issued = _issue(_name(C="US", O="AWS Signer (emulated)", OU=account, CN=f"AWS Signer {region} Intermediate CA"),
                                root, INTERMEDIATE_LIFETIME, is_ca=True)
                self.intermediates[key] = issued
                self.hashes[certificate_hash(issued.certificate, root.certificate)] = ""
            return self.intermediates[key]

    def chain(self, profile_version_arn: str) -> list[Issued]:
        """[leaf, intermediate, root] for a profile version ARN `arn:PARTITION:signer:REGION:ACCOUNT:/signing-profiles/NAME/VERSION`."""
        partition, _, region, account, resource = profile_version_arn.split(":", 5)[1:]
        name_and_version = resource.split("/")[-2:]
        with LOCK:
            intermediate = self.intermediate(partition, account, region)
            if profile_version_arn not in self.leaves:
                issued = _issue(
                    _name(C="US", ST="WA", L="Seattle", O="AWS Signer (emulated)", OU=account,
                          CN="/".join(name_and_version)),
                    intermediate, LEAF_LIFETIME, is_ca=False,
                )
                self.leaves[profile_version_arn] = issued
                self.hashes[certificate_hash(issued.certificate, intermediate.certificate)] = profile_version_arn
            return [self.leaves[profile_version_arn], intermediate, self.root(partition)]

    def identify(self, composite_hash: str) -> str | None:
        """The profile version ARN whose leaf has this certificate hash; "" for a CA; None if unknown."""
        with LOCK:
            return self.hashes.get(composite_hash.lower())

    def roots_pem(self, partition: str | None = None) -> str:
        """The root certificate(s) as PEM: one partition's, or all three."""
        partitions = [partition] if partition else ["aws", "aws-us-gov", "aws-cn"]
        return "".join(self.root(p).pem() for p in partitions)


PKI = SignerPki()

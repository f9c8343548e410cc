//! The catalogue of certificate profiles: what each one gets wrong on purpose, what a
//! verifier must say about it, and what a correct device must do when it meets it.

use serde::{Deserialize, Serialize};

/// Which side of the TLS connection presents the profile's certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Side {
    /// Served by sparring's broker / OTA server; the device verifies it.
    Server,
    /// Provisioned on the device; sparring's TLS gate verifies it (mutual TLS).
    Device,
}

/// What a correct verifier concludes about a profile's chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "verdict", content = "reason")]
pub enum Expected {
    Accept,
    Reject(RejectReason),
}

/// Why a correct verifier refuses a chain (or a correct peer refuses the handshake).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RejectReason {
    Expired,
    NotYetValid,
    NameMismatch,
    UnknownIssuer,
    Revoked,
    /// The extended key usage does not allow this use (serverAuth / clientAuth).
    WrongPurpose,
    /// A CA certificate was presented as the end entity (chain in the wrong order).
    CaUsedAsEndEntity,
    /// A certificate without the CA basic constraint signed another certificate.
    IssuerNotCa,
    /// The private key does not belong to the certificate: the handshake signature fails.
    KeyMismatch,
    /// A certificate of the chain is signed with a hash too weak to trust (SHA-1).
    WeakSignature,
    /// A key of the chain is too small (RSA under 2048 bits).
    WeakKey,
}

impl RejectReason {
    /// What a rustls certificate error means in the manifest's terms (`None` for errors
    /// that are not about the certificate chain).
    pub fn of(error: &rustls::Error) -> Option<RejectReason> {
        use rustls::CertificateError as C;
        match error {
            rustls::Error::InvalidCertificate(e) => Some(match e {
                C::Expired | C::ExpiredContext { .. } => RejectReason::Expired,
                C::NotValidYet | C::NotValidYetContext { .. } => RejectReason::NotYetValid,
                C::NotValidForName | C::NotValidForNameContext { .. } => RejectReason::NameMismatch,
                C::UnknownIssuer => RejectReason::UnknownIssuer,
                C::Revoked => RejectReason::Revoked,
                C::InvalidPurpose | C::InvalidPurposeContext { .. } => RejectReason::WrongPurpose,
                C::BadSignature => RejectReason::KeyMismatch,
                // webpki knows no SHA-1 signature algorithm, so it cannot check such a
                // signature at all: in the catalogue that is the `sha1-signature` leaf.
                #[allow(deprecated)]
                C::UnsupportedSignatureAlgorithm
                | C::UnsupportedSignatureAlgorithmContext { .. } => RejectReason::WeakSignature,
                // webpki's reasons that rustls passes on without a variant of their own.
                other if format!("{other:?}").contains("CaUsedAsEndEntity") => {
                    RejectReason::CaUsedAsEndEntity
                }
                other if format!("{other:?}").contains("EndEntityUsedAsCa") => {
                    RejectReason::IssuerNotCa
                }
                _ => return None,
            }),
            rustls::Error::InconsistentKeys(_) => Some(RejectReason::KeyMismatch),
            _ => None,
        }
    }

    /// Kebab-case name, as in the manifest.
    pub fn name(self) -> &'static str {
        match self {
            RejectReason::Expired => "expired",
            RejectReason::NotYetValid => "not-yet-valid",
            RejectReason::NameMismatch => "name-mismatch",
            RejectReason::UnknownIssuer => "unknown-issuer",
            RejectReason::Revoked => "revoked",
            RejectReason::WrongPurpose => "wrong-purpose",
            RejectReason::CaUsedAsEndEntity => "ca-used-as-end-entity",
            RejectReason::IssuerNotCa => "issuer-not-ca",
            RejectReason::KeyMismatch => "key-mismatch",
            RejectReason::WeakSignature => "weak-signature",
            RejectReason::WeakKey => "weak-key",
        }
    }
}

/// How the verifier in a test must reach the server: by name or by IP address. The
/// `wrong-ip` profile only fails when the device connects by address, as a board that is
/// given the broker's IP does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConnectBy {
    Name,
    Ip,
}

/// One profile of the catalogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Profile {
    pub name: &'static str,
    pub side: Side,
    /// What is wrong with it, for humans.
    pub fault: &'static str,
    /// What a correct device (server profiles) or broker (device profiles) does.
    pub reaction: &'static str,
    pub expected: Expected,
    pub connect_by: ConnectBy,
}

use Expected::{Accept, Reject};
use RejectReason::*;

const fn server(
    name: &'static str,
    fault: &'static str,
    reaction: &'static str,
    expected: Expected,
) -> Profile {
    Profile {
        name,
        side: Side::Server,
        fault,
        reaction,
        expected,
        connect_by: ConnectBy::Name,
    }
}

const fn device(
    name: &'static str,
    fault: &'static str,
    reaction: &'static str,
    expected: Expected,
) -> Profile {
    Profile {
        name,
        side: Side::Device,
        fault,
        reaction,
        expected,
        connect_by: ConnectBy::Name,
    }
}

/// Every profile `sparring certs` writes, server side first.
pub const PROFILES: &[Profile] = &[
    server(
        "valid",
        "none: leaf for the given hosts and IPs, with its intermediate",
        "accept and connect",
        Accept,
    ),
    server(
        "expired",
        "server certificate expired yesterday",
        "refuse: certificate expired (mbedTLS -0x2700, flags 0x01)",
        Reject(Expired),
    ),
    server(
        "not-yet-valid",
        "server certificate valid only from next year",
        "refuse: certificate not yet valid (mbedTLS flags 0x200)",
        Reject(NotYetValid),
    ),
    server(
        "wrong-host",
        "SAN names another host (wrong-host.sparring.test) and only the IPs",
        "refuse: name mismatch (mbedTLS flags 0x04)",
        Reject(NameMismatch),
    ),
    Profile {
        connect_by: ConnectBy::Ip,
        ..server(
            "wrong-ip",
            "SAN holds the host names and another IP address (192.0.2.1)",
            "refuse when connecting by IP: name mismatch (mbedTLS flags 0x04)",
            Reject(NameMismatch),
        )
    },
    server(
        "cn-only",
        "host only in the subject CN, no subjectAltName",
        "refuse: name mismatch per RFC 6125 (rustls, browsers); mbedTLS (ESP-IDF) and OpenSSL fall back to the CN and accept: a device connecting is a warning, not a failure",
        Reject(NameMismatch),
    ),
    server(
        "self-signed",
        "self-signed leaf, no CA behind it",
        "refuse: not signed by a trusted CA (mbedTLS flags 0x08)",
        Reject(UnknownIssuer),
    ),
    server(
        "untrusted-root",
        "chain to a second, unrelated root the device does not trust",
        "refuse: not signed by a trusted CA (mbedTLS flags 0x08)",
        Reject(UnknownIssuer),
    ),
    server(
        "missing-intermediate",
        "leaf served without its intermediate",
        "refuse: unknown issuer (the device only has the root)",
        Reject(UnknownIssuer),
    ),
    server(
        "reversed-chain",
        "intermediate served before the leaf",
        "refuse: the first certificate is a CA, not the server",
        Reject(CaUsedAsEndEntity),
    ),
    server(
        "intermediate-expired",
        "leaf is fine but its intermediate expired (field report 01)",
        "refuse: a certificate in the chain expired",
        Reject(Expired),
    ),
    server(
        "revoked",
        "server certificate listed in the intermediate's CRL",
        "refuse if the device checks CRLs; most ESP firmware does not",
        Reject(Revoked),
    ),
    server(
        "not-a-ca",
        "leaf signed by a certificate without the CA basic constraint",
        "refuse: issuer is not a CA",
        Reject(IssuerNotCa),
    ),
    server(
        "wrong-eku",
        "extended key usage is clientAuth only",
        "refuse: certificate not valid for server authentication",
        Reject(WrongPurpose),
    ),
    server(
        "large-chain",
        "over 16 KiB of certificates (padding extension in the leaf)",
        "a verifier accepts it; mbedTLS with its default 16 KiB input buffer cannot take the Certificate message and fails cleanly (-0x7080, no alert); never crash",
        Accept,
    ),
    server(
        "rsa-4096",
        "RSA-4096 server key",
        "accept (slow handshake, more heap)",
        Accept,
    ),
    server(
        "sha1-signature",
        "server certificate signed with SHA-1 (sha1WithRSAEncryption) by an RSA intermediate of the lab root; names, validity and extensions as `valid`",
        "refuse: signed with an unacceptable hash (mbedTLS flags 0x4000, alert certificate_unknown; OpenSSL: digest too weak)",
        Reject(WeakSignature),
    ),
    server(
        "rsa-1024",
        "RSA-1024 server key in a certificate signed properly (SHA-256) by the lab intermediate",
        "refuse: key too short (mbedTLS flags 0x10000, alert unsupported_certificate; OpenSSL: key too weak); rustls refuses only when the key signs the handshake",
        Reject(WeakKey),
    ),
    device(
        "device-valid",
        "none: client certificate with CN = device id",
        "broker accepts the connection",
        Accept,
    ),
    device(
        "device-expired",
        "client certificate expired yesterday",
        "broker refuses: client certificate expired",
        Reject(Expired),
    ),
    device(
        "device-untrusted",
        "client certificate signed by an unrelated root",
        "broker refuses: unknown issuer",
        Reject(UnknownIssuer),
    ),
    device(
        "device-revoked",
        "client certificate listed in the intermediate's CRL",
        "broker refuses: client certificate revoked",
        Reject(Revoked),
    ),
    device(
        "device-wrong-cn",
        "client certificate CN differs from the device id",
        "chain is valid; a broker with a client-id = CN policy refuses the CONNECT",
        Accept,
    ),
    device(
        "device-key-mismatch",
        "certificate and private key do not belong together",
        "handshake fails: the device's signature does not match its certificate",
        Reject(KeyMismatch),
    ),
];

/// Looks a profile up by name.
pub fn profile(name: &str) -> Option<&'static Profile> {
    PROFILES.iter().find(|p| p.name == name)
}

/// All profile names, comma separated (for error messages).
pub fn profile_names() -> String {
    PROFILES
        .iter()
        .map(|p| p.name)
        .collect::<Vec<_>>()
        .join(", ")
}

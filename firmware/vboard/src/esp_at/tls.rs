//! TLS as the module's esp-tls/mbedTLS does it, built on rustls: credentials read from the
//! board's own PKI partitions at connect time, certificates checked against the *board* clock
//! and hosts table, defect switches bending verification, and every failure translated into
//! the mbedTLS error code and X.509 verify flags a real board prints ([`mbedtls_failure`]).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{
    AlertDescription, CertificateError, CipherSuite, ClientConfig, ClientConnection,
    DigitallySignedStruct, PeerIncompatible, SignatureScheme, SupportedCipherSuite,
    Tls12CipherSuite,
};

use super::{cert_profile, costs};
use crate::personality::{Defect, Shared};

/// What the module presents and trusts, parsed from its PKI partitions.
#[derive(Debug)]
pub struct Credentials {
    pub ca: Vec<CertificateDer<'static>>,
    pub client: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
}

/// Why credentials could not be used; each maps to what ESP-AT prints.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// Partition erased or not an AtPKI bin: the AT port says `NO CA FOUND` etc.
    #[error("{at_line}")]
    Missing { at_line: &'static str },
    /// The item is there but mbedTLS cannot parse it (`... returned -0x....`).
    #[error("{what} returned -0x{code:04X}")]
    Unparsable { what: &'static str, code: u16 },
}

/// mbedTLS codes for provisioning errors (esp-facts §5.5).
const PEM_NO_HEADER_FOOTER_PRESENT: u16 = 0x1080;
const PK_KEY_INVALID_FORMAT: u16 = 0x3D00;

/// The raw CA, certificate and key items as stored on the board (`None`: not there).
#[derive(Debug, Clone, Default)]
pub struct PkiItems {
    pub ca: Option<Vec<u8>>,
    pub cert: Option<Vec<u8>>,
    pub key: Option<Vec<u8>>,
}

fn is_pem(bytes: &[u8]) -> bool {
    bytes.trim_ascii_start().starts_with(b"-----BEGIN")
}

/// Parses the CA (when the server is verified) and the certificate and key (when one is
/// presented). The virtual ESP-AT build hands items to mbedTLS as NUL-terminated PEM strings
/// (esp-tls's `*_pem_buf`), so a DER item fails with `-0x1080` — the "DER given where PEM was
/// expected" mistake from the field.
pub fn credentials(
    items: PkiItems,
    verify_server: bool,
    present_cert: bool,
) -> Result<Credentials, CredentialError> {
    let mut ca = Vec::new();
    if verify_server {
        let pem = items.ca.ok_or(CredentialError::Missing {
            at_line: "NO CA FOUND",
        })?;
        ca = certificates(&pem, "mbedtls_x509_crt_parse of CA cert")?;
    }
    let client = if present_cert {
        let cert = items.cert.ok_or(CredentialError::Missing {
            at_line: "NO CERT FOUND",
        })?;
        let key = items.key.ok_or(CredentialError::Missing {
            at_line: "NO PRVT_KEY FOUND",
        })?;
        let chain = certificates(&cert, "mbedtls_x509_crt_parse of public cert")?;
        let unparsable = CredentialError::Unparsable {
            what: "mbedtls_pk_parse_keyfile",
            code: PK_KEY_INVALID_FORMAT,
        };
        if !is_pem(&key) {
            return Err(unparsable);
        }
        let key = PrivateKeyDer::from_pem_slice(&key).map_err(|_| unparsable)?;
        Some((chain, key))
    } else {
        None
    };
    Ok(Credentials { ca, client })
}

fn certificates(
    pem: &[u8],
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, CredentialError> {
    let unparsable = CredentialError::Unparsable {
        what,
        code: PEM_NO_HEADER_FOOTER_PRESENT,
    };
    if !is_pem(pem) {
        return Err(unparsable);
    }
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|_| unparsable.clone())?;
    if certs.is_empty() {
        return Err(unparsable);
    }
    Ok(certs)
}

/// The board clock as rustls's time source: certificates are valid or not by *board* time,
/// so a board without SNTP (1970) finds every certificate "not yet valid", as on hardware.
#[derive(Debug)]
struct BoardClock(Arc<Shared>);

impl rustls::time_provider::TimeProvider for BoardClock {
    fn current_time(&self) -> Option<UnixTime> {
        Some(UnixTime::since_unix_epoch(
            self.0
                .clock()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default(),
        ))
    }
}

/// Server verification as the firmware does it: nothing (schemes without a CA), or webpki
/// against the provisioned CA, bent by the defect switches a buggy firmware would have.
#[derive(Debug)]
struct BoardVerifier {
    webpki: Option<Arc<WebPkiServerVerifier>>,
    /// The provisioned CA certificates: where mbedTLS's chain walk stops.
    trusted: Vec<CertificateDer<'static>>,
    defects: Vec<Defect>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl BoardVerifier {
    fn has(&self, defect: Defect) -> bool {
        self.defects.contains(&defect)
    }
}

impl ServerCertVerifier for BoardVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // A buffer limit, not a verification step: it holds with or without a CA.
        let message_len = certificate_message_len(end_entity, intermediates);
        if message_len > costs::TLS_IN_CONTENT_LEN as usize {
            return Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                rustls::OtherError(Arc::new(CertificateMessageTooLarge { len: message_len })),
            )));
        }
        let Some(webpki) = &self.webpki else {
            return Ok(ServerCertVerified::assertion());
        };
        if self.has(Defect::SkipServerVerify) {
            return Ok(ServerCertVerified::assertion());
        }
        let verdict =
            match webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName
                    | CertificateError::NotValidForNameContext { .. },
                )) if self.has(Defect::SkipCnCheck) || cn_names(end_entity, server_name) => {
                    Ok(ServerCertVerified::assertion())
                }
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::Expired
                    | CertificateError::ExpiredContext { .. }
                    | CertificateError::NotValidYet
                    | CertificateError::NotValidYetContext { .. },
                )) if self.has(Defect::IgnoreExpiry) => Ok(ServerCertVerified::assertion()),
                Err(rustls::Error::InvalidCertificate(e)) => {
                    Err(rustls::Error::InvalidCertificate(as_mbedtls_alerts(e)))
                }
                other => other,
            };
        match cert_profile::flags(end_entity, intermediates, &self.trusted) {
            0 => verdict,
            _ if self.has(Defect::AcceptWeakCrypto) => verdict,
            weak => Err(with_profile_flags(verdict, weak)),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// mbedTLS's name check where webpki's (RFC 6125) refused: a certificate without a
/// subjectAltName extension matches by its subject CN (Mbed-TLS `library/x509_crt.c`,
/// `x509_crt_verify_name` / `x509_crt_check_cn`: exact, case-insensitive, or a `*.` wildcard
/// covering one label). webpki has already checked the chain when it gets to the name.
fn cn_names(end_entity: &CertificateDer<'_>, server_name: &ServerName<'_>) -> bool {
    let ServerName::DnsName(name) = server_name else {
        return false;
    };
    let name = name.as_ref();
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(end_entity) else {
        return false;
    };
    if !matches!(cert.subject_alternative_name(), Ok(None)) {
        return false;
    }
    cert.subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok())
        .any(|cn| {
            cn.eq_ignore_ascii_case(name)
                || cn.strip_prefix("*.").is_some_and(|parent| {
                    name.split_once('.')
                        .is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(parent))
                })
        })
}

/// mbedTLS's X.509 "validity starts in the future" (`MBEDTLS_X509_BADCERT_FUTURE`), kept apart
/// from "expired" because mbedTLS answers the two with different alerts.
#[derive(Debug, thiserror::Error)]
#[error("the certificate validity starts in the future")]
struct ValidityStartsInFuture;

/// The server's Certificate handshake message does not fit mbedTLS's input buffer. mbedTLS
/// before 3.6.3 (every ESP-AT release) does not reassemble a handshake message spread over
/// several records ("TLS handshake fragmentation not supported", Mbed-TLS/mbedtls#1840) and
/// fails with `MBEDTLS_ERR_SSL_FEATURE_UNAVAILABLE` (-0x7080) without sending an alert; later
/// versions reassemble only up to `CONFIG_MBEDTLS_SSL_IN_CONTENT_LEN`.
#[derive(Debug, thiserror::Error)]
#[error("the server's Certificate message ({len} bytes) exceeds mbedTLS's input buffer")]
struct CertificateMessageTooLarge {
    len: usize,
}

/// Size of a TLS 1.2 Certificate handshake message carrying these certificates: the 4-byte
/// handshake header, the 3-byte list length and a 3-byte length before each certificate.
fn certificate_message_len(
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
) -> usize {
    4 + 3
        + std::iter::once(end_entity)
            .chain(intermediates)
            .map(|c| 3 + c.len())
            .sum::<usize>()
}

/// Every X.509 verify flag mbedTLS raised on a chain, where they are more than one rustls
/// error variant can say: a chain the certificate profile refuses ([`cert_profile`]).
#[derive(Debug, thiserror::Error)]
#[error("X.509 verify flags 0x{0:x}")]
struct VerifyFlags(u32);

/// A chain the certificate profile refuses, with the flag of webpki's own refusal added (mbedTLS
/// reports all flags of a chain at once). webpki's "unsupported signature algorithm" adds
/// nothing: it is the SHA-1 signature that BAD_MD already reports, and mbedTLS, which has
/// SHA-1, finds that signature good.
fn with_profile_flags(
    verdict: Result<ServerCertVerified, rustls::Error>,
    profile_flags: u32,
) -> rustls::Error {
    let flags = match verdict {
        Ok(_) => profile_flags,
        #[allow(deprecated)]
        Err(rustls::Error::InvalidCertificate(
            CertificateError::UnsupportedSignatureAlgorithm
            | CertificateError::UnsupportedSignatureAlgorithmContext { .. },
        )) => profile_flags,
        Err(rustls::Error::InvalidCertificate(e)) => profile_flags | verify_flags(&e),
        Err(other) => return other,
    };
    rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(
        VerifyFlags(flags),
    ))))
}

/// The alert mbedTLS sends when verification fails with these flags (Mbed-TLS v3.6.4
/// `library/ssl_tls.c`, `mbedtls_ssl_parse_certificate`: the first flag of this list decides).
fn mbedtls_alert(flags: u32) -> AlertDescription {
    const BY_FLAG: &[(u32, AlertDescription)] = &[
        (0x100, AlertDescription::AccessDenied),  // BADCERT_OTHER
        (0x04, AlertDescription::BadCertificate), // BADCERT_CN_MISMATCH
        (0x800, AlertDescription::UnsupportedCertificate), // BADCERT_KEY_USAGE
        (0x1000, AlertDescription::UnsupportedCertificate), // BADCERT_EXT_KEY_USAGE
        (0x2000, AlertDescription::UnsupportedCertificate), // BADCERT_NS_CERT_TYPE
        (0x8000, AlertDescription::UnsupportedCertificate), // BADCERT_BAD_PK
        (0x1_0000, AlertDescription::UnsupportedCertificate), // BADCERT_BAD_KEY
        (0x01, AlertDescription::CertificateExpired), // BADCERT_EXPIRED
        (0x02, AlertDescription::CertificateRevoked), // BADCERT_REVOKED
        (0x08, AlertDescription::UnknownCA),      // BADCERT_NOT_TRUSTED
    ];
    BY_FLAG
        .iter()
        .find(|(flag, _)| flags & flag != 0)
        .map_or(AlertDescription::CertificateUnknown, |(_, alert)| *alert)
}

/// The alert to send by hand instead of rustls's, for failures whose rustls error variant
/// cannot make rustls pick mbedTLS's alert (it picks by variant; [`VerifyFlags`] is one).
fn alert_by_flags(error: &rustls::Error) -> Option<AlertDescription> {
    match error {
        rustls::Error::InvalidCertificate(CertificateError::Other(other)) => other
            .0
            .downcast_ref::<VerifyFlags>()
            .map(|VerifyFlags(flags)| mbedtls_alert(*flags)),
        _ => None,
    }
}

/// A fatal alert as a TLS 1.2 plaintext record: the board only verifies the server's
/// Certificate message, before any ChangeCipherSpec, so the record is not encrypted.
fn alert_record(alert: AlertDescription) -> [u8; 7] {
    const ALERT: u8 = 21;
    const FATAL: u8 = 2;
    [ALERT, 3, 3, 0, 2, FATAL, u8::from(alert)]
}

/// Whether mbedTLS gives up on this failure without telling the peer.
fn fails_silently(error: &rustls::Error) -> bool {
    matches!(error, rustls::Error::InvalidCertificate(CertificateError::Other(other))
        if other.0.is::<CertificateMessageTooLarge>())
}

/// Whether webpki's error is one it reports as an opaque `Other` (`CaUsedAsEndEntity`, ...).
fn webpki_other(error: &CertificateError, name: &str) -> bool {
    matches!(error, CertificateError::Other(other) if format!("{other:?}").contains(name))
}

/// Rewrites a verification failure so that rustls sends the alert mbedTLS sends for it.
/// mbedTLS picks the alert from the verify flags ([`mbedtls_alert`]): CN mismatch →
/// bad_certificate, (extended) key usage → unsupported_certificate, expired →
/// certificate_expired, revoked → certificate_revoked, not trusted (unknown issuer *or* bad
/// signature) → unknown_ca, anything else — "not yet valid" among them — certificate_unknown.
/// rustls's own choice differs for the last two (certificate_expired for "not yet valid",
/// decrypt_error for a bad signature), and a gate watching a real board would see mbedTLS's.
/// Flags no rustls variant carries (the certificate profile's) go as [`VerifyFlags`], whose
/// alert is written by hand ([`alert_by_flags`]).
///
/// Two webpki refusals mbedTLS reaches differently (Mbed-TLS `library/x509_crt.c`): an issuer
/// without the CA basic constraint is no parent at all (`x509_crt_check_parent` wants
/// `ca_istrue`), so the chain is untrusted (0x08, unknown_ca); and mbedTLS never checks the
/// peer certificate's own basicConstraints, so an intermediate served first is judged as the
/// server's certificate and fails the name check (0x04, bad_certificate).
fn as_mbedtls_alerts(error: CertificateError) -> CertificateError {
    if webpki_other(&error, "EndEntityUsedAsCa") {
        return CertificateError::UnknownIssuer;
    }
    if webpki_other(&error, "CaUsedAsEndEntity") {
        return CertificateError::NotValidForName;
    }
    match error {
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            CertificateError::Other(rustls::OtherError(Arc::new(ValidityStartsInFuture)))
        }
        CertificateError::BadSignature => CertificateError::UnknownIssuer,
        other => other,
    }
}

/// mbedTLS also offers the ECDHE CBC-SHA suites (Mbed-TLS `library/ssl_ciphersuites.c`,
/// `ciphersuite_preference`; ESP-IDF's `components/mbedtls/Kconfig` has no switch for CBC), the
/// suites a TLS 1.0/1.1 server can choose. rustls implements no CBC: they are offered so the
/// ClientHello is mbedTLS's, and one a server picks fails the handshake at the key exchange
/// ([`CbcNotModelled`]). sparring's TLS 1.2 gate never picks them (rustls serves none), and its
/// TLS 1.0/1.1 listener ends after the ServerHello, which the board refuses for its version.
static CBC_SHA_SUITES: LazyLock<Vec<Tls12CipherSuite>> = LazyLock::new(|| {
    use rustls::crypto::aws_lc_rs::cipher_suite as gcm;
    let template = |suite| match suite {
        SupportedCipherSuite::Tls12(template) => Some(template),
        SupportedCipherSuite::Tls13(_) => None,
    };
    [
        (
            gcm::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA,
        ),
        (
            gcm::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA,
        ),
        (
            gcm::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA,
        ),
        (
            gcm::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA,
        ),
    ]
    .into_iter()
    .filter_map(|(like, suite)| {
        let like = template(like)?;
        Some(Tls12CipherSuite {
            common: rustls::crypto::CipherSuiteCommon {
                suite,
                ..like.common
            },
            prf_provider: &CbcNotModelled,
            ..*like
        })
    })
    .collect()
});

/// The key exchange of a CBC suite: refused, as rustls has no CBC record protection.
#[derive(Debug, thiserror::Error)]
#[error("CBC cipher suites are offered but not modelled")]
struct CbcNotModelled;

impl rustls::crypto::tls12::Prf for CbcNotModelled {
    fn for_key_exchange(
        &self,
        _output: &mut [u8; 48],
        _kx: Box<dyn rustls::crypto::ActiveKeyExchange>,
        _peer_pub_key: &[u8],
        _label: &[u8],
        _seed: &[u8],
    ) -> Result<(), rustls::Error> {
        Err(rustls::Error::General(CbcNotModelled.to_string()))
    }

    fn for_secret(&self, output: &mut [u8], secret: &[u8], label: &[u8], seed: &[u8]) {
        // Reached only after a key exchange, which `for_key_exchange` refuses; computed as
        // TLS 1.2's SHA-256 PRF all the same.
        use rustls::crypto::aws_lc_rs::cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 as SHA256_SUITE;
        if let SupportedCipherSuite::Tls12(sha256) = SHA256_SUITE {
            sha256.prf_provider.for_secret(output, secret, label, seed);
        }
    }
}

/// A client configuration for one connection attempt.
pub fn client_config(
    shared: &Arc<Shared>,
    credentials: &Credentials,
    verify_server: bool,
    alpn: &[String],
) -> Result<ClientConfig, rustls::Error> {
    // Only TLS 1.2 suites in the ClientHello, as mbedTLS without TLS 1.3 offers (see below),
    // and no ChaCha20-Poly1305: ESP-IDF builds mbedTLS without it (`components/mbedtls/Kconfig`,
    // MBEDTLS_CHACHA20_C and MBEDTLS_CHACHAPOLY_C default n).
    let mut suites = rustls::crypto::aws_lc_rs::default_provider();
    suites.cipher_suites.retain(|s| {
        s.version() == &rustls::version::TLS12
            && !matches!(
                s.suite(),
                CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
                    | CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
            )
    });
    suites
        .cipher_suites
        .extend(CBC_SHA_SUITES.iter().map(SupportedCipherSuite::Tls12));
    let provider = Arc::new(suites);
    let suites_provider = provider.clone();
    let webpki = if verify_server {
        let mut roots = rustls::RootCertStore::empty();
        for ca in &credentials.ca {
            roots.add(ca.clone())?;
        }
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        Some(verifier)
    } else {
        None
    };
    let verifier = BoardVerifier {
        webpki,
        trusted: credentials.ca.clone(),
        defects: shared.defects(),
        provider: provider.clone(),
    };
    // TLS 1.2 only: ESP-IDF's mbedTLS ships with TLS 1.3 off (CONFIG_MBEDTLS_SSL_PROTO_TLS1_3
    // defaults to n), and it decides when a refused client certificate is noticed (during the
    // handshake in 1.2, only at the first read in 1.3).
    let builder =
        ClientConfig::builder_with_details(provider, Arc::new(BoardClock(shared.clone())))
            .with_protocol_versions(&[&rustls::version::TLS12])?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier));
    let mut config = match &credentials.client {
        Some((chain, key)) => {
            // No certificate/key pairing check: esp-tls hands both to mbedtls_ssl_conf_own_cert,
            // which does not call mbedtls_pk_check_pair (Mbed-TLS `library/ssl_tls.c`), so a
            // mismatched key shows only when the broker rejects the CertificateVerify.
            let signing = suites_provider
                .key_provider
                .load_private_key(key.clone_key())?;
            let own = CertifiedKey::new(chain.clone(), signing);
            builder.with_client_cert_resolver(Arc::new(OwnCertificate(Arc::new(own))))
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Ok(config)
}

/// The module's one client certificate, offered whatever the server asks for.
#[derive(Debug)]
struct OwnCertificate(Arc<CertifiedKey>);

impl ResolvesClientCert for OwnCertificate {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// How a connection attempt failed, before translation into mbedTLS terms.
#[derive(Debug)]
pub enum HandshakeError {
    Tls(rustls::Error),
    Io(std::io::ErrorKind),
    /// `mbedtls_ssl_setup` could not allocate its buffers.
    OutOfHeap,
}

/// An mbedTLS failure as the board prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MbedFailure {
    /// Printed as `-0x%04X`.
    pub code: u16,
    /// X.509 verify flags (0 unless the failure is a verification failure).
    pub flags: u32,
}

/// X.509 verify-flag texts (`mbedtls_x509_crt_verify_info`, esp-facts §5.6).
const VERIFY_FLAG_TEXT: &[(u32, &str)] = &[
    (0x01, "The certificate validity has expired"),
    (0x02, "The certificate has been revoked (is on a CRL)"),
    (
        0x04,
        "The certificate Common Name (CN) does not match with the expected CN",
    ),
    (
        0x08,
        "The certificate is not correctly signed by the trusted CA",
    ),
    (0x100, "Other reason (can be used by verify callback)"),
    (0x200, "The certificate validity starts in the future"),
    (
        0x1000,
        "Usage does not match the extendedKeyUsage extension",
    ),
    (
        cert_profile::BADCERT_BAD_MD,
        "The certificate is signed with an unacceptable hash.",
    ),
    (
        cert_profile::BADCERT_BAD_KEY,
        "The certificate is signed with an unacceptable key (eg bad curve, RSA too short).",
    ),
];

const X509_CERT_VERIFY_FAILED: u16 = 0x2700;

/// The one table from what rustls saw to what mbedTLS would have said (esp-facts §5.5, §5.6).
pub fn mbedtls_failure(error: &HandshakeError) -> MbedFailure {
    let verify = |flags| MbedFailure {
        code: X509_CERT_VERIFY_FAILED,
        flags,
    };
    let code = |code| MbedFailure { code, flags: 0 };
    match error {
        HandshakeError::OutOfHeap => code(0x7F00), // SSL_ALLOC_FAILED
        HandshakeError::Tls(e) if fails_silently(e) => code(0x7080), // SSL_FEATURE_UNAVAILABLE
        HandshakeError::Tls(rustls::Error::InvalidCertificate(e)) => verify(verify_flags(e)),
        HandshakeError::Tls(rustls::Error::AlertReceived(_)) => code(0x7780), // FATAL_ALERT_MESSAGE
        HandshakeError::Tls(rustls::Error::InvalidMessage(_)) => code(0x7200), // INVALID_RECORD
        // A ServerHello choosing TLS 1.0/1.1: Mbed-TLS 3.x `library/ssl_tls12_client.c`,
        // `ssl_parse_server_hello`, "server version out of bounds", sends protocol_version (as
        // rustls does) and returns MBEDTLS_ERR_SSL_BAD_PROTOCOL_VERSION (`include/mbedtls/ssl.h`).
        // With CONFIG_MBEDTLS_SSL_PROTO_TLS1_3 (ESP-IDF default n) the same function decides:
        // `ssl_tls13_client.c` hands a ServerHello without supported_versions to the TLS 1.2 code.
        HandshakeError::Tls(rustls::Error::PeerIncompatible(
            PeerIncompatible::ServerDoesNotSupportTls12Or13,
        )) => code(0x6E80), // BAD_PROTOCOL_VERSION
        HandshakeError::Tls(rustls::Error::PeerIncompatible(_)) => code(0x6E00), // HANDSHAKE_FAILURE
        HandshakeError::Tls(rustls::Error::NoCertificatesPresented) => code(0x7A00), // BAD_CERTIFICATE
        HandshakeError::Tls(_) => code(0x6C00), // INTERNAL_ERROR
        HandshakeError::Io(std::io::ErrorKind::ConnectionReset) => code(0x0050), // NET_CONN_RESET
        HandshakeError::Io(std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock) => {
            code(0x6800) // SSL_TIMEOUT
        }
        HandshakeError::Io(_) => code(0x7280), // SSL_CONN_EOF
    }
}

/// The X.509 verify flags of a verification failure (esp-facts §5.6).
fn verify_flags(error: &CertificateError) -> u32 {
    match error {
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => 0x01,
        CertificateError::Revoked => 0x02,
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => 0x04,
        CertificateError::UnknownIssuer => 0x08,
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => 0x1000,
        CertificateError::Other(other) if other.0.is::<ValidityStartsInFuture>() => 0x200,
        CertificateError::Other(other) => match other.0.downcast_ref::<VerifyFlags>() {
            Some(VerifyFlags(flags)) => *flags,
            None => 0x100,
        },
        _ => 0x100,
    }
}

impl MbedFailure {
    /// The ESP-IDF log lines (tag, level letter, message) for a failed handshake, in order.
    pub fn log_lines(&self) -> Vec<(char, &'static str, String)> {
        let mut lines = vec![(
            'E',
            "esp-tls-mbedtls",
            format!("mbedtls_ssl_handshake returned -0x{:04X}", self.code),
        )];
        if self.code == X509_CERT_VERIFY_FAILED {
            lines.push((
                'I',
                "esp-tls-mbedtls",
                "Failed to verify peer certificate!".into(),
            ));
            // The virtual ESP-AT build logs esp-tls at DEBUG, so the reason is visible (real
            // builds print it only when configured so; IDF 4.2/4.3 printed it at INFO).
            for (flag, text) in VERIFY_FLAG_TEXT {
                if self.flags & flag != 0 {
                    lines.push((
                        'D',
                        "esp-tls-mbedtls",
                        format!("verification info:   ! {text}"),
                    ));
                }
            }
        }
        lines.push(('E', "esp-tls", "Failed to open new connection".into()));
        lines
    }
}

/// A TCP stream, plain or inside TLS, as the MQTT and HTTP clients use it.
pub enum Transport {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<ClientConnection, TcpStream>>),
}

impl Transport {
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Transport::Plain(s) => s,
            Transport::Tls(s) => &s.sock,
        }
    }

    /// Closes as esp-tls does: `close_notify` first on TLS.
    pub fn close(&mut self) {
        if let Transport::Tls(s) = self {
            s.conn.send_close_notify();
            let _ = s.flush();
        }
        let _ = self.tcp().shutdown(std::net::Shutdown::Both);
    }
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Transport::Plain(s) => s.read(buf),
            Transport::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Transport::Plain(s) => s.write(buf),
            Transport::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Transport::Plain(s) => s.flush(),
            Transport::Tls(s) => s.flush(),
        }
    }
}

/// A connection attempt failed; the lines the firmware prints are already logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("connection failed")]
pub struct ConnectFailed;

/// What one TLS client connection needs besides its socket.
pub struct ClientSetup<'a> {
    pub credentials: &'a Credentials,
    pub verify_server: bool,
    pub alpn: &'a [String],
    /// Sent as SNI and checked against the certificate.
    pub name: &'a str,
}

/// esp-tls's connect as every client of the module does it (MQTT, SSL sockets, OTA): the
/// configuration, the handshake's heap peak, the handshake, and on failure the lines a real
/// board logs, through `log(level letter, tag, message)`.
pub fn connect(
    shared: &Arc<Shared>,
    tcp: TcpStream,
    setup: &ClientSetup<'_>,
    timeout: Duration,
    log: &dyn Fn(char, &str, &str),
) -> Result<Transport, ConnectFailed> {
    let fail = |error: HandshakeError| {
        for (level, tag, message) in mbedtls_failure(&error).log_lines() {
            log(level, tag, &message);
        }
        ConnectFailed
    };
    let Ok(server_name) = ServerName::try_from(setup.name.to_owned()) else {
        return Err(fail(HandshakeError::Tls(rustls::Error::General(
            "bad host name".into(),
        ))));
    };
    let config = match client_config(shared, setup.credentials, setup.verify_server, setup.alpn) {
        Ok(config) => config,
        Err(e) => {
            log(
                'E',
                "esp-tls-mbedtls",
                &format!("mbedtls_ssl_conf_own_cert returned -0x3F00 ({e})"),
            );
            return Err(ConnectFailed);
        }
    };
    if shared.alloc(costs::TLS_HANDSHAKE_PEAK).is_err() {
        log(
            'E',
            "at",
            &format!(
                "alloc failed, size:{}, caps:0x{:x}",
                costs::TLS_HANDSHAKE_PEAK,
                costs::DEFAULT_CAPS
            ),
        );
        return Err(fail(HandshakeError::OutOfHeap));
    }
    let result = handshake(tcp, config, server_name, timeout);
    shared.free(costs::TLS_HANDSHAKE_PEAK);
    result.map_err(fail)
}

/// Runs the TLS handshake to completion (bounded by `timeout`).
fn handshake(
    mut tcp: TcpStream,
    config: ClientConfig,
    name: ServerName<'static>,
    timeout: Duration,
) -> Result<Transport, HandshakeError> {
    let mut conn = ClientConnection::new(Arc::new(config), name).map_err(HandshakeError::Tls)?;
    let deadline = Instant::now() + timeout;
    let _ = tcp.set_read_timeout(Some(Duration::from_millis(200)));
    // By hand rather than with `complete_io`, which sends rustls's alert on every failure:
    // mbedTLS sends one only where it chooses to (see `fails_silently`).
    let waiting = |e: &std::io::Error| {
        matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        )
    };
    while conn.is_handshaking() {
        if Instant::now() > deadline {
            return Err(HandshakeError::Io(std::io::ErrorKind::TimedOut));
        }
        while conn.wants_write() {
            conn.write_tls(&mut tcp)
                .map_err(|e| HandshakeError::Io(e.kind()))?;
        }
        match conn.read_tls(&mut tcp) {
            Ok(0) => return Err(HandshakeError::Io(std::io::ErrorKind::UnexpectedEof)),
            Ok(_) => {}
            Err(e) if waiting(&e) => continue,
            Err(e) => return Err(HandshakeError::Io(e.kind())),
        }
        if let Err(tls) = conn.process_new_packets() {
            // Our alert (certificate_expired, unknown_ca, ...) goes out before giving up.
            if let Some(alert) = alert_by_flags(&tls) {
                let _ = tcp.write_all(&alert_record(alert));
            } else if !fails_silently(&tls) {
                let _ = conn.write_tls(&mut tcp);
            }
            return Err(HandshakeError::Tls(tls));
        }
    }
    // The client's last flight (Finished) may still be queued.
    while conn.wants_write() {
        conn.write_tls(&mut tcp)
            .map_err(|e| HandshakeError::Io(e.kind()))?;
    }
    Ok(Transport::Tls(Box::new(rustls::StreamOwned::new(
        conn, tcp,
    ))))
}

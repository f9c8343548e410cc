//! mbedTLS's default X.509 certificate profile, which esp-tls leaves in force: its client
//! configuration calls `mbedtls_ssl_config_defaults(..., MBEDTLS_SSL_PRESET_DEFAULT)`, which
//! sets `mbedtls_x509_crt_profile_default`, and never `mbedtls_ssl_conf_cert_profile`
//! (ESP-IDF `components/esp-tls/esp_tls_mbedtls.c`, `set_client_config`; Mbed-TLS v3.6.4
//! `library/ssl_tls.c`, `mbedtls_ssl_config_defaults`). The profile (`library/x509_crt.c`)
//! allows signatures with SHA-256, SHA-384 and SHA-512 only, any public-key algorithm, RSA keys
//! of at least 2048 bits and the curves P-256, P-384, P-521 and the three brainpool curves.
//!
//! webpki has no such profile: it cannot check a SHA-1 signature at all (an "unsupported
//! algorithm", not a verdict) and looks at the server key's size only when the key signs the
//! handshake, after mbedTLS would already have refused the Certificate message.

use rustls::pki_types::CertificateDer;
use x509_parser::public_key::PublicKey;

/// `MBEDTLS_X509_BADCERT_BAD_MD`: the certificate is signed with an unacceptable hash.
pub const BADCERT_BAD_MD: u32 = 0x4000;
/// `MBEDTLS_X509_BADCERT_BAD_KEY`: the certificate is signed with an unacceptable key.
pub const BADCERT_BAD_KEY: u32 = 0x1_0000;

/// Signature algorithms whose hash is in the default profile's `allowed_mds`:
/// sha{256,384,512}WithRSAEncryption, ecdsa-with-SHA{256,384,512}, and RSASSA-PSS (whose hash
/// sits in its parameters; the lab never makes PSS certificates, so they are not looked into).
const ALLOWED_SIGNATURES: &[&str] = &[
    "1.2.840.113549.1.1.11",
    "1.2.840.113549.1.1.12",
    "1.2.840.113549.1.1.13",
    "1.2.840.10045.4.3.2",
    "1.2.840.10045.4.3.3",
    "1.2.840.10045.4.3.4",
    "1.2.840.113549.1.1.10",
];

/// The default profile's `allowed_curves`: secp256r1, secp384r1, secp521r1, brainpoolP256r1,
/// brainpoolP384r1, brainpoolP512r1.
const ALLOWED_CURVES: &[&str] = &[
    "1.2.840.10045.3.1.7",
    "1.3.132.0.34",
    "1.3.132.0.35",
    "1.3.36.3.3.2.8.1.1.7",
    "1.3.36.3.3.2.8.1.1.11",
    "1.3.36.3.3.2.8.1.1.13",
];

/// The default profile's `rsa_min_bitlen`.
const RSA_MIN_BITS: usize = 2048;

/// The profile flags mbedTLS raises on a presented chain (`mbedtls_x509_crt_verify_with_profile`
/// and `x509_crt_verify_chain`): BAD_KEY for the server's own key and for the key of every
/// certificate that signs one of the chain, BAD_MD for the signature of every certificate
/// that is not itself a trust anchor (the walk stops at a trusted root without checking its
/// self-signature). Presented certificates are taken as the path, in order; the trust
/// anchor's own key is not judged (the lab's roots are P-256 or RSA of 2048 bits and more).
/// A certificate that does not parse adds nothing: webpki refuses it on its own.
pub fn flags(
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    trusted: &[CertificateDer<'_>],
) -> u32 {
    let mut flags = 0;
    for (depth, der) in std::iter::once(end_entity).chain(intermediates).enumerate() {
        if depth > 0 && trusted.iter().any(|t| t.as_ref() == der.as_ref()) {
            break;
        }
        let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
            continue;
        };
        let signature = cert.signature_algorithm.algorithm.to_id_string();
        if !ALLOWED_SIGNATURES.contains(&signature.as_str()) {
            flags |= BADCERT_BAD_MD;
        }
        if !acceptable_key(&cert) {
            flags |= BADCERT_BAD_KEY;
        }
    }
    flags
}

/// `x509_profile_check_key`: RSA long enough, EC on an allowed curve, other kinds unjudged.
fn acceptable_key(cert: &x509_parser::certificate::X509Certificate<'_>) -> bool {
    let spki = cert.public_key();
    match spki.parsed() {
        Ok(PublicKey::RSA(rsa)) => rsa.key_size() >= RSA_MIN_BITS,
        Ok(PublicKey::EC(_)) => spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .is_some_and(|curve| ALLOWED_CURVES.contains(&curve.to_id_string().as_str())),
        _ => true,
    }
}

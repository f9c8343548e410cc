//! The two certificates rcgen cannot make, for the weak-crypto profiles, built with RustCrypto
//! crates instead:
//!
//! - `sha1-signature`: rcgen writes only the signature algorithms of its own fixed list
//!   (`rcgen::SignatureAlgorithm` has no constructor), and SHA-1 is not on it. The leaf is
//!   made by rcgen as usual and then signed again, with sha1WithRSAEncryption, by
//!   x509-cert's `CertificateBuilder` and the `rsa` crate: [`sha1_twin`] copies every field
//!   of rcgen's certificate (names, serial, validity, key, extensions), so the only
//!   difference to a correct leaf is the signature algorithm.
//! - `rsa-1024`: rcgen's aws-lc-rs backend can neither generate nor load an RSA key under
//!   2048 bits. The `rsa` crate generates it ([`generate_rsa_1024`]); rcgen certifies its
//!   public key, which needs no private key.

use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey};
use rustls_pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use x509_cert::Certificate;
use x509_cert::builder::profile::BuilderProfile;
use x509_cert::builder::{Builder, CertificateBuilder};
use x509_cert::certificate::TbsCertificate;
use x509_cert::der::{Decode, Encode};
use x509_cert::ext::Extension;
use x509_cert::name::Name;
use x509_cert::spki::SubjectPublicKeyInfoRef;

use crate::PkiError;

/// Size of the `rsa-1024` profile's key: under the 2048 bits mbedTLS's default certificate
/// profile (`rsa_min_bitlen`) and OpenSSL's security level 2 require.
pub const WEAK_RSA_BITS: usize = 1024;

fn failed(what: &'static str) -> impl Fn(&dyn std::fmt::Display) -> PkiError {
    move |reason| PkiError::WeakCrypto {
        what,
        reason: reason.to_string(),
    }
}

/// A fresh RSA-1024 private key, as PKCS#8 DER.
pub fn generate_rsa_1024() -> Result<PrivatePkcs8KeyDer<'static>, PkiError> {
    let key = rsa::PrivateKey::new(&mut getrandom::SysRng, WEAK_RSA_BITS)
        .map_err(|e| failed("generating an RSA-1024 key")(&e))?;
    let der = key
        .to_pkcs8_der()
        .map_err(|e| failed("encoding an RSA-1024 key")(&e))?;
    Ok(PrivatePkcs8KeyDer::from(der.as_bytes().to_vec()))
}

/// Whether `der` holds an RSA key of exactly `bits` bits (a cached key is checked so).
pub fn is_rsa_key_of(der: &[u8], bits: usize) -> bool {
    use rsa::traits::PublicKeyParts;
    rsa::PrivateKey::from_pkcs8_der(der).is_ok_and(|k| k.size() * 8 == bits)
}

/// The SubjectPublicKeyInfo (DER) of an RSA private key.
pub fn rsa_public_key_info(key: &PrivatePkcs8KeyDer<'_>) -> Result<Vec<u8>, PkiError> {
    let key = rsa::PrivateKey::from_pkcs8_der(key.secret_pkcs8_der())
        .map_err(|e| failed("reading an RSA key")(&e))?;
    let spki = key
        .to_public_key()
        .to_public_key_der()
        .map_err(|e| failed("encoding an RSA public key")(&e))?;
    Ok(spki.as_bytes().to_vec())
}

/// `template` signed again by `issuer_key` (the RSA key that signed it) with
/// sha1WithRSAEncryption; every other field stays as it was.
pub fn sha1_twin(
    template: &CertificateDer<'_>,
    issuer_key: &PrivatePkcs8KeyDer<'_>,
) -> Result<CertificateDer<'static>, PkiError> {
    let fail = failed("signing the sha1-signature leaf");
    let template = Certificate::from_der(template).map_err(|e| fail(&e))?;
    let tbs = template.tbs_certificate();
    let key =
        rsa::PrivateKey::from_pkcs8_der(issuer_key.secret_pkcs8_der()).map_err(|e| fail(&e))?;
    let signer = rsa::pkcs1v15::SigningKey::<sha1::Sha1>::new(key);
    let builder = CertificateBuilder::new(
        SameAs(tbs),
        tbs.serial_number().clone(),
        *tbs.validity(),
        tbs.subject_public_key_info().clone(),
    )
    .map_err(|e| fail(&e))?;
    let cert = builder
        .build::<_, rsa::pkcs1v15::Signature>(&signer)
        .map_err(|e| fail(&e))?;
    let der = cert.to_der().map_err(|e| fail(&e))?;
    Ok(CertificateDer::from(der))
}

/// A builder profile that reproduces an existing certificate's names and extensions.
struct SameAs<'a>(&'a TbsCertificate);

impl BuilderProfile for SameAs<'_> {
    fn get_issuer(&self, _subject: &Name) -> Name {
        self.0.issuer().clone()
    }

    fn get_subject(&self) -> Name {
        self.0.subject().clone()
    }

    fn build_extensions(
        &self,
        _subject_key: SubjectPublicKeyInfoRef<'_>,
        _issuer_key: SubjectPublicKeyInfoRef<'_>,
        _tbs: &TbsCertificate,
    ) -> x509_cert::builder::Result<Vec<Extension>> {
        Ok(self.0.extensions().cloned().unwrap_or_default())
    }
}

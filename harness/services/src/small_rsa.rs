//! Signing with RSA keys under 2048 bits, which the gate must serve for the `rsa-1024` server
//! profile: rustls's aws-lc-rs key loader refuses them (aws-lc-rs `RsaKeyPair` loads 2048 to
//! 8192 bits only), so the `rsa` crate signs instead, with the schemes rustls's own RSA signer
//! offers at SHA-256: RSA-PSS (the only RSA scheme TLS 1.3 allows) and PKCS#1 v1.5.

use std::sync::Arc;

use rsa::pkcs8::DecodePrivateKey;
use rsa::sha2::Sha256;
use rsa::signature::{SignatureEncoding, Signer as _};
use rsa::traits::PublicKeyParts;
use rustls::SignatureScheme;
use rustls::sign::{Signer, SigningKey};
use rustls_pki_types::PrivateKeyDer;

/// Keys of at least this many bits are aws-lc-rs's business.
const SMALLEST_LOADED_BY_RUSTLS: usize = 2048;

/// Preferred first, as rustls's RSA signer orders them.
const SCHEMES: [SignatureScheme; 2] = [
    SignatureScheme::RSA_PSS_SHA256,
    SignatureScheme::RSA_PKCS1_SHA256,
];

#[derive(Debug)]
pub struct SmallRsaKey(Arc<rsa::PrivateKey>);

impl SmallRsaKey {
    /// The key, if it is a PKCS#8 RSA key too small for rustls's loader.
    pub fn from_der(key: &PrivateKeyDer<'_>) -> Option<Self> {
        let PrivateKeyDer::Pkcs8(pkcs8) = key else {
            return None;
        };
        let key = rsa::PrivateKey::from_pkcs8_der(pkcs8.secret_pkcs8_der()).ok()?;
        (key.size() * 8 < SMALLEST_LOADED_BY_RUSTLS).then(|| SmallRsaKey(Arc::new(key)))
    }
}

impl SigningKey for SmallRsaKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        let scheme = *SCHEMES.iter().find(|s| offered.contains(s))?;
        Some(Box::new(SmallRsaSigner {
            key: self.0.clone(),
            scheme,
        }))
    }

    fn algorithm(&self) -> rustls::SignatureAlgorithm {
        rustls::SignatureAlgorithm::RSA
    }
}

#[derive(Debug)]
struct SmallRsaSigner {
    key: Arc<rsa::PrivateKey>,
    scheme: SignatureScheme,
}

impl Signer for SmallRsaSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        let key = rsa::PrivateKey::clone(&self.key);
        let signature = if self.scheme == SignatureScheme::RSA_PSS_SHA256 {
            rsa::pss::SigningKey::<Sha256>::new(key)
                .try_sign(message)
                .map(|s| s.to_vec())
        } else {
            rsa::pkcs1v15::SigningKey::<Sha256>::new(key)
                .try_sign(message)
                .map(|s| s.to_vec())
        };
        signature.map_err(|e| rustls::Error::General(format!("RSA signature: {e}")))
    }

    fn scheme(&self) -> SignatureScheme {
        self.scheme
    }
}

//! Key generation, with an on-disk cache for RSA keys: an RSA-4096 key costs up to seconds,
//! an EC P-256 key microseconds, so only RSA keys are cached.
//!
//! The cache is a pool of PKCS#8 DER files, `rsa-<bits>-<n>.der`, in [`KeySource::cache_dir`];
//! a run that needs k keys of a size takes the first k of the pool and generates the missing
//! ones. These are test keys: reusing them across runs is harmless and keeps `sparring certs`
//! fast.

use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{KeyPair, RsaKeySize, SignatureAlgorithm};
use rustls_pki_types::PrivatePkcs8KeyDer;

use crate::{PkiError, weak};

/// The kind of key a certificate gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyKind {
    EcP256,
    Rsa2048,
    Rsa4096,
}

impl KeyKind {
    pub fn name(self) -> &'static str {
        match self {
            KeyKind::EcP256 => "ec-p256",
            KeyKind::Rsa2048 => "rsa-2048",
            KeyKind::Rsa4096 => "rsa-4096",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        [KeyKind::EcP256, KeyKind::Rsa2048, KeyKind::Rsa4096]
            .into_iter()
            .find(|k| k.name() == name)
    }

    fn algorithm(self) -> &'static SignatureAlgorithm {
        match self {
            KeyKind::EcP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyKind::Rsa2048 | KeyKind::Rsa4096 => &rcgen::PKCS_RSA_SHA256,
        }
    }
}

/// Hands out fresh keys, drawing RSA keys from the cache pool.
pub struct KeySource {
    cache_dir: Option<PathBuf>,
    rsa_2048_used: usize,
    rsa_4096_used: usize,
}

impl KeySource {
    /// `cache_dir = None` generates every key afresh.
    pub fn new(cache_dir: Option<PathBuf>) -> Self {
        KeySource {
            cache_dir,
            rsa_2048_used: 0,
            rsa_4096_used: 0,
        }
    }

    /// The default cache: `$SPARRING_KEY_CACHE`, else `$XDG_CACHE_HOME/sparring/keys`, else
    /// `~/.cache/sparring/keys`.
    pub fn default_cache_dir() -> Option<PathBuf> {
        if let Some(dir) = std::env::var_os("SPARRING_KEY_CACHE") {
            return Some(PathBuf::from(dir));
        }
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))?;
        Some(base.join("sparring").join("keys"))
    }

    pub fn cache_dir(&self) -> Option<&Path> {
        self.cache_dir.as_deref()
    }

    /// A key of the given kind, distinct from every other key this source handed out.
    pub fn next(&mut self, kind: KeyKind) -> Result<KeyPair, PkiError> {
        let (size, bits, index) = match kind {
            KeyKind::EcP256 => {
                return KeyPair::generate_for(kind.algorithm()).map_err(PkiError::KeyGeneration);
            }
            KeyKind::Rsa2048 => (RsaKeySize::_2048, 2048, &mut self.rsa_2048_used),
            KeyKind::Rsa4096 => (RsaKeySize::_4096, 4096, &mut self.rsa_4096_used),
        };
        let n = *index;
        *index += 1;
        let cached = self
            .cache_dir
            .as_ref()
            .map(|d| d.join(format!("rsa-{bits}-{n}.der")));
        if let Some(path) = &cached
            && let Ok(der) = std::fs::read(path)
        {
            // A corrupt cache entry is regenerated, not reported: the cache is disposable.
            if let Ok(key) = KeyPair::from_pkcs8_der_and_sign_algo(
                &PrivatePkcs8KeyDer::from(der),
                kind.algorithm(),
            ) {
                return Ok(key);
            }
        }
        let key =
            KeyPair::generate_rsa_for(kind.algorithm(), size).map_err(PkiError::KeyGeneration)?;
        if let Some(path) = &cached {
            // Failing to cache only costs time on the next run; say so and go on.
            if let Err(error) = store(path, &key.serialize_der()) {
                tracing::warn!("could not cache RSA key in {}: {error}", path.display());
            }
        }
        Ok(key)
    }

    /// The `rsa-1024` profile's key, as PKCS#8 DER: from the cache pool like the other RSA
    /// keys, else made by the `rsa` crate (rcgen can neither generate nor load it).
    pub fn rsa_1024(&mut self) -> Result<PrivatePkcs8KeyDer<'static>, PkiError> {
        let cached = self
            .cache_dir
            .as_ref()
            .map(|d| d.join(format!("rsa-{}-0.der", weak::WEAK_RSA_BITS)));
        if let Some(path) = &cached
            && let Ok(der) = std::fs::read(path)
            && weak::is_rsa_key_of(&der, weak::WEAK_RSA_BITS)
        {
            return Ok(PrivatePkcs8KeyDer::from(der));
        }
        let key = weak::generate_rsa_1024()?;
        if let Some(path) = &cached
            && let Err(error) = store(path, key.secret_pkcs8_der())
        {
            tracing::warn!("could not cache RSA key in {}: {error}", path.display());
        }
        Ok(key)
    }
}

fn store(path: &Path, der: &[u8]) -> Result<(), PkiError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| PkiError::Io(dir.to_path_buf(), e))?;
    }
    write_private(path, der)
}

/// Writes a file readable by its owner only (mode 0600), as private keys must be.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<(), PkiError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| PkiError::Io(path.to_path_buf(), e))?;
    file.write_all(bytes)
        .map_err(|e| PkiError::Io(path.to_path_buf(), e))
}

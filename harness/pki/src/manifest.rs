//! `manifest.json`: the index of a generated PKI directory, and the way every other part of
//! sparring (TLS gate, scenario engine) loads a profile from such a directory.

use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

use crate::PkiError;
use crate::describe::CertSummary;
use crate::keys::KeyKind;
use crate::profiles::{ConnectBy, Expected, Side};

/// Bumped when the layout of the directory or the manifest changes incompatibly.
pub const MANIFEST_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    pub generator: String,
    #[serde(with = "time::serde::rfc3339")]
    pub generated_at: time::OffsetDateTime,
    pub hosts: Vec<String>,
    pub ips: Vec<std::net::IpAddr>,
    pub device_id: String,
    pub key: KeyKind,
    pub authorities: Authorities,
    /// The intermediate's CRL (PEM and DER), listing the revoked profiles.
    pub crl: FilePair,
    pub profiles: Vec<ProfileEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Authorities {
    pub root: AuthorityEntry,
    pub intermediate: AuthorityEntry,
    pub unrelated_root: AuthorityEntry,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuthorityEntry {
    pub cert: FilePair,
    pub key: FilePair,
    pub certificate: CertSummary,
}

/// The same content as PEM and DER, paths relative to the manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FilePair {
    pub pem: PathBuf,
    pub der: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProfileEntry {
    pub name: String,
    pub side: Side,
    pub fault: String,
    /// What a correct device (server profiles) or broker (device profiles) does.
    pub reaction: String,
    /// What a correct verifier concludes, machine-readable.
    pub expected: Expected,
    /// Whether the verifier should reach the server by name or by IP address.
    pub connect_by: ConnectBy,
    pub files: ProfileFiles,
    /// Presented chain, in presentation order.
    pub chain: Vec<CertSummary>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProfileFiles {
    /// The profile's end-entity certificate (presented first, except in `reversed-chain`).
    pub cert: FilePair,
    pub key: FilePair,
    /// Everything presented, PEM, in presentation order: what a server serves.
    pub chain_pem: PathBuf,
    /// ESP-AT v2.x PKI bins (device profiles only): `mqtt_ca`, `mqtt_cert`, `mqtt_key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub esp_at: Option<EspAtFiles>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EspAtFiles {
    pub mqtt_ca: PathBuf,
    pub mqtt_cert: PathBuf,
    pub mqtt_key: PathBuf,
    /// ESP-AT v3.1+ `mfg_nvs` image for the ESP32-C3/C6 layout (124 KiB): the certificate
    /// namespaces only (`mqtt_*`, `client_*`), no factory parameters.
    pub mfg_nvs: PathBuf,
    /// The same for the ESP32/ESP32-S2 layout (112 KiB).
    pub mfg_nvs_esp32: PathBuf,
    /// Input for Espressif's `esp-idf-nvs-partition-gen` producing the same image (paths
    /// relative to its directory): to merge into a module's own `mfg_nvs.csv`.
    pub mfg_nvs_csv: PathBuf,
}

/// A generated PKI directory, loaded through its manifest.
#[derive(Debug, Clone)]
pub struct PkiDir {
    pub dir: PathBuf,
    pub manifest: Manifest,
}

impl PkiDir {
    /// Reads `DIR/manifest.json`.
    pub fn load(dir: impl AsRef<Path>) -> Result<PkiDir, PkiError> {
        let dir = dir.as_ref().to_path_buf();
        let path = dir.join("manifest.json");
        let text = std::fs::read_to_string(&path).map_err(|e| PkiError::Io(path.clone(), e))?;
        let manifest: Manifest = serde_json::from_str(&text).map_err(|e| {
            PkiError::Parse(format!(
                "{}:{}:{}: {e}",
                path.display(),
                e.line(),
                e.column()
            ))
        })?;
        if manifest.version != MANIFEST_VERSION {
            return Err(PkiError::Parse(format!(
                "{}: manifest version {} is not supported (expected {MANIFEST_VERSION}); run `sparring certs` again",
                path.display(),
                manifest.version
            )));
        }
        Ok(PkiDir { dir, manifest })
    }

    pub fn profile(&self, name: &str) -> Result<&ProfileEntry, PkiError> {
        self.manifest
            .profiles
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| {
                PkiError::UnknownProfile(name.to_owned(), crate::profiles::profile_names())
            })
    }

    pub fn path(&self, relative: &Path) -> PathBuf {
        self.dir.join(relative)
    }

    /// The presented chain of a profile.
    pub fn chain(&self, name: &str) -> Result<Vec<CertificateDer<'static>>, PkiError> {
        let path = self.path(&self.profile(name)?.files.chain_pem);
        read_certs(&path)
    }

    /// The private key of a profile.
    pub fn key(&self, name: &str) -> Result<PrivateKeyDer<'static>, PkiError> {
        let path = self.path(&self.profile(name)?.files.key.der);
        let der = std::fs::read(&path).map_err(|e| PkiError::Io(path.clone(), e))?;
        PrivateKeyDer::try_from(der)
            .map_err(|e| PkiError::Parse(format!("{}: {e}", path.display())))
    }

    /// The trusted root: what devices are given as their CA.
    pub fn root(&self) -> Result<CertificateDer<'static>, PkiError> {
        self.read_cert(&self.manifest.authorities.root.cert.der)
    }

    pub fn intermediate(&self) -> Result<CertificateDer<'static>, PkiError> {
        self.read_cert(&self.manifest.authorities.intermediate.cert.der)
    }

    /// The second, unrelated root (issuer of `untrusted-root` and `device-untrusted`).
    pub fn unrelated_root(&self) -> Result<CertificateDer<'static>, PkiError> {
        self.read_cert(&self.manifest.authorities.unrelated_root.cert.der)
    }

    pub fn crl(&self) -> Result<CertificateRevocationListDer<'static>, PkiError> {
        let path = self.path(&self.manifest.crl.der);
        let der = std::fs::read(&path).map_err(|e| PkiError::Io(path.clone(), e))?;
        Ok(CertificateRevocationListDer::from(der))
    }

    fn read_cert(&self, relative: &Path) -> Result<CertificateDer<'static>, PkiError> {
        let path = self.path(relative);
        let der = std::fs::read(&path).map_err(|e| PkiError::Io(path.clone(), e))?;
        Ok(CertificateDer::from(der))
    }
}

/// Every certificate of a PEM file.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| PkiError::Parse(format!("{}: {e}", path.display())))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PkiError::Parse(format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(PkiError::Parse(format!(
            "{}: no certificate in the file",
            path.display()
        )));
    }
    Ok(certs)
}

//! sparring's certificate factory: a complete test PKI (root, intermediate, an unrelated
//! root, a CRL) and a catalogue of server- and device-side fault profiles, each with the
//! reaction a correct device must show, written as PEM, DER and ESP-AT PKI bins with a
//! `manifest.json` that the rest of sparring loads profiles from ([`PkiDir`]); and
//! `inspect`, the diagnosis of certificate files users of ESP boards need.

mod der;
mod describe;
mod factory;
pub mod inspect;
mod keys;
mod manifest;
mod output;
pub mod profiles;
mod temp;
mod weak;

use std::path::PathBuf;

pub use describe::CertSummary;
pub use factory::{Authority, Material, Options, Pki, WRONG_HOST, WRONG_IP};
pub use keys::{KeyKind, KeySource};
pub use manifest::{
    Authorities, AuthorityEntry, EspAtFiles, FilePair, MANIFEST_VERSION, Manifest, PkiDir,
    ProfileEntry, ProfileFiles, read_certs,
};
pub use output::pem;
pub use profiles::{ConnectBy, Expected, PROFILES, Profile, RejectReason, Side};
pub use temp::TempPki;

/// What went wrong while generating, writing, loading or inspecting certificates.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{0}")]
    InvalidOption(String),
    #[error("unknown profile {0:?}; known profiles: {1}")]
    UnknownProfile(String, String),
    #[error("generating a key: {0}")]
    KeyGeneration(rcgen::Error),
    #[error("signing {0}: {1}")]
    Sign(String, rcgen::Error),
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("{0}")]
    Parse(String),
    /// A step of the weak-crypto profiles, which the `rsa` and `x509-cert` crates build.
    #[error("{what}: {reason}")]
    WeakCrypto { what: &'static str, reason: String },
}

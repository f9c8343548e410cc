//! A whole PKI in a temporary directory, for tests and for runs that need certificates only
//! while they last: generate (factory), write (output), load (manifest).

use crate::PkiError;
use crate::factory::{Options, Pki};
use crate::manifest::PkiDir;

/// A PKI generated into a temporary directory, removed when dropped: for tests and for
/// runs that need certificates only while they last.
pub struct TempPki {
    _dir: tempfile::TempDir,
    pub pki: PkiDir,
}

impl TempPki {
    pub fn generate(options: Options) -> Result<TempPki, PkiError> {
        let dir = tempfile::Builder::new()
            .prefix("sparring-pki-")
            .tempdir()
            .map_err(|e| PkiError::Io(std::env::temp_dir(), e))?;
        let out = dir.path().join("out");
        Pki::generate(options)?.write(&out)?;
        Ok(TempPki {
            pki: PkiDir::load(&out)?,
            _dir: dir,
        })
    }
}

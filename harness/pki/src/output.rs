//! Writes a generated [`Pki`] to a directory, all or nothing: everything goes into a
//! temporary directory beside the target, which replaces the target only when complete.

use std::path::{Path, PathBuf};

use esp_formats::Chip;
use esp_formats::atpki::{self, ItemType};
use esp_formats::nvs;
use esp_formats::partition::{self, AtStorage, MFG_NVS};
use rustls_pki_types::PrivatePkcs8KeyDer;

use crate::PkiError;
use crate::describe::CertSummary;
use crate::factory::{Authority, Material, Pki};
use crate::manifest::*;
use crate::profiles::Side;

impl Pki {
    /// Writes the PKI into `out`, replacing what was there. On error nothing of this run is
    /// left behind and a previous `out` is untouched.
    pub fn write(&self, out: &Path) -> Result<Manifest, PkiError> {
        let parent = match out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&parent).map_err(|e| PkiError::Io(parent.clone(), e))?;
        let staging = tempfile::Builder::new()
            .prefix(".sparring-certs-")
            .tempdir_in(&parent)
            .map_err(|e| PkiError::Io(parent.clone(), e))?;
        let manifest = self.write_into(staging.path())?;
        if out.exists() {
            // Move the old set aside first so a failed rename can be undone.
            let old = parent.join(format!(".sparring-certs-old-{}", std::process::id()));
            std::fs::rename(out, &old).map_err(|e| PkiError::Io(out.to_path_buf(), e))?;
            if let Err(e) = std::fs::rename(staging.path(), out) {
                let _ = std::fs::rename(&old, out);
                return Err(PkiError::Io(out.to_path_buf(), e));
            }
            std::fs::remove_dir_all(&old).map_err(|e| PkiError::Io(old.clone(), e))?;
        } else {
            std::fs::rename(staging.path(), out).map_err(|e| PkiError::Io(out.to_path_buf(), e))?;
        }
        // The staging directory was renamed away; `TempDir`'s drop then finds nothing.
        Ok(manifest)
    }

    fn write_into(&self, dir: &Path) -> Result<Manifest, PkiError> {
        let w = Writer { dir };
        let authorities = Authorities {
            root: w.authority("ca/root", &self.root)?,
            intermediate: w.authority("ca/intermediate", &self.intermediate)?,
            unrelated_root: w.authority("ca/unrelated-root", &self.unrelated_root)?,
        };
        let crl = FilePair {
            pem: "ca/crl.pem".into(),
            der: "ca/crl.der".into(),
        };
        w.public(&crl.pem, self.crl_pem.as_bytes())?;
        w.public(&crl.der, &self.crl)?;

        let root_pem = pem("CERTIFICATE", &self.root.cert());
        let mut profiles = Vec::new();
        for (profile, material) in &self.profiles {
            let side = match profile.side {
                Side::Server => "server",
                Side::Device => "device",
            };
            let base = PathBuf::from(side).join(profile.name);
            let mut files = w.material(&base, material)?;
            if profile.side == Side::Device {
                let sources = (files.chain_pem.as_path(), files.key.pem.as_path());
                files.esp_at = Some(w.esp_at(&base, &root_pem, material, sources)?);
            }
            let chain = material
                .chain
                .iter()
                .map(|c| CertSummary::from_der(c))
                .collect::<Result<Vec<_>, _>>()?;
            profiles.push(ProfileEntry {
                name: profile.name.to_owned(),
                side: profile.side,
                fault: profile.fault.to_owned(),
                reaction: profile.reaction.to_owned(),
                expected: profile.expected,
                connect_by: profile.connect_by,
                files,
                chain,
            });
        }
        let manifest = Manifest {
            version: MANIFEST_VERSION,
            generator: format!("sparring {}", env!("CARGO_PKG_VERSION")),
            generated_at: self.options.now,
            hosts: self.options.hosts.clone(),
            ips: self.options.ips.clone(),
            device_id: self.options.device_id.clone(),
            key: self.options.key,
            authorities,
            crl,
            profiles,
        };
        let json = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| PkiError::Parse(format!("serialising the manifest: {e}")))?;
        w.public(Path::new("manifest.json"), &json)?;
        Ok(manifest)
    }
}

struct Writer<'a> {
    dir: &'a Path,
}

impl Writer<'_> {
    fn authority(&self, base: &str, authority: &Authority) -> Result<AuthorityEntry, PkiError> {
        let cert = FilePair {
            pem: format!("{base}.pem").into(),
            der: format!("{base}.der").into(),
        };
        let key = FilePair {
            pem: format!("{base}.key.pem").into(),
            der: format!("{base}.key.der").into(),
        };
        let der = authority.cert();
        self.public(&cert.pem, pem("CERTIFICATE", &der).as_bytes())?;
        self.public(&cert.der, &der)?;
        self.key(&key, &authority.key())?;
        Ok(AuthorityEntry {
            cert,
            key,
            certificate: CertSummary::from_der(&der)?,
        })
    }

    fn material(&self, base: &Path, material: &Material) -> Result<ProfileFiles, PkiError> {
        let cert = FilePair {
            pem: base.join("cert.pem"),
            der: base.join("cert.der"),
        };
        let key = FilePair {
            pem: base.join("key.pem"),
            der: base.join("key.der"),
        };
        let chain_pem = base.join("chain.pem");
        let leaf = &material.leaf;
        self.public(&cert.pem, pem("CERTIFICATE", leaf).as_bytes())?;
        self.public(&cert.der, leaf)?;
        self.key(&key, &material.key)?;
        let chain: String = material
            .chain
            .iter()
            .map(|c| pem("CERTIFICATE", c))
            .collect();
        self.public(&chain_pem, chain.as_bytes())?;
        Ok(ProfileFiles {
            cert,
            key,
            chain_pem,
            esp_at: None,
        })
    }

    /// What an ESP-AT board needs to connect with this device identity: the three partitions a
    /// v2.x board reads at `AT+MQTTCONN` with scheme 5 (AtPKI bins, PEM as the firmware's
    /// default build expects), and for v3.1+ boards the `mfg_nvs` partition image with the same
    /// PEM items as blobs in the `mqtt_*` and `client_*` namespaces, for both partition sizes,
    /// plus the CSV Espressif's `esp-idf-nvs-partition-gen` builds the same image from.
    fn esp_at(
        &self,
        base: &Path,
        root_pem: &str,
        material: &Material,
        (chain_pem, key_pem_path): (&Path, &Path),
    ) -> Result<EspAtFiles, PkiError> {
        let files = EspAtFiles {
            mqtt_ca: base.join("mqtt_ca.bin"),
            mqtt_cert: base.join("mqtt_cert.bin"),
            mqtt_key: base.join("mqtt_key.bin"),
            mfg_nvs: base.join("mfg_nvs.bin"),
            mfg_nvs_esp32: base.join("mfg_nvs.esp32.bin"),
            mfg_nvs_csv: base.join("mfg_nvs.csv"),
        };
        let client_chain: String = material
            .chain
            .iter()
            .map(|c| pem("CERTIFICATE", c))
            .collect();
        let key_pem = pem("PRIVATE KEY", material.key.secret_pkcs8_der());
        let bin = |item: ItemType, content: &[u8]| {
            atpki::build(&[(item, content.to_vec())])
                .map_err(|e| PkiError::Parse(format!("{}: {e}", base.display())))
        };
        self.public(&files.mqtt_ca, &bin(ItemType::Ca, root_pem.as_bytes())?)?;
        self.public(
            &files.mqtt_cert,
            &bin(ItemType::Cert, client_chain.as_bytes())?,
        )?;
        self.private(&files.mqtt_key, &bin(ItemType::Key, key_pem.as_bytes())?)?;

        // (namespace, key, content, file the CSV points at, relative to the CSV's directory)
        let up = Path::new("../..");
        let root_file = up.join("ca/root.pem");
        let chain_file = up.join(chain_pem);
        let key_file = up.join(key_pem_path);
        let entries = [
            ("mqtt_ca", "mqtt_ca", root_pem.as_bytes(), &root_file),
            (
                "mqtt_cert",
                "mqtt_cert",
                client_chain.as_bytes(),
                &chain_file,
            ),
            ("mqtt_key", "mqtt_key", key_pem.as_bytes(), &key_file),
            ("client_ca", "client_ca.0", root_pem.as_bytes(), &root_file),
            (
                "client_cert",
                "client_cert.0",
                client_chain.as_bytes(),
                &chain_file,
            ),
            ("client_key", "client_key.0", key_pem.as_bytes(), &key_file),
        ];
        let items: Vec<nvs::Item> = entries
            .iter()
            .map(|(namespace, key, content, _)| nvs::Item {
                namespace: (*namespace).to_owned(),
                key: (*key).to_owned(),
                value: nvs::Value::Blob(content.to_vec()),
            })
            .collect();
        let mut csv = String::from("key,type,encoding,value\n");
        for (namespace, key, _, file) in &entries {
            csv.push_str(&format!("{namespace},namespace,,\n"));
            csv.push_str(&format!("{key},file,binary,{}\n", file.display()));
        }
        self.public(&files.mfg_nvs_csv, csv.as_bytes())?;
        for (path, chip) in [
            (&files.mfg_nvs, Chip::Esp32C3),
            (&files.mfg_nvs_esp32, Chip::Esp32),
        ] {
            let layout = partition::esp_at_layout(chip, AtStorage::MfgNvs);
            let size = layout
                .at_customize
                .find(MFG_NVS)
                .map_or(0, |p| p.size as usize);
            let image = nvs::write(&items, size)
                .map_err(|e| PkiError::Parse(format!("{}: {e}", path.display())))?;
            self.private(path, &image)?;
        }
        Ok(files)
    }

    fn key(&self, pair: &FilePair, key: &PrivatePkcs8KeyDer<'_>) -> Result<(), PkiError> {
        self.private(
            &pair.pem,
            pem("PRIVATE KEY", key.secret_pkcs8_der()).as_bytes(),
        )?;
        self.private(&pair.der, key.secret_pkcs8_der())
    }

    fn public(&self, relative: &Path, bytes: &[u8]) -> Result<(), PkiError> {
        let path = self.prepare(relative)?;
        std::fs::write(&path, bytes).map_err(|e| PkiError::Io(path, e))
    }

    fn private(&self, relative: &Path, bytes: &[u8]) -> Result<(), PkiError> {
        let path = self.prepare(relative)?;
        crate::keys::write_private(&path, bytes)
    }

    fn prepare(&self, relative: &Path) -> Result<PathBuf, PkiError> {
        let path = self.dir.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| PkiError::Io(parent.to_path_buf(), e))?;
        }
        Ok(path)
    }
}

/// PEM text of one DER object, 64 columns, as openssl writes it.
pub fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

//! The ESP-AT side of the step library that needs more than `send`/`expect`: provisioning a
//! module's credentials as a factory station does, through its AT port only (`AT+SYSFLASH` into
//! the v2.x PKI partitions, `AT+SYSMFG` into v3.1+'s `mfg_nvs`; ESP-AT docs, "System AT
//! Commands").

use std::path::Path;
use std::time::Duration;

use esp_formats::atpki::{self, ItemType};
use regex::Regex;

use super::steps::{ScenarioRun, StepFailure, fail};
use crate::scenario::{
    AtStorage, CaName, CredentialSet, Encoding, Port, ProvisionStep, SearchFrom,
};

impl ScenarioRun<'_> {
    /// Writes the device profile's CA, certificate chain and key into the board as a
    /// provisioning station does: AtPKI bins into the `<set>_ca`/`_cert`/`_key` partitions
    /// with `AT+SYSFLASH` (erase, then write through the data prompt), or blobs into the
    /// `mfg_nvs` namespaces of the same names with `AT+SYSMFG`.
    pub(crate) fn provision(&mut self, step: &ProvisionStep) -> Result<(), StepFailure> {
        let pki = self.context.pki;
        let profile_name = self
            .env
            .vars
            .get("device.profile")
            .cloned()
            .unwrap_or_default();
        let error = |e: &dyn std::fmt::Display| StepFailure::Error(e.to_string());
        let profile = pki.profile(&profile_name).map_err(|e| error(&e))?;
        let root = &pki.manifest.authorities.root.cert;
        let (ca, cert, key) = match step.encoding {
            Encoding::Pem => (&root.pem, &profile.files.chain_pem, &profile.files.key.pem),
            Encoding::Der => (&root.der, &profile.files.cert.der, &profile.files.key.der),
        };
        let read = |p: &Path| std::fs::read(pki.path(p)).map_err(|e| error(&e));
        let ca = match (step.ca.as_slice(), step.encoding) {
            ([], _) => read(ca)?,
            // mbedtls_x509_crt_parse takes every certificate of a PEM buffer.
            (roots, Encoding::Pem) => {
                let authorities = &pki.manifest.authorities;
                let mut bundle = Vec::new();
                for root in roots {
                    let entry = match root {
                        CaName::Root => &authorities.root,
                        CaName::UnrelatedRoot => &authorities.unrelated_root,
                    };
                    bundle.extend(read(&entry.cert.pem)?);
                }
                bundle
            }
            (_, Encoding::Der) => {
                return Err(StepFailure::Error(
                    "provision: a CA bundle (`ca`) needs PEM: a DER item holds one certificate"
                        .into(),
                ));
            }
        };
        let mut items = [
            (ItemType::Ca, "ca", ca),
            (ItemType::Cert, "cert", read(cert)?),
            (ItemType::Key, "key", read(key)?),
        ];
        if step.crlf {
            if step.encoding == Encoding::Der {
                return Err(StepFailure::Error(
                    "provision: `crlf` changes PEM line endings; DER has none".into(),
                ));
            }
            for (_, _, content) in &mut items {
                *content = crlf(content);
            }
        }
        let ok = Regex::new(r"^(OK|ERROR)$").map_err(|e| error(&e))?;
        let prefix = step.set.prefix();
        for (kind, suffix, content) in items {
            let name = format!("{prefix}_{suffix}");
            match self.loaded.scenario.board.at_storage {
                AtStorage::PkiPartitions => {
                    let bin = atpki::build(&[(kind, content)]).map_err(|e| error(&e))?;
                    self.at_command(&format!("AT+SYSFLASH=0,\"{name}\""), &ok)?;
                    let write = format!("AT+SYSFLASH=1,\"{name}\",0,{}", bin.len());
                    self.write_through_prompt(&write, &bin, &ok)?;
                }
                AtStorage::MfgNvs => {
                    // ESP-AT's key names: `mqtt_ca` in `mqtt_ca`, `client_ca.0` in `client_ca`.
                    let key = match step.set {
                        CredentialSet::Mqtt => name.clone(),
                        CredentialSet::Client => format!("{name}.0"),
                    };
                    let write = format!("AT+SYSMFG=2,\"{name}\",\"{key}\",8,{}", content.len());
                    self.write_through_prompt(&write, &content, &ok)?;
                }
            }
        }
        Ok(())
    }

    /// Sends a command that answers with the `>` data prompt, then the data, and waits for
    /// its final result; `ERROR` fails the step.
    fn write_through_prompt(
        &mut self,
        command: &str,
        data: &[u8],
        result: &Regex,
    ) -> Result<(), StepFailure> {
        // Where to look for the prompt is fixed before sending: a fast board may answer before
        // this thread runs again.
        let raw_from = self.observations.lock().at.raw().len();
        self.send(Port::At, format!("{command}\r\n").as_bytes())?;
        let prompt = self.wait(Duration::from_secs(5), |o| {
            o.at.raw()
                .get(raw_from..)
                .filter(|r| r.contains(&b'>'))
                .map(drop)
        })?;
        if prompt.is_none() {
            return Err(fail(format!("no `>` prompt after {command}"), Vec::new()));
        }
        // Sent like a line, so the result is looked for after the prompt: the `OK` before
        // `>` is not the answer to the data.
        self.send(Port::At, data)?;
        self.expect(Port::At, result, Duration::from_secs(5))?;
        self.check_no_error(command)
    }

    /// Sends a command and waits for its final result line; `ERROR` fails the step.
    fn at_command(&mut self, line: &str, result: &Regex) -> Result<(), StepFailure> {
        self.send(Port::At, format!("{line}\r\n").as_bytes())?;
        self.expect(Port::At, result, Duration::from_secs(5))?;
        self.check_no_error(line)
    }

    /// Fails when the board answered `ERROR` since the last send.
    fn check_no_error(&self, line: &str) -> Result<(), StepFailure> {
        let from = self.search_start(Port::At, SearchFrom::Send);
        let error = Regex::new("^ERROR$").map_err(|e| StepFailure::Error(e.to_string()))?;
        match self.observations.lock().at.find(from, &error) {
            Some(_) => Err(fail(format!("{line} answered ERROR"), Vec::new())),
            None => Ok(()),
        }
    }
}

/// LF line endings as CRLF (existing CRLFs kept).
fn crlf(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + text.len() / 32);
    for (i, &byte) in text.iter().enumerate() {
        if byte == b'\n' && (i == 0 || text[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(byte);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn crlf_turns_every_lf_into_crlf_once() {
        assert_eq!(super::crlf(b"a\nb\r\nc\n"), b"a\r\nb\r\nc\r\n");
        assert_eq!(super::crlf(b"\n"), b"\r\n");
    }
}

//! `sparring certs inspect`: what is in a certificate file, and what is wrong with it.
//!
//! Recognises PEM (certificates, keys, CRLs), DER certificates and keys, ESP-AT PKI bins and
//! garbage; with a CA, verifies the chain and names the broken link (missing intermediate,
//! expired intermediate, unknown issuer); with a host, checks the name.

use std::fmt;

use esp_formats::atpki;
use rustls_pki_types::pem::{PemObject, SectionKind};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use time::OffsetDateTime;
use webpki::KeyUsage;

use crate::describe::CertSummary;

/// What the caller wants checked besides the file's own content.
#[derive(Debug, Clone, Default)]
pub struct Checks {
    /// Trust anchors (`--ca`).
    pub ca: Vec<CertificateDer<'static>>,
    /// Host name or IP the certificate must be valid for (`--host`).
    pub host: Option<String>,
    /// When to judge validity (defaults to now).
    pub now: Option<OffsetDateTime>,
}

/// What a file turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Format {
    Pem,
    Der,
    AtPki,
    Unknown,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Pem => "PEM",
            Format::Der => "DER",
            Format::AtPki => "ESP-AT PKI bin",
            Format::Unknown => "unrecognised",
        })
    }
}

/// One thing found about a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub problem: bool,
    pub message: String,
}

/// The result of inspecting one file.
#[derive(Debug, Clone)]
pub struct Report {
    pub name: String,
    pub format: Format,
    /// One line per object found (certificate, key, CRL, PKI item).
    pub contents: Vec<String>,
    pub certificates: Vec<CertSummary>,
    pub findings: Vec<Finding>,
}

impl Report {
    pub fn has_problem(&self) -> bool {
        self.findings.iter().any(|f| f.problem)
    }

    fn problem(&mut self, message: impl Into<String>) {
        self.findings.push(Finding {
            problem: true,
            message: message.into(),
        });
    }

    fn ok(&mut self, message: impl Into<String>) {
        self.findings.push(Finding {
            problem: false,
            message: message.into(),
        });
    }
}

/// Inspects the bytes of one file. `name` is only used in the report.
pub fn inspect(name: &str, bytes: &[u8], checks: &Checks) -> Report {
    let now = checks.now.unwrap_or_else(OffsetDateTime::now_utc);
    let mut report = Report {
        name: name.to_owned(),
        format: Format::Unknown,
        contents: Vec::new(),
        certificates: Vec::new(),
        findings: Vec::new(),
    };
    let mut certs: Vec<CertificateDer<'static>> = Vec::new();

    if atpki::looks_like_atpki(bytes) {
        report.format = Format::AtPki;
        match atpki::parse(bytes) {
            Ok(items) => {
                for item in items {
                    report.contents.push(format!(
                        "item {} id {}: {} bytes",
                        item.item_type,
                        item.id,
                        item.content.len()
                    ));
                    let inner = inspect(name, &item.content, &Checks::default());
                    report.contents.extend(
                        inner
                            .contents
                            .into_iter()
                            .map(|c| format!("  {} {c}", inner.format)),
                    );
                    certs.extend(certificates(&item.content));
                }
            }
            Err(e) => report.problem(format!("malformed PKI bin: {e}")),
        }
    } else if looks_like_pem(bytes) {
        report.format = Format::Pem;
        for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(bytes) {
            match section {
                Ok((SectionKind::Certificate, der)) => {
                    report.contents.push("certificate".into());
                    certs.push(CertificateDer::from(der));
                }
                Ok((SectionKind::Crl, der)) => {
                    report.contents.push(format!("CRL ({} bytes)", der.len()))
                }
                Ok((kind, der)) => report.contents.push(key_line(kind, &der)),
                Err(e) => report.problem(format!("broken PEM: {e}")),
            }
        }
        if report.contents.is_empty() && !report.has_problem() {
            report
                .problem("PEM armour found but no section sparring knows (certificate, key, CRL)");
        }
    } else if CertSummary::from_der(bytes).is_ok() {
        report.format = Format::Der;
        report.contents.push("certificate".into());
        certs.push(CertificateDer::from(bytes.to_vec()));
    } else if let Ok(key) = PrivateKeyDer::try_from(bytes.to_vec())
        && rustls::crypto::aws_lc_rs::sign::any_supported_type(&key).is_ok()
    {
        report.format = Format::Der;
        report
            .contents
            .push(format!("private key ({})", key_kind_name(&key)));
    }
    if report.format == Format::Unknown {
        let start: String = bytes
            .iter()
            .take(16)
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(" ");
        report.problem(format!(
            "not a certificate, key or PKI bin: {} bytes starting {start} (expected PEM '-----BEGIN', DER 30 82.., or PKI bin f1 f1)",
            bytes.len()
        ));
        return report;
    }

    for der in &certs {
        match CertSummary::from_der(der) {
            Ok(summary) => {
                validity_findings(&mut report, &summary, now);
                report.certificates.push(summary);
            }
            Err(e) => report.problem(format!("certificate does not parse: {e}")),
        }
    }
    if !checks.ca.is_empty() && !certs.is_empty() {
        verify_chain(&mut report, &certs, checks, now);
    }
    if let Some(host) = &checks.host {
        check_host(&mut report, certs.first(), host);
    }
    report
}

fn looks_like_pem(bytes: &[u8]) -> bool {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(4096)]);
    text.contains("-----BEGIN ")
}

/// Every certificate in PEM or DER bytes.
pub fn certificates(bytes: &[u8]) -> Vec<CertificateDer<'static>> {
    if looks_like_pem(bytes) {
        CertificateDer::pem_slice_iter(bytes)
            .filter_map(Result::ok)
            .collect()
    } else if CertSummary::from_der(bytes).is_ok() {
        vec![CertificateDer::from(bytes.to_vec())]
    } else {
        Vec::new()
    }
}

fn key_line(kind: SectionKind, der: &[u8]) -> String {
    let key = match kind {
        SectionKind::PrivateKey => PrivateKeyDer::Pkcs8(der.to_vec().into()),
        SectionKind::RsaPrivateKey => PrivateKeyDer::Pkcs1(der.to_vec().into()),
        SectionKind::EcPrivateKey => PrivateKeyDer::Sec1(der.to_vec().into()),
        other => return format!("{other:?} section"),
    };
    match rustls::crypto::aws_lc_rs::sign::any_supported_type(&key) {
        Ok(_) => format!("private key ({})", key_kind_name(&key)),
        Err(e) => format!("private key that does not load: {e}"),
    }
}

fn key_kind_name(key: &PrivateKeyDer<'_>) -> String {
    let container = match key {
        PrivateKeyDer::Pkcs1(_) => "PKCS#1 RSA",
        PrivateKeyDer::Sec1(_) => "SEC1 EC",
        PrivateKeyDer::Pkcs8(_) => "PKCS#8",
        _ => "unknown container",
    };
    match rustls::crypto::aws_lc_rs::sign::any_supported_type(key) {
        Ok(signing) => format!("{container}, {:?}", signing.algorithm()),
        Err(_) => container.to_owned(),
    }
}

fn validity_findings(report: &mut Report, cert: &CertSummary, now: OffsetDateTime) {
    let who = describe_role(cert);
    if cert.not_after < now {
        report.problem(format!(
            "{who} EXPIRED since {} ({} days ago)",
            date(cert.not_after),
            (now - cert.not_after).whole_days()
        ));
    } else if cert.not_before > now {
        report.problem(format!("{who} not valid before {} (a board whose clock is not set sees every certificate this way)", date(cert.not_before)));
    }
}

fn describe_role(cert: &CertSummary) -> String {
    let role = if !cert.is_ca {
        "certificate"
    } else if cert.subject == cert.issuer {
        "root CA"
    } else {
        "intermediate CA"
    };
    format!("{role} '{}'", cert.subject)
}

fn date(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

/// Verifies the file's chain against the CA and explains a failure in terms of the chain:
/// which certificate is missing or expired.
fn verify_chain(
    report: &mut Report,
    certs: &[CertificateDer<'static>],
    checks: &Checks,
    now: OffsetDateTime,
) {
    let summaries: Vec<CertSummary> = certs
        .iter()
        .filter_map(|c| CertSummary::from_der(c).ok())
        .collect();
    let Some(leaf) = summaries.first() else {
        return;
    };
    let ca_summaries: Vec<CertSummary> = checks
        .ca
        .iter()
        .filter_map(|c| CertSummary::from_der(c).ok())
        .collect();
    if summaries.len() == 1 && ca_summaries.iter().any(|ca| ca.sha256 == leaf.sha256) {
        report.ok("this is the trusted CA certificate itself");
        return;
    }
    let anchors: Vec<_> = checks
        .ca
        .iter()
        .filter_map(|c| {
            webpki::anchor_from_trusted_cert(c)
                .ok()
                .map(|a| a.to_owned())
        })
        .collect();
    if anchors.is_empty() {
        report.problem("--ca holds no usable CA certificate");
        return;
    }
    let Ok(end_entity) = webpki::EndEntityCert::try_from(&certs[0]) else {
        report.problem("the first certificate cannot be used as an end entity");
        return;
    };
    let usage = if leaf.extended_key_usage.iter().any(|u| u == "clientAuth")
        && !leaf.extended_key_usage.iter().any(|u| u == "serverAuth")
    {
        KeyUsage::client_auth()
    } else {
        KeyUsage::server_auth()
    };
    let algorithms = rustls::crypto::aws_lc_rs::default_provider()
        .signature_verification_algorithms
        .all;
    let seconds = u64::try_from(now.unix_timestamp()).unwrap_or(0);
    let result = end_entity.verify_for_usage(
        algorithms,
        &anchors,
        &certs[1..],
        UnixTime::since_unix_epoch(std::time::Duration::from_secs(seconds)),
        usage,
        None,
        None,
    );
    match result {
        Ok(_) => report.ok("chain verifies against the CA"),
        Err(error) => {
            let detail = explain(&error, &summaries, &ca_summaries, now);
            report.problem(format!("chain does not verify against the CA: {detail}"));
        }
    }
}

fn explain(
    error: &webpki::Error,
    chain: &[CertSummary],
    cas: &[CertSummary],
    now: OffsetDateTime,
) -> String {
    use webpki::Error as E;
    match error {
        E::CertExpired { .. } | E::CertNotValidYet { .. } => {
            let bad: Vec<String> = chain
                .iter()
                .filter(|c| c.not_after < now || c.not_before > now)
                .map(|c| {
                    if c.not_after < now {
                        format!("{} EXPIRED since {}", describe_role(c), date(c.not_after))
                    } else {
                        format!(
                            "{} not valid before {}",
                            describe_role(c),
                            date(c.not_before)
                        )
                    }
                })
                .collect();
            if bad.is_empty() {
                format!("{error:?}")
            } else {
                bad.join("; ")
            }
        }
        E::UnknownIssuer => {
            let last = chain.last().map(|c| c.issuer.clone()).unwrap_or_default();
            let known = cas.iter().any(|ca| ca.subject == last);
            if known {
                "unknown issuer: the chain names a CA you gave, but a signature does not verify (wrong CA with the same name?)".to_owned()
            } else if cas.iter().any(|ca| ca.is_ca) && chain.iter().all(|c| c.subject != last) {
                format!(
                    "missing intermediate: the chain ends with a certificate issued by '{last}', which is neither in the file nor the CA ('{}'); add '{last}' to the chain",
                    cas.iter()
                        .map(|c| c.subject.as_str())
                        .collect::<Vec<_>>()
                        .join("', '")
                )
            } else {
                format!("unknown issuer '{last}'")
            }
        }
        E::CaUsedAsEndEntity => {
            "the first certificate is a CA: the chain is in the wrong order (leaf must come first)"
                .to_owned()
        }
        E::EndEntityUsedAsCa => {
            "a certificate without the CA basic constraint signed another one".to_owned()
        }
        E::RequiredEkuNotFoundContext(_) => {
            "extended key usage does not allow this purpose".to_owned()
        }
        E::NameConstraintViolation => "a name is outside the CA's name constraints".to_owned(),
        other => format!("{other:?}"),
    }
}

fn check_host(report: &mut Report, leaf: Option<&CertificateDer<'static>>, host: &str) {
    let Some(leaf) = leaf else {
        report.problem(format!("--host {host}: the file holds no certificate"));
        return;
    };
    let Ok(name) = ServerName::try_from(host.to_owned()) else {
        report.problem(format!(
            "--host {host:?} is neither a DNS name nor an IP address"
        ));
        return;
    };
    let sans = CertSummary::from_der(leaf)
        .map(|s| s.sans.join(", "))
        .unwrap_or_default();
    match webpki::EndEntityCert::try_from(leaf).map(|ee| ee.verify_is_valid_for_subject_name(&name))
    {
        Ok(Ok(())) => report.ok(format!("valid for {host}")),
        _ if sans.is_empty() => report.problem(format!(
            "NOT valid for {host}: no subjectAltName (the CN alone is ignored by modern verifiers)"
        )),
        _ => report.problem(format!("NOT valid for {host}: the names are {sans}")),
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}: {}", self.name, self.format)?;
        for line in &self.contents {
            writeln!(f, "  {line}")?;
        }
        for (i, c) in self.certificates.iter().enumerate() {
            writeln!(f, "  certificate {}:", i + 1)?;
            writeln!(f, "    subject:    {}", c.subject)?;
            writeln!(f, "    issuer:     {}", c.issuer)?;
            if !c.sans.is_empty() {
                writeln!(f, "    names:      {}", c.sans.join(", "))?;
            }
            writeln!(
                f,
                "    valid:      {} .. {}",
                date(c.not_before),
                date(c.not_after)
            )?;
            writeln!(f, "    key:        {}", c.key)?;
            writeln!(f, "    signature:  {}", c.signature_algorithm)?;
            writeln!(f, "    CA:         {}", if c.is_ca { "yes" } else { "no" })?;
            if !c.extended_key_usage.is_empty() {
                writeln!(f, "    usage:      {}", c.extended_key_usage.join(", "))?;
            }
            writeln!(f, "    serial:     {}", c.serial)?;
            writeln!(f, "    sha256:     {}", c.sha256)?;
        }
        for finding in &self.findings {
            writeln!(
                f,
                "  {} {}",
                if finding.problem { "PROBLEM:" } else { "ok:" },
                finding.message
            )?;
        }
        Ok(())
    }
}

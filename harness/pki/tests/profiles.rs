//! Every profile of a generated PKI passes or fails exactly as its manifest says, checked
//! with rustls's verifiers and full in-memory TLS handshakes, and with `openssl verify`.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

use rustls::client::danger::ServerCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use sparring_pki::{
    ConnectBy, Expected, Options, PkiDir, ProfileEntry, RejectReason, Side, TempPki,
};

/// One generated set for the whole test binary (generation is the slow part).
fn pki() -> &'static PkiDir {
    static PKI: OnceLock<TempPki> = OnceLock::new();
    let options = Options {
        key_cache: Some(PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("key-cache")),
        ..Options::default()
    };
    &PKI.get_or_init(|| TempPki::generate(options).unwrap()).pki
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn roots(pki: &PkiDir) -> Arc<RootCertStore> {
    let mut store = RootCertStore::empty();
    store.add(pki.root().unwrap()).unwrap();
    Arc::new(store)
}

fn server_name(pki: &PkiDir, profile: &ProfileEntry) -> ServerName<'static> {
    match profile.connect_by {
        ConnectBy::Name => ServerName::try_from(pki.manifest.hosts[0].clone()).unwrap(),
        ConnectBy::Ip => ServerName::from(pki.manifest.ips[0]),
    }
}

/// Verifies a server profile's presented chain as a device reaching it would.
fn verify_server(
    verifier: &dyn ServerCertVerifier,
    pki: &PkiDir,
    profile: &ProfileEntry,
) -> Result<(), rustls::Error> {
    let chain = pki.chain(&profile.name).unwrap();
    verifier
        .verify_server_cert(
            &chain[0],
            &chain[1..],
            &server_name(pki, profile),
            &[],
            UnixTime::now(),
        )
        .map(|_| ())
}

fn outcome(result: Result<(), rustls::Error>) -> Expected {
    match result {
        Ok(()) => Expected::Accept,
        Err(e) => Expected::Reject(
            RejectReason::of(&e).unwrap_or_else(|| panic!("not a certificate error: {e:?}")),
        ),
    }
}

fn profiles(side: Side) -> Vec<&'static ProfileEntry> {
    pki()
        .manifest
        .profiles
        .iter()
        .filter(|p| p.side == side)
        .collect()
}

#[test]
fn manifest_lists_every_profile_of_the_issue() {
    let names: Vec<&str> = pki()
        .manifest
        .profiles
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    for required in [
        "valid",
        "expired",
        "not-yet-valid",
        "wrong-host",
        "wrong-ip",
        "cn-only",
        "self-signed",
        "untrusted-root",
        "missing-intermediate",
        "reversed-chain",
        "intermediate-expired",
        "revoked",
        "not-a-ca",
        "wrong-eku",
        "large-chain",
        "rsa-4096",
        "sha1-signature",
        "rsa-1024",
        "device-valid",
        "device-expired",
        "device-untrusted",
        "device-revoked",
        "device-wrong-cn",
        "device-key-mismatch",
    ] {
        assert!(
            names.contains(&required),
            "{required} missing from the manifest"
        );
    }
}

#[test]
fn server_profiles_verify_as_the_manifest_says() {
    let pki = pki();
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(roots(pki), provider())
            .with_crls([pki.crl().unwrap()])
            .only_check_end_entity_revocation()
            .allow_unknown_revocation_status()
            .build()
            .unwrap();
    for profile in profiles(Side::Server) {
        let result = verify_server(&*verifier, pki, profile);
        // webpki judges a key's size only when the key signs, in the handshake (where the
        // gate's tests see `rsa-1024` refused); the chain itself is in order.
        let expected = match profile.name.as_str() {
            "rsa-1024" => Expected::Accept,
            _ => profile.expected,
        };
        assert_eq!(outcome(result), expected, "server profile {}", profile.name);
    }
}

fn parse<'a>(der: &'a CertificateDer<'_>) -> x509_parser::certificate::X509Certificate<'a> {
    x509_parser::parse_x509_certificate(der.as_ref()).unwrap().1
}

/// The weak-crypto leaves are the `valid` leaf but for their weakness: same names, validity,
/// usages and issuer checks, a correct signature by their issuer, and then exactly one of a
/// SHA-1 signature or a 1024-bit RSA key.
#[test]
fn weak_crypto_profiles_differ_from_valid_only_in_their_weakness() {
    const SHA1_WITH_RSA: &str = "1.2.840.113549.1.1.5";
    let pki = pki();
    let valid_chain = pki.chain("valid").unwrap();
    let valid = parse(&valid_chain[0]);
    for (name, weak_hash, weak_key) in [("sha1-signature", true, false), ("rsa-1024", false, true)]
    {
        let chain = pki.chain(name).unwrap();
        assert_eq!(chain.len(), 2, "{name}: leaf and its intermediate");
        let (leaf, issuer) = (parse(&chain[0]), parse(&chain[1]));
        assert_eq!(leaf.subject(), valid.subject(), "{name}");
        assert_eq!(leaf.validity(), valid.validity(), "{name}");
        assert_eq!(
            format!("{:?}", leaf.subject_alternative_name().unwrap()),
            format!("{:?}", valid.subject_alternative_name().unwrap()),
            "{name}"
        );
        assert_eq!(
            format!("{:?}", leaf.extended_key_usage().unwrap()),
            format!("{:?}", valid.extended_key_usage().unwrap()),
            "{name}"
        );
        assert_eq!(leaf.issuer(), issuer.subject(), "{name}");
        leaf.verify_signature(Some(issuer.public_key()))
            .unwrap_or_else(|e| panic!("{name}: leaf not signed by its issuer: {e:?}"));
        let signature = leaf.signature_algorithm.algorithm.to_id_string();
        assert_eq!(signature == SHA1_WITH_RSA, weak_hash, "{name}: {signature}");
        let key_bits = leaf.public_key().parsed().unwrap().key_size();
        assert_eq!(key_bits == 1024, weak_key, "{name}: {key_bits}-bit key");
        // The intermediate itself is beyond reproach: SHA-256 signed, key of 2048 bits or EC.
        assert_ne!(
            issuer.signature_algorithm.algorithm.to_id_string(),
            SHA1_WITH_RSA
        );
        assert!(!matches!(
            issuer.public_key().parsed().unwrap(),
            x509_parser::public_key::PublicKey::RSA(ref rsa) if rsa.key_size() < 2048
        ));
    }
}

/// Device profiles go through a whole mutual-TLS handshake in memory, so a key that does not
/// belong to its certificate is caught the way a broker catches it.
#[test]
fn device_profiles_handshake_as_the_manifest_says() {
    let pki = pki();
    let client_verifier = WebPkiClientVerifier::builder_with_provider(roots(pki), provider())
        .with_crls([pki.crl().unwrap()])
        .only_check_end_entity_revocation()
        .allow_unknown_revocation_status()
        .build()
        .unwrap();
    let server_config = Arc::new(
        ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(pki.chain("valid").unwrap(), pki.key("valid").unwrap())
            .unwrap(),
    );
    for profile in profiles(Side::Device) {
        let result = handshake(pki, &server_config, &profile.name);
        assert_eq!(
            outcome(result),
            profile.expected,
            "device profile {}",
            profile.name
        );
    }
}

fn handshake(
    pki: &PkiDir,
    server_config: &Arc<ServerConfig>,
    device: &str,
) -> Result<(), rustls::Error> {
    let client_config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots(pki))
        .with_client_auth_cert(pki.chain(device).unwrap(), pki.key(device).unwrap())?;
    let name = ServerName::try_from(pki.manifest.hosts[0].clone()).unwrap();
    let mut client = rustls::ClientConnection::new(Arc::new(client_config), name).unwrap();
    let mut server = rustls::ServerConnection::new(server_config.clone()).unwrap();
    for _ in 0..20 {
        if !client.is_handshaking() && !server.is_handshaking() {
            return Ok(());
        }
        let mut buf = Vec::new();
        client.write_tls(&mut buf).unwrap();
        server.read_tls(&mut buf.as_slice()).unwrap();
        server.process_new_packets()?;
        let mut buf = Vec::new();
        server.write_tls(&mut buf).unwrap();
        client.read_tls(&mut buf.as_slice()).unwrap();
        if let Err(e) = client.process_new_packets() {
            // The client sees the server's alert; the server's own error says why.
            let mut buf = Vec::new();
            client.write_tls(&mut buf).unwrap();
            server.read_tls(&mut buf.as_slice()).unwrap();
            server.process_new_packets()?;
            return Err(e);
        }
    }
    panic!("handshake with {device} did not finish in 20 rounds")
}

fn openssl_available() -> bool {
    let found = Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found || std::env::var_os("CI").is_none(),
        "openssl is required under CI (.ci/run installs it)"
    );
    found
}

/// Debian's default security level: its openssl.cnf sets `SECLEVEL=2` for TLS connections
/// (s_client, curl), but `openssl verify` judges key sizes and digests only at the
/// authentication level it is given, and without one it accepts SHA-1 and RSA-1024.
const DEBIAN_SECURITY_LEVEL: &str = "2";

/// `openssl verify` agrees with the manifest on every chain. openssl checks a certificate's
/// own validity, issuer, purpose, name, (with -crl_check) revocation and, at Debian's
/// security level, digests and key sizes; it cannot see a key mismatch (a handshake
/// property), and it falls back to the subject CN when a certificate has no subjectAltName —
/// as mbedTLS on ESP boards does — so `cn-only` passes there.
#[test]
fn openssl_verify_agrees() {
    if !openssl_available() {
        return;
    }
    let pki = pki();
    let tmp = tempfile::tempdir().unwrap();
    for profile in &pki.manifest.profiles {
        let output = openssl_verify(pki, profile, tmp.path(), Some(DEBIAN_SECURITY_LEVEL));
        let accepted = output.status.success();
        let expected_accept = match (profile.name.as_str(), profile.expected) {
            ("cn-only", _) => true,
            (_, Expected::Reject(RejectReason::KeyMismatch)) => true,
            (_, expected) => expected == Expected::Accept,
        };
        assert_eq!(
            accepted,
            expected_accept,
            "openssl verify on {}: {}{}",
            profile.name,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// OpenSSL refuses the weak-crypto chains for the reason mbedTLS does (BAD_MD, BAD_KEY): the
/// digest of a signature, and the server key's size — but only at a security level: without
/// one, `openssl verify` accepts both, which a qualification report must not take for a pass.
#[test]
fn openssl_refuses_the_weak_crypto_for_its_reason() {
    if !openssl_available() {
        return;
    }
    let pki = pki();
    let tmp = tempfile::tempdir().unwrap();
    for (name, reason) in [
        ("sha1-signature", "CA signature digest algorithm too weak"),
        ("rsa-1024", "EE certificate key too weak"),
    ] {
        let profile = pki.profile(name).unwrap();
        let output = openssl_verify(pki, profile, tmp.path(), Some(DEBIAN_SECURITY_LEVEL));
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            !output.status.success() && said.contains(reason),
            "{name}: {said}"
        );
        let unlevelled = openssl_verify(pki, profile, tmp.path(), None);
        assert!(unlevelled.status.success(), "{name} without -auth_level");
    }
}

/// `openssl verify` on a profile's chain as a device reaching it would verify it, at the
/// given security level.
fn openssl_verify(
    pki: &PkiDir,
    profile: &ProfileEntry,
    tmp: &Path,
    security_level: Option<&str>,
) -> std::process::Output {
    let intermediate_subject = &pki.manifest.authorities.intermediate.certificate.subject;
    let chain = pki.chain(&profile.name).unwrap();
    let leaf = write_pem(tmp, &format!("{}-leaf.pem", profile.name), &chain[..1]);
    let mut cmd = Command::new("openssl");
    cmd.arg("verify");
    if let Some(level) = security_level {
        cmd.args(["-auth_level", level]);
    }
    cmd.arg("-CAfile")
        .arg(pki.path(&pki.manifest.authorities.root.cert.pem));
    if chain.len() > 1 {
        cmd.arg("-untrusted").arg(write_pem(
            tmp,
            &format!("{}-rest.pem", profile.name),
            &chain[1..],
        ));
    }
    if &profile.chain[0].issuer == intermediate_subject {
        cmd.arg("-crl_check")
            .arg("-CRLfile")
            .arg(pki.path(&pki.manifest.crl.pem));
    }
    match profile.side {
        Side::Server => {
            cmd.args(["-purpose", "sslserver"]);
            match profile.connect_by {
                ConnectBy::Name => cmd.arg("-verify_hostname").arg(&pki.manifest.hosts[0]),
                ConnectBy::Ip => cmd.arg("-verify_ip").arg(pki.manifest.ips[0].to_string()),
            };
        }
        Side::Device => {
            cmd.args(["-purpose", "sslclient"]);
        }
    }
    cmd.arg(&leaf).output().unwrap()
}

/// openssl confirms that `device-key-mismatch` really holds a key of another certificate,
/// and that every other profile's key matches its certificate.
#[test]
fn openssl_sees_the_key_mismatch_and_only_there() {
    if !openssl_available() {
        return;
    }
    let pki = pki();
    for profile in &pki.manifest.profiles {
        let from_cert = openssl(
            &["x509", "-noout", "-pubkey", "-in"],
            &pki.path(&profile.files.cert.pem),
        );
        let from_key = openssl(
            &["pkey", "-pubout", "-in"],
            &pki.path(&profile.files.key.pem),
        );
        let mismatch = profile.expected == Expected::Reject(RejectReason::KeyMismatch);
        assert_eq!(from_cert != from_key, mismatch, "key of {}", profile.name);
    }
}

fn openssl(args: &[&str], file: &Path) -> String {
    let output = Command::new("openssl")
        .args(args)
        .arg(file)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "openssl {args:?} {}: {}",
        file.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn write_pem(dir: &Path, name: &str, certs: &[CertificateDer<'_>]) -> PathBuf {
    let path = dir.join(name);
    let text: String = certs
        .iter()
        .map(|c| sparring_pki::pem("CERTIFICATE", c))
        .collect();
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn files_are_complete_and_keys_private() {
    use std::os::unix::fs::PermissionsExt;
    let pki = pki();
    for profile in &pki.manifest.profiles {
        let f = &profile.files;
        for public in [&f.cert.pem, &f.cert.der, &f.chain_pem] {
            assert!(pki.path(public).is_file(), "{}", public.display());
        }
        for private in [&f.key.pem, &f.key.der] {
            let mode = std::fs::metadata(pki.path(private))
                .unwrap()
                .permissions()
                .mode()
                & 0o777;
            assert_eq!(
                mode,
                0o600,
                "{} must be readable by its owner only",
                private.display()
            );
        }
        assert_eq!(
            f.esp_at.is_some(),
            profile.side == Side::Device,
            "{}",
            profile.name
        );
        let leaf_der = std::fs::read(pki.path(&f.cert.der)).unwrap();
        let leaf_sha256 = hex_sha256(&leaf_der);
        let position = profile.chain.iter().position(|c| c.sha256 == leaf_sha256);
        let expected_position = if profile.name == "reversed-chain" {
            profile.chain.len() - 1
        } else {
            0
        };
        assert_eq!(
            position,
            Some(expected_position),
            "leaf fingerprint in the manifest chain of {}",
            profile.name
        );
    }
}

fn hex_sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[test]
fn large_chain_exceeds_the_default_mbedtls_input_buffer() {
    let chain = pki().chain("large-chain").unwrap();
    let total: usize = chain.iter().map(|c| c.len()).sum();
    assert!(total > 16 * 1024, "large-chain is only {total} bytes");
}

#[test]
fn root_is_name_constrained_to_the_given_names() {
    let root = pki().root().unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&root).unwrap();
    let constraints = cert
        .name_constraints()
        .unwrap()
        .expect("root carries name constraints")
        .value;
    let permitted = format!("{:?}", constraints.permitted_subtrees);
    for host in &pki().manifest.hosts {
        assert!(
            permitted.contains(host.as_str()),
            "{host} not permitted: {permitted}"
        );
    }
}

/// The constraints are enforced: a certificate for a real site, signed with the test
/// intermediate's key (as anyone holding a leaked test PKI could), is refused.
#[test]
fn a_leaked_intermediate_cannot_vouch_for_a_real_site() {
    let pki = pki();
    let ca_key = rcgen::KeyPair::try_from(
        std::fs::read(pki.path(&pki.manifest.authorities.intermediate.key.der))
            .unwrap()
            .as_slice(),
    )
    .unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_der(&pki.intermediate().unwrap(), ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["bank.example.com".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(roots(pki), provider())
            .build()
            .unwrap();
    let error = verifier
        .verify_server_cert(
            leaf.der(),
            &[pki.intermediate().unwrap()],
            &ServerName::try_from("bank.example.com").unwrap(),
            &[],
            UnixTime::now(),
        )
        .unwrap_err();
    assert!(
        format!("{error:?}").contains("NameConstraintViolation"),
        "{error:?}"
    );
}

/// mbedTLS (ESP-IDF's TLS stack) refuses to parse a certificate with a critical extension
/// it does not implement; every certificate sparring hands to a board must avoid that.
#[test]
fn every_certificate_parses_in_mbedtls_terms() {
    // basicConstraints, keyUsage, extKeyUsage, subjectAltName: what mbedTLS implements.
    const UNDERSTOOD: [&str; 4] = ["2.5.29.19", "2.5.29.15", "2.5.29.37", "2.5.29.17"];
    let pki = pki();
    let mut certs = vec![pki.root().unwrap(), pki.intermediate().unwrap()];
    for profile in &pki.manifest.profiles {
        certs.extend(pki.chain(&profile.name).unwrap());
    }
    for der in &certs {
        let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
        for ext in cert.extensions().iter().filter(|e| e.critical) {
            let oid = ext.oid.to_id_string();
            assert!(
                UNDERSTOOD.contains(&oid.as_str()),
                "{} has critical extension {oid}",
                cert.subject()
            );
        }
    }
}

#[test]
fn esp_at_bins_hold_the_root_the_chain_and_the_key() {
    use esp_formats::atpki::{ItemType, parse};
    let pki = pki();
    let profile = pki.profile("device-valid").unwrap();
    let bins = profile.files.esp_at.as_ref().unwrap();
    let read = |p: &Path| parse(&std::fs::read(pki.path(p)).unwrap()).unwrap();
    let ca = read(&bins.mqtt_ca);
    assert_eq!((ca.len(), ca[0].item_type), (1, ItemType::Ca));
    assert_eq!(
        ca[0].content,
        std::fs::read(pki.path(&pki.manifest.authorities.root.cert.pem)).unwrap()
    );
    let cert = read(&bins.mqtt_cert);
    assert_eq!(
        cert[0].content,
        std::fs::read(pki.path(&profile.files.chain_pem)).unwrap()
    );
    let key = read(&bins.mqtt_key);
    assert_eq!((key[0].item_type, key[0].id), (ItemType::Key, 0));
    assert_eq!(
        key[0].content,
        std::fs::read(pki.path(&profile.files.key.pem)).unwrap()
    );
}

/// The `untrusted-root` chain is fine in itself: trusting the unrelated root instead of
/// the test root makes it verify, so "unknown issuer" is the only thing wrong with it.
#[test]
fn untrusted_root_is_only_untrusted() {
    let pki = pki();
    let mut store = RootCertStore::empty();
    store.add(pki.unrelated_root().unwrap()).unwrap();
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider())
            .build()
            .unwrap();
    let profile = pki.profile("untrusted-root").unwrap();
    let result = verify_server(&*verifier, pki, profile);
    assert_eq!(outcome(result), Expected::Accept);
}

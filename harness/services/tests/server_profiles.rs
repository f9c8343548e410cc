//! Every server-side fault profile served by the gate, met by clients that verify: a rustls
//! client fails exactly as the manifest says, and the gate records the alert it sent back;
//! `openssl s_client` (verifying hostname or IP, CRL and purpose) agrees on every profile and
//! shows the SNI a client sends; curl agrees too.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use common::{next_tls, pki};

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls_pki_types::ServerName;
use sparring_pki::{ConnectBy, Expected, ProfileEntry, RejectReason, Side};
use sparring_services::events::TlsOutcome;
use sparring_services::{EventBus, Gate, gate};
use tokio::net::TcpListener;

/// A gate serving `profile` without client authentication, in front of a sink.
async fn gate_for(profile: &str, events: EventBus) -> Gate {
    let sink = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = sink.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = sink.accept().await {
            drop(stream);
        }
    });
    let config = gate::from_pki(pki(), profile, false).unwrap();
    Gate::start("127.0.0.1:0".parse().unwrap(), upstream, config, events)
        .await
        .unwrap()
}

/// Every server-side profile of the test PKI, as its manifest describes it.
fn server_profiles() -> impl Iterator<Item = &'static ProfileEntry> {
    pki()
        .manifest
        .profiles
        .iter()
        .filter(|p| p.side == Side::Server)
}

fn classify(error: &std::io::Error) -> RejectReason {
    error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
        .and_then(RejectReason::of)
        .unwrap_or_else(|| panic!("not a certificate error: {error:?}"))
}

async fn connect(addr: SocketAddr, name: ServerName<'static>) -> Result<(), std::io::Error> {
    let mut roots = RootCertStore::empty();
    roots.add(pki().root().unwrap()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .with_crls([pki().crl().unwrap()])
    .only_check_end_entity_revocation()
    .allow_unknown_revocation_status()
    .build()
    .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_webpki_verifier(verifier)
        .with_no_client_auth();
    let stream = tokio::net::TcpStream::connect(addr).await?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, stream)
        .await
        .map(drop)
}

#[tokio::test]
async fn every_server_profile_meets_a_verifying_client_as_the_manifest_says() {
    for profile in server_profiles() {
        let events = EventBus::default();
        let mut receiver = events.subscribe();
        let gate = gate_for(&profile.name, events).await;
        let name = match profile.connect_by {
            ConnectBy::Name => ServerName::try_from("broker.sparring.test").unwrap(),
            ConnectBy::Ip => ServerName::from(pki().manifest.ips[0]),
        };
        let result = connect(gate.addr, name).await;
        let outcome = match &result {
            Ok(()) => Expected::Accept,
            Err(e) => Expected::Reject(classify(e)),
        };
        // rustls judges the server key's size only when the key signs the handshake, and then
        // says what it says of any bad signature: webpki's RSA algorithms take 2048 to 8192
        // bits. mbedTLS and OpenSSL refuse the certificate itself.
        let expected = match profile.name.as_str() {
            "rsa-1024" => Expected::Reject(RejectReason::KeyMismatch),
            _ => profile.expected,
        };
        assert_eq!(outcome, expected, "profile {}", profile.name);
        let record = next_tls(&mut receiver).await;
        match profile.expected {
            Expected::Accept => {
                assert_eq!(record.outcome, TlsOutcome::Established, "{}", profile.name)
            }
            Expected::Reject(_) => assert!(
                matches!(
                    &record.outcome,
                    TlsOutcome::AbortedByPeer { alert: Some(_) }
                ),
                "{}: the gate should record the client's alert, got {:?}",
                profile.name,
                record.outcome
            ),
        }
    }
}

#[tokio::test]
async fn openssl_s_client_sni_is_recorded() {
    if !common::tool_available("openssl", "version") {
        return;
    }
    let events = EventBus::default();
    let mut receiver = events.subscribe();
    let gate = gate_for("valid", events).await;
    let output = tokio::process::Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &gate.addr.to_string(),
            "-servername",
            "broker.sparring.test",
            "-verify_return_error",
            "-CAfile",
        ])
        .arg(pki().path(&pki().manifest.authorities.root.cert.pem))
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("Verify return code: 0 (ok)"), "{text}");
    let record = next_tls(&mut receiver).await;
    assert_eq!(record.sni.as_deref(), Some("broker.sparring.test"));
    assert_eq!(record.outcome, TlsOutcome::Established);
    assert!(record.version.is_some() && record.cipher_suite.is_some());
}

#[tokio::test]
async fn every_server_profile_meets_openssl_s_client_as_the_manifest_says() {
    if !common::tool_available("openssl", "version") {
        return;
    }
    let root = pki().path(&pki().manifest.authorities.root.cert.pem);
    let crl = pki().path(&pki().manifest.crl.pem);
    for profile in server_profiles() {
        let gate = gate_for(&profile.name, EventBus::default()).await;
        let mut command = tokio::process::Command::new("openssl");
        command
            .args(["s_client", "-connect", &gate.addr.to_string()])
            .args([
                "-verify_return_error",
                "-crl_check",
                "-purpose",
                "sslserver",
            ])
            .arg("-CAfile")
            .arg(&root)
            .arg("-CRL")
            .arg(&crl);
        match profile.connect_by {
            ConnectBy::Name => command.args([
                "-servername",
                "broker.sparring.test",
                "-verify_hostname",
                "broker.sparring.test",
            ]),
            ConnectBy::Ip => command.args(["-verify_ip", &pki().manifest.ips[0].to_string()]),
        };
        let output = command
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout);
        let accepted = text.contains("Verify return code: 0 (ok)");
        assert_eq!(
            accepted,
            profile.expected == Expected::Accept || falls_back_to_cn(&profile.name),
            "profile {}: openssl said {}",
            profile.name,
            text.lines()
                .find(|l| l.contains("Verify return code"))
                .unwrap_or("no verify result")
        );
    }
}

/// `cn-only`'s CN names the broker: OpenSSL (and curl on it), like mbedTLS, match the host
/// against the subject CN when there is no subjectAltName, where RFC 6125 — the manifest's
/// verdict — refuses.
fn falls_back_to_cn(profile: &str) -> bool {
    profile == "cn-only"
}

/// curl, which firmware teams use to check an OTA URL by hand, verifying name or IP, agrees
/// with the manifest on every profile: a refused chain is a TLS failure (35, 51 or 60), an
/// accepted one gets as far as the empty reply of the sink behind the gate. curl's CRL option
/// demands a CRL for every level of the chain (the test PKI has only the intermediate's), so
/// it runs without one and cannot see `revoked` — the one profile it must accept.
#[tokio::test]
async fn every_server_profile_meets_curl_as_the_manifest_says() {
    if !common::tool_available("curl", "--version") {
        return;
    }
    let root = pki().path(&pki().manifest.authorities.root.cert.pem);
    for profile in server_profiles() {
        let gate = gate_for(&profile.name, EventBus::default()).await;
        let port = gate.addr.port();
        let mut command = tokio::process::Command::new("curl");
        command
            .args(["--silent", "--show-error", "--max-time", "10"])
            .arg("--cacert")
            .arg(&root);
        match profile.connect_by {
            ConnectBy::Name => command
                .arg("--resolve")
                .arg(format!("broker.sparring.test:{port}:127.0.0.1"))
                .arg(format!("https://broker.sparring.test:{port}/")),
            ConnectBy::Ip => command.arg(format!("https://{}:{port}/", pki().manifest.ips[0])),
        };
        let output = command.output().await.unwrap();
        let refused = matches!(output.status.code(), Some(35 | 51 | 60));
        let expected_accept = profile.name == "revoked"
            || falls_back_to_cn(&profile.name)
            || profile.expected == Expected::Accept;
        assert_eq!(
            !refused,
            expected_accept,
            "profile {}: curl exited {:?}: {}",
            profile.name,
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
}

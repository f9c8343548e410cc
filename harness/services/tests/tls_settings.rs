//! The gate's TLS settings as clients meet them: allowed versions (checked with rustls and
//! `openssl s_client`), cipher suites and ALPN, each recorded on the event stream.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::sync::Arc;

use common::{next_tls, pki};
use rustls::RootCertStore;
use sparring_services::events::{RejectReason, TlsOutcome};
use sparring_services::{Gate, GateError, TlsSettings, TlsVersion, gate};
use tokio::sync::broadcast;

async fn gate_with(settings: TlsSettings) -> (Gate, broadcast::Receiver<sparring_services::Event>) {
    common::handshake_gate(settings, None).await
}

/// A verifying rustls client limited to `versions` / `suites`, offering `alpn`.
async fn handshake(
    gate: &Gate,
    versions: &[&'static rustls::SupportedProtocolVersion],
    suites: Option<&[&str]>,
    alpn: &[&str],
) -> Result<(), std::io::Error> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    if let Some(names) = suites {
        provider
            .cipher_suites
            .retain(|s| names.contains(&format!("{:?}", s.suite()).as_str()));
    }
    let mut roots = RootCertStore::empty();
    roots.add(pki().root().unwrap()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    let tcp = tokio::net::TcpStream::connect(gate.addr).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map(drop)
}

#[tokio::test]
async fn only_the_allowed_version_is_negotiated() {
    let (gate, mut events) = gate_with(TlsSettings {
        versions: vec![TlsVersion::Tls12],
        ..TlsSettings::default()
    })
    .await;
    handshake(
        &gate,
        &[&rustls::version::TLS12, &rustls::version::TLS13],
        None,
        &[],
    )
    .await
    .unwrap();
    assert_eq!(
        next_tls(&mut events).await.version.as_deref(),
        Some("TLSv1_2")
    );
    assert!(
        handshake(&gate, &[&rustls::version::TLS13], None, &[])
            .await
            .is_err()
    );
    assert!(matches!(
        next_tls(&mut events).await.outcome,
        TlsOutcome::RejectedByUs {
            reason: RejectReason::NoCommonParameters,
            ..
        }
    ));

    // A client people trust, asking for TLS 1.3 only.
    if !common::tool_available("openssl", "version") {
        return;
    }
    let refused = tokio::process::Command::new("openssl")
        .args(["s_client", "-tls1_3", "-connect", &gate.addr.to_string()])
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    assert!(!refused.status.success(), "{refused:?}");
    let accepted = tokio::process::Command::new("openssl")
        .args(["s_client", "-tls1_2", "-connect", &gate.addr.to_string()])
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&accepted.stdout);
    assert!(
        text.contains("Protocol  : TLSv1.2") || text.contains("TLSv1.2"),
        "{text}"
    );
}

#[tokio::test]
async fn cipher_suites_are_restricted_and_unknown_names_refused() {
    let (gate, mut events) = gate_with(TlsSettings {
        versions: vec![TlsVersion::Tls12],
        cipher_suites: vec!["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256".into()],
        ..TlsSettings::default()
    })
    .await;
    let other = ["TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"];
    assert!(
        handshake(&gate, &[&rustls::version::TLS12], Some(&other), &[])
            .await
            .is_err()
    );
    assert!(matches!(
        next_tls(&mut events).await.outcome,
        TlsOutcome::RejectedByUs {
            reason: RejectReason::NoCommonParameters,
            ..
        }
    ));
    handshake(&gate, &[&rustls::version::TLS12], None, &[])
        .await
        .unwrap();
    assert_eq!(
        next_tls(&mut events).await.cipher_suite.as_deref(),
        Some("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256")
    );

    let mut config = gate::from_pki(pki(), "valid", false).unwrap();
    config.tls.cipher_suites = vec!["TLS_RSA_WITH_RC4_128_MD5".into()];
    let error = common::gate_start_error(config).await;
    assert!(
        matches!(error, GateError::UnknownCipherSuite { .. }),
        "{error}"
    );
    assert!(
        error.to_string().contains("TLS13_AES_128_GCM_SHA256"),
        "{error}"
    );
}

#[tokio::test]
async fn alpn_is_negotiated_or_the_client_refused() {
    let (gate, mut events) = gate_with(TlsSettings {
        alpn: vec!["x-amzn-mqtt-ca".into()],
        ..TlsSettings::default()
    })
    .await;
    let all = [&rustls::version::TLS12, &rustls::version::TLS13];
    handshake(&gate, &all, None, &["mqtt", "x-amzn-mqtt-ca"])
        .await
        .unwrap();
    let agreed = next_tls(&mut events).await;
    assert_eq!(agreed.alpn.as_deref(), Some("x-amzn-mqtt-ca"));
    assert_eq!(agreed.alpn_offered, vec!["mqtt", "x-amzn-mqtt-ca"]);
    assert!(handshake(&gate, &all, None, &["mqtt"]).await.is_err());
    let refused = next_tls(&mut events).await;
    assert!(
        matches!(
            &refused.outcome,
            TlsOutcome::RejectedByUs {
                reason: RejectReason::NoCommonAlpn,
                ..
            }
        ),
        "{refused:?}"
    );
}

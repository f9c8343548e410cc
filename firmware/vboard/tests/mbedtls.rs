//! The virtual module's TLS client judges server certificates as mbedTLS does (Mbed-TLS
//! `library/x509_crt.c`, `library/ssl_tls.c`; ESP-IDF `components/mbedtls/Kconfig`), not as
//! webpki does: the CN fallback without subjectAltName, no revocation check without a CRL,
//! an issuer without the CA bit is no parent (untrusted), the first certificate served is the
//! server's whatever it is, the extendedKeyUsage flag 0x1000, the default certificate profile
//! (no SHA-1 signature, no RSA key under 2048 bits), no ChaCha20 suites offered, and no
//! certificate/key pairing check before the handshake.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use esp_formats::Chip;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sparring_pki::{Options, Pki};
use sparring_vboard::esp_at::tls::{self, ClientSetup, Credentials};
use sparring_vboard::personality::Shared;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

#[derive(Debug)]
struct ServerCert(Arc<rustls::sign::CertifiedKey>);

impl rustls::server::ResolvesServerCert for ServerCert {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// A one-connection TLS 1.2 server presenting `chain`; with `client_ca`, it requires a client
/// certificate from that root.
fn serve(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_ca: Option<CertificateDer<'static>>,
) -> u16 {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap();
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(ca).unwrap();
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                roots.into(),
                provider(),
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    // Unchecked, as the gate serves it: `reversed-chain` puts the intermediate first.
    let key = provider().key_provider.load_private_key(key).unwrap();
    let own = Arc::new(rustls::sign::CertifiedKey::new(chain, key));
    let config = Arc::new(builder.with_cert_resolver(Arc::new(ServerCert(own))));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let (mut tcp, _) = listener.accept().unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut conn = rustls::ServerConnection::new(config).unwrap();
        // Ends with the handshake, or with the alert our refusal sends.
        let _ = conn.complete_io(&mut tcp);
    });
    port
}

/// Connects as the module does; the log lines on failure.
fn connect(pki: &Pki, credentials: &Credentials, port: u16) -> Result<(), Vec<String>> {
    let shared = Arc::new(Shared::new(Chip::Esp32C3));
    shared.set_clock(SystemTime::now());
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let lines = Mutex::new(Vec::new());
    let log = |_: char, tag: &str, message: &str| {
        lines.lock().unwrap().push(format!("{tag}: {message}"));
    };
    let setup = ClientSetup {
        credentials,
        verify_server: true,
        alpn: &[],
        name: &pki.options.hosts[0],
    };
    let result = tls::connect(&shared, tcp, &setup, Duration::from_secs(5), &log);
    result.map(|_| ()).map_err(|_| lines.into_inner().unwrap())
}

fn server(pki: &Pki, profile: &str) -> Result<(), Vec<String>> {
    let material = pki.material(profile).unwrap();
    // rustls cannot load `rsa-1024`'s key (aws-lc-rs takes RSA from 2048 bits), and the module
    // refuses that certificate before the server key signs anything: another key stands in.
    let key = match profile {
        "rsa-1024" => &pki.material("valid").unwrap().key,
        _ => &material.key,
    };
    let port = serve(
        material.chain.clone(),
        PrivateKeyDer::Pkcs8(key.clone_key()),
        None,
    );
    let credentials = Credentials {
        ca: vec![pki.root.cert()],
        client: None,
    };
    connect(pki, &credentials, port)
}

#[test]
fn server_certificates_are_judged_as_mbedtls_judges_them() {
    let pki = Pki::generate(Options::default()).unwrap();
    // The broker's name is the leaves' CN, so `cn-only` tests the CN fallback itself.
    assert_eq!(pki.options.hosts[0], "broker.sparring.test");
    for accepted in ["valid", "cn-only", "revoked"] {
        assert_eq!(server(&pki, accepted), Ok(()), "{accepted}");
    }
    let refused = [
        (
            "not-a-ca",
            "The certificate is not correctly signed by the trusted CA",
        ),
        (
            "reversed-chain",
            "The certificate Common Name (CN) does not match with the expected CN",
        ),
        (
            "wrong-eku",
            "Usage does not match the extendedKeyUsage extension",
        ),
        (
            "intermediate-expired",
            "The certificate validity has expired",
        ),
        (
            "sha1-signature",
            "The certificate is signed with an unacceptable hash.",
        ),
        (
            "rsa-1024",
            "The certificate is signed with an unacceptable key (eg bad curve, RSA too short).",
        ),
    ];
    for (profile, flag) in refused {
        let lines = server(&pki, profile).unwrap_err();
        assert!(
            lines.contains(&"esp-tls-mbedtls: mbedtls_ssl_handshake returned -0x2700".to_owned())
                && lines.contains(&format!("esp-tls-mbedtls: verification info:   ! {flag}")),
            "{profile}: {lines:?}"
        );
    }
}

#[test]
fn a_device_key_that_does_not_match_its_certificate_fails_at_the_broker_not_before() {
    let pki = Pki::generate(Options::default()).unwrap();
    let server = pki.material("valid").unwrap();
    let port = serve(
        server.chain.clone(),
        PrivateKeyDer::Pkcs8(server.key.clone_key()),
        Some(pki.root.cert()),
    );
    let device = pki.material("device-key-mismatch").unwrap();
    let key: PrivatePkcs8KeyDer<'static> = device.key.clone_key();
    let credentials = Credentials {
        ca: vec![pki.root.cert()],
        client: Some((device.chain.clone(), PrivateKeyDer::Pkcs8(key))),
    };
    let lines = connect(&pki, &credentials, port).unwrap_err();
    // The broker's alert (decrypt_error), not a configuration error.
    assert!(
        lines.contains(&"esp-tls-mbedtls: mbedtls_ssl_handshake returned -0x7780".to_owned()),
        "{lines:?}"
    );
}

#[test]
fn the_client_hello_offers_no_chacha20_suites() {
    let shared = Arc::new(Shared::new(Chip::Esp32C3));
    let credentials = Credentials {
        ca: Vec::new(),
        client: None,
    };
    let config = tls::client_config(&shared, &credentials, false, &[]).unwrap();
    let suites: Vec<String> = config
        .crypto_provider()
        .cipher_suites
        .iter()
        .map(|s| format!("{:?}", s.suite()))
        .collect();
    assert!(!suites.is_empty());
    assert!(suites.iter().all(|s| !s.contains("CHACHA20")), "{suites:?}");
}

#[test]
fn the_client_hello_offers_the_cbc_sha_suites_mbedtls_offers() {
    let shared = Arc::new(Shared::new(Chip::Esp32C3));
    let credentials = Credentials {
        ca: Vec::new(),
        client: None,
    };
    let config = tls::client_config(&shared, &credentials, false, &[]).unwrap();
    let suites: Vec<rustls::CipherSuite> = config
        .crypto_provider()
        .cipher_suites
        .iter()
        .map(|s| s.suite())
        .collect();
    for cbc in [
        rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA,
        rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA,
    ] {
        assert!(suites.contains(&cbc), "{suites:?}");
    }
}

/// A TLS 1.0 server's ServerHello (Mbed-TLS `library/ssl_tls12_client.c`,
/// `ssl_parse_server_hello`): "server version out of bounds", a fatal protocol_version alert,
/// MBEDTLS_ERR_SSL_BAD_PROTOCOL_VERSION.
#[test]
fn a_tls10_server_hello_is_refused_with_protocol_version() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut tcp, _) = listener.accept().unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut header = [0u8; 5];
        tcp.read_exact(&mut header).unwrap();
        let mut hello = vec![0u8; usize::from(u16::from_be_bytes([header[3], header[4]]))];
        tcp.read_exact(&mut hello).unwrap();
        // Record (handshake, TLS 1.0, 42 bytes), ServerHello (38 bytes): version 3.1, a
        // random, no session id, TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, null compression.
        let mut answer = vec![22, 3, 1, 0, 42, 2, 0, 0, 38, 3, 1];
        answer.extend_from_slice(&[0x5a; 32]);
        answer.extend_from_slice(&[0, 0xc0, 0x09, 0]);
        tcp.write_all(&answer).unwrap();
        let mut alert = [0u8; 7];
        tcp.read_exact(&mut alert).unwrap();
        alert
    });
    let shared = Arc::new(Shared::new(Chip::Esp32C3));
    let credentials = Credentials {
        ca: Vec::new(),
        client: None,
    };
    let setup = ClientSetup {
        credentials: &credentials,
        verify_server: false,
        alpn: &[],
        name: "broker.sparring.test",
    };
    let lines = Mutex::new(Vec::new());
    let log = |_: char, tag: &str, message: &str| {
        lines.lock().unwrap().push(format!("{tag}: {message}"));
    };
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    assert!(tls::connect(&shared, tcp, &setup, Duration::from_secs(5), &log).is_err());
    let lines = lines.into_inner().unwrap();
    assert_eq!(
        lines,
        [
            "esp-tls-mbedtls: mbedtls_ssl_handshake returned -0x6E80",
            "esp-tls: Failed to open new connection"
        ],
    );
    let alert = server.join().unwrap();
    // An alert record whose fragment is fatal (2) protocol_version (70).
    assert_eq!((alert[0], alert[5], alert[6]), (21, 2, 70), "{alert:?}");
}

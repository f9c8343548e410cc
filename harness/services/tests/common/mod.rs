//! One generated PKI per test binary, the broker behind its gate, rumqttc clients over mutual
//! TLS, and waiting for the next TLS record on the event stream.
#![allow(dead_code)] // each test binary uses its own part of this module

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rumqttc::{MqttOptions, TlsConfiguration, Transport};
use rustls::RootCertStore;
use sparring_services::{EventBus, MqttService, gate};

use sparring_pki::{Options, PkiDir, TempPki};
use sparring_services::events::TlsRecord;
use sparring_services::{Event, EventKind};
use tokio::sync::broadcast;

pub fn pki() -> &'static PkiDir {
    static PKI: OnceLock<TempPki> = OnceLock::new();
    let options = Options {
        key_cache: Some(PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("key-cache")),
        ..Options::default()
    };
    &PKI.get_or_init(|| TempPki::generate(options).expect("generate the test PKI"))
        .pki
}

/// A gate with the test PKI's `valid` server profile, no client certificates and `settings`,
/// nothing listening upstream (for tests that end at the handshake), and its event stream.
pub async fn handshake_gate(
    settings: sparring_services::TlsSettings,
    handshake_timeout: Option<Duration>,
) -> (sparring_services::Gate, broadcast::Receiver<Event>) {
    let mut config = gate::from_pki(pki(), "valid", false).expect("the valid profile");
    config.tls = settings;
    if let Some(timeout) = handshake_timeout {
        config.handshake_timeout = timeout;
    }
    let events = EventBus::default();
    let receiver = events.subscribe();
    let upstream = SocketAddr::from(([127, 0, 0, 1], 9));
    let gate = sparring_services::Gate::start(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        upstream,
        config,
        events,
    )
    .await
    .expect("the gate starts");
    (gate, receiver)
}

/// Why the gate refuses to start with `config` (a setting it cannot serve).
pub async fn gate_start_error(config: gate::GateConfig) -> sparring_services::GateError {
    sparring_services::Gate::start(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        SocketAddr::from(([127, 0, 0, 1], 9)),
        config,
        EventBus::default(),
    )
    .await
    .err()
    .expect("the gate refuses this configuration")
}

/// The next TLS record from the stream (bounded wait).
pub async fn next_tls(events: &mut broadcast::Receiver<Event>) -> TlsRecord {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let EventKind::Tls(record) = events.recv().await.expect("event stream open").kind {
                return record;
            }
        }
    })
    .await
    .expect("a TLS event within 10 s")
}

pub async fn start() -> (MqttService, broadcast::Receiver<Event>) {
    start_with(gate::from_pki(pki(), "valid", true).unwrap()).await
}

pub async fn start_with(config: gate::GateConfig) -> (MqttService, broadcast::Receiver<Event>) {
    let events = EventBus::default();
    let receiver = events.subscribe();
    let service = MqttService::start("127.0.0.1:0".parse().unwrap(), config, events)
        .await
        .unwrap();
    (service, receiver)
}

pub fn client_config(device: Option<&str>) -> Arc<rustls::ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(pki().root().unwrap()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    Arc::new(match device {
        Some(profile) => builder
            .with_client_auth_cert(pki().chain(profile).unwrap(), pki().key(profile).unwrap())
            .unwrap(),
        None => builder.with_no_client_auth(),
    })
}

pub fn mqtt_options(id: &str, addr: SocketAddr, device: Option<&str>) -> MqttOptions {
    let mut options = MqttOptions::new(id, "localhost", addr.port());
    options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
        client_config(device),
    )));
    options.set_keep_alive(Duration::from_secs(30));
    options
}

/// Whether a real peer (`openssl`, `curl`, `mosquitto_pub`, ...) is installed. Under CI
/// (`.ci/run` installs them) a missing one fails the test instead of skipping it.
pub fn tool_available(program: &str, probe: &str) -> bool {
    let found = std::process::Command::new(program)
        .arg(probe)
        .output()
        .is_ok();
    assert!(
        found || std::env::var_os("CI").is_none(),
        "{program} is required under CI (.ci/run installs it)"
    );
    if !found {
        eprintln!("skipped: {program} not installed");
    }
    found
}

/// The next packet the broker sent this client that `wanted` picks (bounded wait).
pub async fn next_incoming<T>(
    eventloop: &mut rumqttc::EventLoop,
    wanted: impl Fn(rumqttc::Packet) -> Option<T>,
) -> T {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let rumqttc::Event::Incoming(packet) = eventloop.poll().await.expect("connected")
                && let Some(found) = wanted(packet)
            {
                return found;
            }
        }
    })
    .await
    .expect("the packet within 10 s")
}

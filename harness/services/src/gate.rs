//! sparring's TLS gate: terminates TLS for the broker and the OTA server, records everything
//! the handshake showed, refuses devices precisely, and hands the plaintext to the MQTT proxy
//! (`mqtt_proxy`), which forwards it.
//!
//! rumqttd's own TLS awaits each handshake inside its accept loop (one silent client blocks
//! everybody), trusts one CA, has no CRLs and never exposes the client CN; so TLS ends here,
//! one task per connection with a handshake timeout.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::server::{Acceptor, WebPkiClientVerifier};
use rustls::{CertificateError, RootCertStore, ServerConfig};
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use sparring_pki::CertSummary;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::LazyConfigAcceptor;

use crate::events::{EventBus, EventKind, RejectReason, TlsOutcome, TlsRecord};
use crate::legacy_tls::{self, LegacyVersions};
use crate::mqtt_proxy::{self, BrokerBehaviour, Connection, ProxyShared, Upstreams};
use crate::small_rsa::SmallRsaKey;

/// Whether and how devices must present a certificate.
#[derive(Debug, Clone)]
pub enum ClientAuth {
    /// Mutual TLS: a certificate chaining to `roots`, not revoked by `crls`.
    Required {
        roots: Vec<CertificateDer<'static>>,
        crls: Vec<CertificateRevocationListDer<'static>>,
    },
    /// A device may present no certificate; one it does present must verify as for `Required`.
    Optional {
        roots: Vec<CertificateDer<'static>>,
        crls: Vec<CertificateRevocationListDer<'static>>,
    },
    None,
}

/// One listener's TLS configuration.
#[derive(Debug)]
pub struct GateConfig {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    pub client_auth: ClientAuth,
    pub handshake_timeout: Duration,
    /// Service name in events ("mqtt").
    pub service: String,
    /// Allowed versions, cipher suites and ALPN protocols.
    pub tls: TlsSettings,
    /// What flows through once TLS is up.
    pub protocol: Protocol,
    /// rumqttd's MQTT 5 listener, for devices whose CONNECT says MQTT 5 (the gate's upstream
    /// is the MQTT 3.1.1 one).
    pub mqtt5_upstream: Option<SocketAddr>,
    /// Faults and policy of the broker behind the gate (MQTT only).
    pub broker: BrokerBehaviour,
}

/// A TLS protocol version, as configuration files spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TlsVersion {
    /// Served by [`crate::legacy_tls`] up to its ServerHello (rustls has no TLS 1.0/1.1).
    #[serde(rename = "1.0")]
    Tls10,
    #[serde(rename = "1.1")]
    Tls11,
    #[serde(rename = "1.2")]
    Tls12,
    #[serde(rename = "1.3")]
    Tls13,
}

/// What the server side of the handshake allows (defaults: TLS 1.2 and 1.3, rustls's cipher
/// suites, no ALPN).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct TlsSettings {
    /// `["1.2"]` refuses TLS 1.3 clients and the reverse; empty allows both. `["1.0"]` or
    /// `["1.1"]` (not mixed with the others): an old server that ends after its ServerHello.
    pub versions: Vec<TlsVersion>,
    /// Cipher suites by rustls's names (`TLS13_AES_128_GCM_SHA256`,
    /// `TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256`, ...); empty allows rustls's defaults.
    pub cipher_suites: Vec<String>,
    /// ALPN protocols accepted (`["mqtt"]`, AWS's `["x-amzn-mqtt-ca"]`); a client offering
    /// only others is refused with `no_application_protocol`. Empty: no ALPN.
    pub alpn: Vec<String>,
}

/// What the gate forwards: MQTT is cut into packets (each recorded, broker faults applied);
/// anything else (HTTP to the OTA server) is copied as it comes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Mqtt,
    Raw,
}

#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("client verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("unknown cipher suite {name:?}; rustls knows {known}")]
    UnknownCipherSuite { name: String, known: String },
    #[error(transparent)]
    MixedVersions(#[from] legacy_tls::MixedVersions),
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Builds the rustls server side. The certified key is assembled by hand rather than with
/// `with_single_cert`, which refuses chains whose first certificate does not match the key —
/// exactly what the `reversed-chain` fault profile must be able to serve — and with an RSA key
/// too small for rustls's loader (`rsa-1024`) signed by [`SmallRsaKey`].
fn server_config(config: &GateConfig) -> Result<Arc<ServerConfig>, GateError> {
    let settings = &config.tls;
    let mut suites = rustls::crypto::aws_lc_rs::default_provider();
    if !settings.cipher_suites.is_empty() {
        let name = |s: &rustls::SupportedCipherSuite| format!("{:?}", s.suite());
        let known: Vec<String> = suites.cipher_suites.iter().map(name).collect();
        if let Some(unknown) = settings
            .cipher_suites
            .iter()
            .find(|wanted| !known.contains(wanted))
        {
            return Err(GateError::UnknownCipherSuite {
                name: unknown.clone(),
                known: known.join(", "),
            });
        }
        suites
            .cipher_suites
            .retain(|s| settings.cipher_suites.contains(&name(s)));
    }
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = if settings.versions.is_empty() {
        rustls::DEFAULT_VERSIONS.to_vec()
    } else {
        settings
            .versions
            .iter()
            .filter_map(|v| match v {
                TlsVersion::Tls12 => Some(&rustls::version::TLS12),
                TlsVersion::Tls13 => Some(&rustls::version::TLS13),
                // Never mixed with the above: `Gate::start` hands those to `legacy_tls`.
                TlsVersion::Tls10 | TlsVersion::Tls11 => None,
            })
            .collect()
    };
    let builder =
        ServerConfig::builder_with_provider(Arc::new(suites)).with_protocol_versions(&versions)?;
    let builder = match &config.client_auth {
        ClientAuth::Required { roots, crls } | ClientAuth::Optional { roots, crls } => {
            let mut store = RootCertStore::empty();
            for root in roots {
                store.add(root.clone())?;
            }
            let mut verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider());
            if !crls.is_empty() {
                verifier = verifier
                    .with_crls(crls.clone())
                    .only_check_end_entity_revocation()
                    .allow_unknown_revocation_status();
            }
            if matches!(config.client_auth, ClientAuth::Optional { .. }) {
                verifier = verifier.allow_unauthenticated();
            }
            builder.with_client_cert_verifier(verifier.build()?)
        }
        ClientAuth::None => builder.with_no_client_auth(),
    };
    let signing_key = match provider()
        .key_provider
        .load_private_key(config.key.clone_key())
    {
        Ok(key) => key,
        Err(refused) => match SmallRsaKey::from_der(&config.key) {
            Some(small) => Arc::new(small),
            None => return Err(refused.into()),
        },
    };
    let certified = Arc::new(rustls::sign::CertifiedKey::new(
        config.chain.clone(),
        signing_key,
    ));
    let mut server = builder.with_cert_resolver(Arc::new(FixedCert(certified)));
    server.alpn_protocols = settings
        .alpn
        .iter()
        .map(|p| p.as_bytes().to_vec())
        .collect();
    Ok(Arc::new(server))
}

/// Serves the same chain to every client, whatever it is.
#[derive(Debug)]
struct FixedCert(Arc<rustls::sign::CertifiedKey>);

impl rustls::server::ResolvesServerCert for FixedCert {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// What speaks TLS on a listener: rustls, or for TLS 1.0/1.1 sparring's own old server.
#[derive(Clone)]
enum Handshaker {
    Rustls(Arc<ServerConfig>),
    Legacy(Arc<LegacyVersions>),
}

/// A running gate: accepts TLS on `addr`, forwards plaintext to `upstream`.
pub struct Gate {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Gate {
    pub async fn start(
        bind: SocketAddr,
        upstream: SocketAddr,
        config: GateConfig,
        events: EventBus,
    ) -> Result<Gate, GateError> {
        let handshaker = match LegacyVersions::from_settings(&config.tls.versions)? {
            Some(versions) => Handshaker::Legacy(Arc::new(versions)),
            None => Handshaker::Rustls(server_config(&config)?),
        };
        let listener = TcpListener::bind(bind)
            .await
            .map_err(|source| GateError::Bind { addr: bind, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| GateError::Bind { addr: bind, source })?;
        let proxy = Arc::new(ProxyShared::new(config.broker.clone()));
        let config = Arc::new(config);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    continue;
                };
                let (handshaker, config, events) =
                    (handshaker.clone(), config.clone(), events.clone());
                let proxy = proxy.clone();
                tokio::spawn(async move {
                    match handshaker {
                        Handshaker::Rustls(tls) => {
                            serve(stream, peer, upstream, tls, &config, &events, &proxy).await
                        }
                        Handshaker::Legacy(versions) => {
                            legacy_tls::serve(stream, peer, &versions, &config, &events).await
                        }
                    }
                });
            }
        });
        Ok(Gate { addr, task })
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    upstream: SocketAddr,
    tls: Arc<ServerConfig>,
    config: &GateConfig,
    events: &EventBus,
    proxy_shared: &ProxyShared,
) {
    let started = Instant::now();
    let mut record = TlsRecord::awaiting_handshake();
    let handshake = async {
        let start = LazyConfigAcceptor::new(Acceptor::default(), stream).await?;
        let hello = start.client_hello();
        record.sni = hello.server_name().map(str::to_owned);
        record.alpn_offered = hello
            .alpn()
            .map(|a| a.map(|p| String::from_utf8_lossy(p).into_owned()).collect())
            .unwrap_or_default();
        record.cipher_suites_offered = hello
            .cipher_suites()
            .iter()
            .map(|s| format!("{s:?}"))
            .collect();
        record.versions_offered = versions_offered(&record.cipher_suites_offered);
        start.into_stream(tls).await
    };
    let result = tokio::time::timeout(config.handshake_timeout, handshake).await;
    record.duration_ms = started.elapsed().as_millis() as u64;
    let tls_stream = match result {
        Err(_) => {
            events.emit(&config.service, peer, EventKind::Tls(record));
            return;
        }
        Ok(Err(error)) => {
            record.outcome = classify(&error);
            events.emit(&config.service, peer, EventKind::Tls(record));
            return;
        }
        Ok(Ok(stream)) => stream,
    };
    let (_, session) = tls_stream.get_ref();
    record.version = session.protocol_version().map(|v| format!("{v:?}"));
    record.cipher_suite = session
        .negotiated_cipher_suite()
        .map(|s| format!("{:?}", s.suite()));
    record.alpn = session
        .alpn_protocol()
        .map(|p| String::from_utf8_lossy(p).into_owned());
    if let Some(summary) = session
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|c| CertSummary::from_der(c).ok())
    {
        record.client_cn = summary.common_name().map(str::to_owned);
        record.client_issuer = Some(summary.issuer.clone());
        record.client_serial = Some(summary.serial.clone());
    }
    record.outcome = TlsOutcome::Established;
    let client_cn = record.client_cn.clone();
    events.emit(&config.service, peer, EventKind::Tls(record));
    if config.protocol == Protocol::Raw {
        let Ok(mut upstream) = TcpStream::connect(upstream).await else {
            return;
        };
        let mut tls_stream = tls_stream;
        let _ = tokio::io::copy_bidirectional(&mut tls_stream, &mut upstream).await;
        return;
    }
    let connection = Connection {
        peer,
        service: &config.service,
        client_cn,
        events,
        shared: proxy_shared,
    };
    let upstreams = Upstreams {
        v4: upstream,
        v5: config.mqtt5_upstream,
    };
    mqtt_proxy::proxy(tls_stream, upstreams, connection).await;
}

/// The versions a ClientHello can negotiate, inferred from its cipher suites: TLS 1.3 suites
/// work only in 1.3 and a 1.3 client must offer one; the others only up to 1.2. (rustls does
/// not expose the `supported_versions` extension itself.)
fn versions_offered(suites: &[String]) -> Vec<String> {
    let tls13 = suites.iter().any(|s| s.starts_with("TLS13_"));
    let tls12 = suites
        .iter()
        .any(|s| !s.starts_with("TLS13_") && !s.ends_with("_SCSV"));
    [(tls12, "TLSv1_2"), (tls13, "TLSv1_3")]
        .into_iter()
        .filter(|(offered, _)| *offered)
        .map(|(_, name)| name.to_owned())
        .collect()
}

fn classify(error: &std::io::Error) -> TlsOutcome {
    let rejected = |reason, detail: String| TlsOutcome::RejectedByUs { reason, detail };
    match error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::AlertReceived(alert)) => TlsOutcome::AbortedByPeer {
            alert: Some(format!("{alert:?}")),
        },
        Some(rustls::Error::NoCertificatesPresented) => rejected(
            RejectReason::ClientCertMissing,
            "no client certificate".into(),
        ),
        Some(rustls::Error::InvalidCertificate(e)) => {
            let reason = match e {
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    RejectReason::ClientCertExpired
                }
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    RejectReason::ClientCertNotYetValid
                }
                CertificateError::UnknownIssuer => RejectReason::UnknownIssuer,
                CertificateError::Revoked => RejectReason::Revoked,
                CertificateError::BadSignature => RejectReason::BadSignature,
                _ => RejectReason::Other,
            };
            rejected(reason, format!("{e:?}"))
        }
        Some(rustls::Error::NoApplicationProtocol) => {
            rejected(RejectReason::NoCommonAlpn, error.to_string())
        }
        Some(rustls::Error::PeerIncompatible(e)) => {
            rejected(RejectReason::NoCommonParameters, format!("{e:?}"))
        }
        Some(rustls::Error::InvalidMessage(_)) | Some(rustls::Error::PeerMisbehaved(_)) => {
            rejected(RejectReason::Other, error.to_string())
        }
        Some(other) => rejected(RejectReason::Other, other.to_string()),
        None if error.kind() == std::io::ErrorKind::UnexpectedEof => {
            TlsOutcome::AbortedByPeer { alert: None }
        }
        None => TlsOutcome::AbortedByPeer { alert: None },
    }
}

/// Certificates as the gate needs them, from a generated PKI directory.
pub fn from_pki(
    pki: &sparring_pki::PkiDir,
    profile: &str,
    mutual: bool,
) -> Result<GateConfig, sparring_pki::PkiError> {
    let client_auth = if mutual {
        ClientAuth::Required {
            roots: vec![pki.root()?],
            crls: vec![pki.crl()?],
        }
    } else {
        ClientAuth::None
    };
    Ok(GateConfig {
        chain: pki.chain(profile)?,
        key: pki.key(profile)?,
        client_auth,
        handshake_timeout: Duration::from_secs(10),
        service: "mqtt".to_owned(),
        tls: TlsSettings::default(),
        protocol: Protocol::Mqtt,
        mqtt5_upstream: None,
        broker: BrokerBehaviour::default(),
    })
}

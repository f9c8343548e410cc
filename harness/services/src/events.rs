//! What the services observed, as typed, timestamped events on one stream: the scenario
//! engine's input and, serialised as JSON lines, a file a human can read.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::sync::broadcast;

/// One observation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Which listener saw it ("mqtt", "ota").
    pub service: String,
    pub peer: SocketAddr,
    #[serde(flatten)]
    pub kind: EventKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EventKind {
    /// A TLS handshake finished, one way or another.
    Tls(TlsRecord),
    /// An MQTT packet passed the gate.
    Mqtt(MqttRecord),
    /// An SNTP request arrived.
    Sntp(SntpRecord),
    /// An HTTP request to the OTA server was answered.
    Http(HttpRecord),
}

/// What a TLS handshake showed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TlsRecord {
    /// SNI the device sent (`None`: it sent none, as boards reaching a broker by IP do).
    pub sni: Option<String>,
    pub alpn_offered: Vec<String>,
    pub cipher_suites_offered: Vec<String>,
    /// `TLSv1_2`, `TLSv1_3`: what the ClientHello can negotiate.
    #[serde(default)]
    pub versions_offered: Vec<String>,
    pub version: Option<String>,
    pub cipher_suite: Option<String>,
    /// The ALPN protocol agreed on, if any.
    #[serde(default)]
    pub alpn: Option<String>,
    /// The device's certificate, when it presented one.
    pub client_cn: Option<String>,
    pub client_issuer: Option<String>,
    pub client_serial: Option<String>,
    pub outcome: TlsOutcome,
    pub duration_ms: u64,
}

impl TlsRecord {
    /// Nothing seen yet: a connection that never completes its ClientHello stays a timeout.
    pub fn awaiting_handshake() -> TlsRecord {
        TlsRecord {
            sni: None,
            alpn_offered: Vec::new(),
            cipher_suites_offered: Vec::new(),
            versions_offered: Vec::new(),
            version: None,
            cipher_suite: None,
            alpn: None,
            client_cn: None,
            client_issuer: None,
            client_serial: None,
            outcome: TlsOutcome::HandshakeTimeout,
            duration_ms: 0,
        }
    }
}

/// How a handshake ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum TlsOutcome {
    Established,
    /// sparring refused the device.
    RejectedByUs {
        reason: RejectReason,
        detail: String,
    },
    /// The device gave up: with the TLS alert it sent, or `None` when it just closed
    /// (Device Advisor counts a close without alert as a warning).
    AbortedByPeer {
        alert: Option<String>,
    },
    HandshakeTimeout,
}

/// Why sparring refused a device's certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RejectReason {
    ClientCertMissing,
    ClientCertExpired,
    ClientCertNotYetValid,
    UnknownIssuer,
    Revoked,
    BadSignature,
    /// The device offered ALPN protocols, none of them one the gate accepts.
    NoCommonAlpn,
    /// No protocol version or cipher suite in common.
    NoCommonParameters,
    Other,
}

/// One MQTT packet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MqttRecord {
    pub direction: Direction,
    /// CONNECT, PUBLISH, SUBSCRIBE, ...
    pub packet: String,
    pub client_id: Option<String>,
    pub topic: Option<String>,
    pub qos: Option<u8>,
    pub payload_size: Option<usize>,
    pub packet_id: Option<u16>,
    pub keep_alive: Option<u16>,
    pub clean_session: Option<bool>,
    pub username: Option<String>,
    /// CONNECT: the topic of the last will, when the device set one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub will_topic: Option<String>,
    /// PUBLISH: the DUP flag (a QoS 1 retransmission) and the RETAIN flag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dup: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retain: Option<bool>,
    /// CONNACK's return code (`Success`, `ServiceUnavailable`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub return_code: Option<String>,
    /// A fault the broker side applied: `withheld`, `delayed`, `refused`,
    /// `disconnect-after-ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<String>,
    /// CONNECT: `3.1.1` or `5`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    FromDevice,
    ToDevice,
}

/// What one SNTP request looked like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SntpRecord {
    pub answered: bool,
    pub skew_seconds: i64,
}

/// One HTTP request and how it was answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpRecord {
    pub method: String,
    pub path: String,
    pub user_agent: Option<String>,
    pub range: Option<String>,
    pub status: u16,
    pub content_length: Option<u64>,
    pub bytes_sent: u64,
    pub body_complete: bool,
}

/// The stream every service publishes to; subscribe before the device acts.
#[derive(Debug, Clone)]
pub struct EventBus {
    sender: broadcast::Sender<Event>,
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus {
            sender: broadcast::channel(4096).0,
        }
    }
}

impl EventBus {
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.sender.subscribe()
    }

    pub fn emit(&self, service: &str, peer: SocketAddr, kind: EventKind) {
        let event = Event {
            at: OffsetDateTime::now_utc(),
            service: service.to_owned(),
            peer,
            kind,
        };
        tracing::debug!(?event, "service event");
        // No subscriber is fine: nobody is watching this run.
        let _ = self.sender.send(event);
    }
}

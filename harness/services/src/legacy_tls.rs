//! A TLS 1.0-only or TLS 1.1-only server, as far as its ServerHello.
//!
//! Hand-written because rustls, the project's only TLS library, has no TLS 1.0 or 1.1 at all.
//! It does not need to go further: a client that refuses those versions (mbedTLS 3.x as ESP-IDF
//! builds it, OpenSSL's defaults, curl) aborts as soon as it reads a ServerHello choosing one.
//! So the listener reads the ClientHello (RFC 5246 §6.2 records, §7.4 handshake framing),
//! records what the client offered, answers as an old server does (RFC 2246 / RFC 4346 §7.4.1.3:
//! the highest version it supports not above the client's, a suite the client offered) and
//! records the client's alert or close. It sends no Certificate: a client that accepts the old
//! version waits for one until the listener's handshake timeout closes the connection.

use std::net::SocketAddr;
use std::time::Instant;

use rustls::{AlertDescription, CipherSuite, ProtocolVersion};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::events::{EventBus, EventKind, RejectReason, TlsOutcome, TlsRecord};
use crate::gate::{GateConfig, TlsVersion};

/// The TLS 1.0/1.1 versions a listener allows, highest last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyVersions(Vec<u16>);

/// `1.0`/`1.1` mixed with `1.2`/`1.3`: one listener is either rustls or this module, and which
/// one must be known before the ClientHello is read.
#[derive(Debug, thiserror::Error)]
#[error("TLS 1.0/1.1 cannot share a listener with TLS 1.2/1.3 (rustls serves only the latter)")]
pub struct MixedVersions;

impl LegacyVersions {
    /// `Some` when `versions` names only TLS 1.0 and/or 1.1.
    pub fn from_settings(versions: &[TlsVersion]) -> Result<Option<Self>, MixedVersions> {
        let mut legacy: Vec<u16> = versions
            .iter()
            .filter_map(|v| match v {
                TlsVersion::Tls10 => Some(TLS10),
                TlsVersion::Tls11 => Some(TLS11),
                TlsVersion::Tls12 | TlsVersion::Tls13 => None,
            })
            .collect();
        if legacy.is_empty() {
            return Ok(None);
        }
        if legacy.len() != versions.len() {
            return Err(MixedVersions);
        }
        legacy.sort_unstable();
        legacy.dedup();
        Ok(Some(LegacyVersions(legacy)))
    }

    /// RFC 2246 §E.1 / RFC 4346 §E.1: the highest version both support.
    fn choose(&self, client_version: u16) -> Option<u16> {
        self.0.iter().rev().copied().find(|v| *v <= client_version)
    }
}

const TLS10: u16 = 0x0301;
const TLS11: u16 = 0x0302;

// Record content types and handshake message types (RFC 5246 §6.2.1, §7.4).
const CONTENT_ALERT: u8 = 21;
const CONTENT_HANDSHAKE: u8 = 22;
const CLIENT_HELLO: u8 = 1;
const SERVER_HELLO: u8 = 2;
// Extension numbers: server_name (RFC 6066), ALPN (RFC 7301), supported_versions (RFC 8446).
const EXT_SERVER_NAME: u16 = 0;
const EXT_ALPN: u16 = 16;
const EXT_SUPPORTED_VERSIONS: u16 = 43;
// Secure renegotiation (RFC 5746): the extension, and the suite value a client may signal it with.
const EXT_RENEGOTIATION_INFO: u16 = 0xff01;
const EMPTY_RENEGOTIATION_INFO_SCSV: u16 = 0x00ff;

/// RFC 5246 §6.2.1: a plaintext record carries at most 2^14 bytes.
const MAX_FRAGMENT: usize = 1 << 14;
/// Bytes read from a client in all (real ClientHellos are well under 2 KiB).
const MAX_READ: usize = 1 << 16;

/// Suites a TLS 1.0/1.1 server can choose, in its order of preference: those the old versions
/// define (RFC 2246, RFC 4492 ECDHE, RFC 3268 AES). GCM and SHA-256/384 suites exist only
/// from TLS 1.2 on (RFC 5246 §A.5, RFC 5288, RFC 5289).
const LEGACY_SUITES: [CipherSuite; 9] = [
    CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA,
    CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA,
    CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA,
    CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA,
    CipherSuite::TLS_DHE_RSA_WITH_AES_128_CBC_SHA,
    CipherSuite::TLS_DHE_RSA_WITH_AES_256_CBC_SHA,
    CipherSuite::TLS_RSA_WITH_AES_128_CBC_SHA,
    CipherSuite::TLS_RSA_WITH_AES_256_CBC_SHA,
    CipherSuite::TLS_RSA_WITH_3DES_EDE_CBC_SHA,
];

/// What a ClientHello offered.
#[derive(Debug, Default)]
struct ClientHello {
    client_version: u16,
    cipher_suites: Vec<CipherSuite>,
    sni: Option<String>,
    alpn: Vec<String>,
    /// The supported_versions extension (TLS 1.3 clients), GREASE values left out.
    supported_versions: Vec<u16>,
    /// RFC 5746 signalled (extension or SCSV): the ServerHello must carry renegotiation_info.
    secure_renegotiation: bool,
}

/// Why the exchange stopped short of the client's answer.
#[derive(Debug)]
enum Stop {
    /// The client closed, reset or sent an alert.
    Peer(Option<String>),
    /// The listener refused (and said so with `alert`, when there is one).
    Refused {
        reason: RejectReason,
        detail: String,
        alert: Option<AlertDescription>,
    },
}

impl From<std::io::Error> for Stop {
    fn from(_: std::io::Error) -> Self {
        Stop::Peer(None)
    }
}

/// Serves one connection and emits its TLS event.
pub async fn serve(
    mut stream: TcpStream,
    peer: SocketAddr,
    versions: &LegacyVersions,
    config: &GateConfig,
    events: &EventBus,
) {
    let started = Instant::now();
    let mut record = TlsRecord::awaiting_handshake();
    let exchange = exchange(&mut stream, versions, &mut record);
    let result = tokio::time::timeout(config.handshake_timeout, exchange).await;
    record.outcome = match result {
        Err(_) => TlsOutcome::HandshakeTimeout,
        Ok(Stop::Peer(alert)) => TlsOutcome::AbortedByPeer { alert },
        Ok(Stop::Refused {
            reason,
            detail,
            alert,
        }) => {
            if let Some(alert) = alert {
                let _ = stream.write_all(&alert_record(alert)).await;
            }
            TlsOutcome::RejectedByUs { reason, detail }
        }
    };
    record.duration_ms = started.elapsed().as_millis() as u64;
    events.emit(&config.service, peer, EventKind::Tls(record));
}

/// ClientHello in, ServerHello out, the client's answer in; `record` filled on the way.
async fn exchange(
    stream: &mut (impl AsyncRead + AsyncWrite + Unpin),
    versions: &LegacyVersions,
    record: &mut TlsRecord,
) -> Stop {
    let mut budget = MAX_READ;
    let hello = match read_client_hello(stream, &mut budget).await {
        Ok(hello) => hello,
        Err(stop) => return stop,
    };
    record.sni = hello.sni.clone();
    record.alpn_offered = hello.alpn.clone();
    record.cipher_suites_offered = hello
        .cipher_suites
        .iter()
        .map(|s| format!("{s:?}"))
        .collect();
    let offered = if hello.supported_versions.is_empty() {
        vec![hello.client_version]
    } else {
        hello.supported_versions.clone()
    };
    record.versions_offered = offered
        .iter()
        .map(|v| format!("{:?}", ProtocolVersion::from(*v)))
        .collect();

    // A supported_versions extension is TLS 1.3's; an old server ignores it (RFC 8446 §4.2.1).
    let Some(version) = versions.choose(hello.client_version) else {
        return Stop::Refused {
            reason: RejectReason::NoCommonParameters,
            detail: format!(
                "client offers at most {:?}",
                ProtocolVersion::from(hello.client_version)
            ),
            alert: Some(AlertDescription::ProtocolVersion),
        };
    };
    let Some(suite) = LEGACY_SUITES
        .into_iter()
        .find(|s| hello.cipher_suites.contains(s))
    else {
        return Stop::Refused {
            reason: RejectReason::NoCommonParameters,
            detail: "no TLS 1.0/1.1 cipher suite offered".into(),
            alert: Some(AlertDescription::HandshakeFailure),
        };
    };
    let hello = match server_hello(version, suite, hello.secure_renegotiation) {
        Ok(hello) => hello,
        Err(detail) => {
            return Stop::Refused {
                reason: RejectReason::Other,
                detail,
                alert: Some(AlertDescription::InternalError),
            };
        }
    };
    if let Err(stop) = stream.write_all(&hello).await {
        return stop.into();
    }
    // The client's verdict on the version: an alert, a close, or (a client that accepts it)
    // silence until the handshake timeout.
    loop {
        match read_record(stream, &mut budget).await {
            Ok((CONTENT_ALERT, body)) if body.len() >= 2 => {
                return Stop::Peer(Some(format!("{:?}", AlertDescription::from(body[1]))));
            }
            Ok(_) => continue,
            Err(stop) => return stop,
        }
    }
}

/// Reads handshake records until one ClientHello message is complete (it may span records).
async fn read_client_hello(
    stream: &mut (impl AsyncRead + Unpin),
    budget: &mut usize,
) -> Result<ClientHello, Stop> {
    let malformed = |detail: &str| Stop::Refused {
        reason: RejectReason::Other,
        detail: format!("malformed ClientHello: {detail}"),
        alert: Some(AlertDescription::DecodeError),
    };
    let mut message = Vec::new();
    loop {
        let (content_type, body) = read_record(stream, budget).await?;
        match content_type {
            CONTENT_HANDSHAKE => message.extend_from_slice(&body),
            CONTENT_ALERT if body.len() >= 2 => {
                return Err(Stop::Peer(Some(format!(
                    "{:?}",
                    AlertDescription::from(body[1])
                ))));
            }
            other => {
                return Err(Stop::Refused {
                    reason: RejectReason::Other,
                    detail: format!("record type {other} before the ClientHello"),
                    alert: Some(AlertDescription::UnexpectedMessage),
                });
            }
        }
        let mut header = Reader(&message);
        let (Some(kind), Some(len)) = (header.u8(), header.u24()) else {
            continue;
        };
        if kind != CLIENT_HELLO {
            return Err(malformed(&format!("handshake type {kind}")));
        }
        if let Some(body) = header.take(len) {
            return parse_client_hello(body).ok_or_else(|| malformed("truncated fields"));
        }
    }
}

/// One record: content type and fragment. Fails on close, on a fragment over 2^14 bytes and
/// once `budget` bytes have been read.
async fn read_record(
    stream: &mut (impl AsyncRead + Unpin),
    budget: &mut usize,
) -> Result<(u8, Vec<u8>), Stop> {
    let mut header = [0u8; 5];
    stream.read_exact(&mut header).await?;
    let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
    if len > MAX_FRAGMENT || len + header.len() > *budget {
        return Err(Stop::Refused {
            reason: RejectReason::Other,
            detail: format!("record of {len} bytes"),
            alert: Some(AlertDescription::RecordOverflow),
        });
    }
    *budget -= len + header.len();
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await?;
    Ok((header[0], body))
}

/// RFC 5246 §7.4.1.2 ClientHello body (extensions after compression methods, if any).
fn parse_client_hello(body: &[u8]) -> Option<ClientHello> {
    let mut r = Reader(body);
    let mut hello = ClientHello {
        client_version: r.u16()?,
        ..ClientHello::default()
    };
    r.take(32)?; // random
    let session_id = r.u8()?;
    r.take(usize::from(session_id))?;
    let suites_len = usize::from(r.u16()?);
    let mut suites = Reader(r.take(suites_len)?);
    while let Some(suite) = suites.u16() {
        hello.secure_renegotiation |= suite == EMPTY_RENEGOTIATION_INFO_SCSV;
        hello.cipher_suites.push(CipherSuite::from(suite));
    }
    let compression = r.u8()?;
    r.take(usize::from(compression))?;
    let Some(extensions_len) = r.u16() else {
        return Some(hello);
    };
    let mut extensions = Reader(r.take(usize::from(extensions_len))?);
    while let Some(kind) = extensions.u16() {
        let len = usize::from(extensions.u16()?);
        let mut data = Reader(extensions.take(len)?);
        match kind {
            EXT_SERVER_NAME => {
                let mut list = Reader(data.vec16()?);
                while let Some(name_type) = list.u8() {
                    let name = list.vec16()?;
                    if name_type == 0 {
                        hello.sni = Some(String::from_utf8_lossy(name).into_owned());
                    }
                }
            }
            EXT_ALPN => {
                let mut list = Reader(data.vec16()?);
                while let Some(len) = list.u8() {
                    let protocol = list.take(usize::from(len))?;
                    hello
                        .alpn
                        .push(String::from_utf8_lossy(protocol).into_owned());
                }
            }
            EXT_SUPPORTED_VERSIONS => {
                let len = usize::from(data.u8()?);
                let mut list = Reader(data.take(len)?);
                while let Some(version) = list.u16() {
                    // GREASE values (RFC 8701) are 0x?a?a.
                    if version & 0x0f0f != 0x0a0a {
                        hello.supported_versions.push(version);
                    }
                }
            }
            EXT_RENEGOTIATION_INFO => hello.secure_renegotiation = true,
            _ => {}
        }
    }
    Some(hello)
}

/// The ServerHello record: `version`, a fresh random, an empty session id, `suite`, null
/// compression, and an empty renegotiation_info extension when the client signalled RFC 5746
/// (§3.6: the server must answer it; OpenSSL's client aborts without it).
fn server_hello(
    version: u16,
    suite: CipherSuite,
    secure_renegotiation: bool,
) -> Result<Vec<u8>, String> {
    let mut random = [0u8; 32];
    rustls::crypto::aws_lc_rs::default_provider()
        .secure_random
        .fill(&mut random)
        .map_err(|e| format!("no random for the ServerHello: {e:?}"))?;
    let mut body = Vec::with_capacity(38);
    body.extend_from_slice(&version.to_be_bytes());
    body.extend_from_slice(&random);
    body.push(0); // session_id length
    body.extend_from_slice(&u16::from(suite).to_be_bytes());
    body.push(0); // compression: null
    if secure_renegotiation {
        let renegotiation_info = [0, 5, 0xff, 0x01, 0, 1, 0]; // empty renegotiated_connection
        body.extend_from_slice(&renegotiation_info);
    }
    let mut message = vec![SERVER_HELLO];
    message.extend_from_slice(&u24(body.len()));
    message.extend_from_slice(&body);
    Ok(record(CONTENT_HANDSHAKE, version, &message))
}

/// A fatal alert record (RFC 5246 §7.2).
fn alert_record(alert: AlertDescription) -> Vec<u8> {
    const FATAL: u8 = 2;
    record(CONTENT_ALERT, TLS10, &[FATAL, u8::from(alert)])
}

fn record(content_type: u8, version: u16, fragment: &[u8]) -> Vec<u8> {
    let mut out = vec![content_type];
    out.extend_from_slice(&version.to_be_bytes());
    // Fragments here are a few dozen bytes, far below 2^14.
    out.extend_from_slice(&(fragment.len() as u16).to_be_bytes());
    out.extend_from_slice(fragment);
    out
}

fn u24(n: usize) -> [u8; 3] {
    let [_, a, b, c] = (n as u32).to_be_bytes();
    [a, b, c]
}

/// Big-endian fields off the front of a byte slice; `None` past its end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    fn u24(&mut self) -> Option<usize> {
        self.take(3)
            .map(|b| usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]))
    }

    /// A vector with a 2-byte length.
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let len = usize::from(self.u16()?);
        self.take(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_highest_allowed_version_not_above_the_clients_is_chosen() {
        let both = LegacyVersions::from_settings(&[TlsVersion::Tls11, TlsVersion::Tls10])
            .unwrap()
            .unwrap();
        assert_eq!(both.choose(0x0303), Some(TLS11));
        assert_eq!(both.choose(TLS10), Some(TLS10));
        let only_11 = LegacyVersions::from_settings(&[TlsVersion::Tls11])
            .unwrap()
            .unwrap();
        assert_eq!(only_11.choose(TLS10), None);
        assert!(LegacyVersions::from_settings(&[TlsVersion::Tls10, TlsVersion::Tls12]).is_err());
        assert_eq!(
            LegacyVersions::from_settings(&[TlsVersion::Tls12]).unwrap(),
            None
        );
    }

    #[test]
    fn a_truncated_client_hello_is_no_client_hello() {
        let mut body = vec![0x03, 0x03];
        body.extend_from_slice(&[0; 32]);
        body.extend_from_slice(&[0, 0, 4, 0xc0, 0x09]); // suites length 4, one suite only
        assert!(parse_client_hello(&body).is_none());
    }
}

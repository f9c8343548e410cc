//! The OTA server: firmware images and deliberately broken variants of one image over HTTP,
//! with HTTPS through the TLS gate in front. Each request becomes an `Http` event.
//!
//! Responses are written by hand over the socket (request heads parsed with `httparse`)
//! rather than with hyper: variants must lie about Content-Length and cut the body short,
//! which a conforming HTTP library refuses to do.

use std::net::SocketAddr;
use std::sync::Arc;

use esp_formats::image;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::events::{EventBus, EventKind};
use crate::gate::{Gate, GateConfig, GateError};

/// A variant of the served image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Variant {
    Valid,
    /// The first half only, with an honest Content-Length.
    Truncated,
    /// One byte of the first segment flipped: the image checksum fails.
    CorruptByte,
    /// The appended SHA-256 damaged.
    BadSha,
    /// Built for another chip (ESP32 ⇄ ESP32-C3), resealed.
    WrongChip,
    /// App descriptor version `0.0.1`, resealed.
    OlderVersion,
    /// Bigger than the OTA slot.
    Oversize,
    /// Content-Length promises more than the body holds, then the connection closes.
    WrongLength,
    NotFound,
    ServerError,
    /// 302 to the valid image.
    Redirect,
}

impl Variant {
    pub const ALL: [Variant; 11] = [
        Variant::Valid,
        Variant::Truncated,
        Variant::CorruptByte,
        Variant::BadSha,
        Variant::WrongChip,
        Variant::OlderVersion,
        Variant::Oversize,
        Variant::WrongLength,
        Variant::NotFound,
        Variant::ServerError,
        Variant::Redirect,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Variant::Valid => "valid",
            Variant::Truncated => "truncated",
            Variant::CorruptByte => "corrupt-byte",
            Variant::BadSha => "bad-sha",
            Variant::WrongChip => "wrong-chip",
            Variant::OlderVersion => "older-version",
            Variant::Oversize => "oversize",
            Variant::WrongLength => "wrong-length",
            Variant::NotFound => "404",
            Variant::ServerError => "500",
            Variant::Redirect => "redirect",
        }
    }

    pub fn from_name(name: &str) -> Option<Variant> {
        Variant::ALL.into_iter().find(|v| v.name() == name)
    }
}

/// What the server serves.
#[derive(Debug, Clone)]
pub struct OtaConfig {
    /// A valid app image; every variant derives from it.
    pub image: Vec<u8>,
    /// The OTA slot size devices write into (`oversize` exceeds it).
    pub slot_size: u32,
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

#[derive(Debug, thiserror::Error)]
pub enum OtaError {
    #[error("the OTA base image is not a valid app image: {0}")]
    Image(#[from] image::ImageError),
    #[error("binding the OTA server: {0}")]
    Bind(std::io::Error),
    #[error(transparent)]
    Gate(#[from] GateError),
}

/// A running OTA server: HTTPS on `addr` (through the gate), plain HTTP on `plain`.
pub struct OtaService {
    pub addr: SocketAddr,
    pub plain: SocketAddr,
    _gate: Gate,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for OtaService {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Every variant's bytes, made once at start.
fn variants(config: &OtaConfig) -> Result<Vec<(Variant, Vec<u8>)>, OtaError> {
    let valid = config.image.clone();
    let parsed = image::parse(&valid)?;
    let mut corrupt = valid.clone();
    if let Some(segment) = parsed.segments.first()
        && let Some(byte) = corrupt.get_mut(segment.offset + segment.len / 2)
    {
        *byte ^= 0xFF;
    }
    let mut bad_sha = valid.clone();
    if let Some(last) = bad_sha.last_mut() {
        *last ^= 0xFF;
    }
    let mut wrong_chip = valid.clone();
    let other = if parsed.header.chip_id == esp_formats::Chip::Esp32.id() {
        esp_formats::Chip::Esp32C3.id()
    } else {
        esp_formats::Chip::Esp32.id()
    };
    image::set_chip_id(&mut wrong_chip, other)?;
    let mut older = valid.clone();
    image::set_version(&mut older, "0.0.1")?;
    let mut oversize = valid.clone();
    oversize.resize(config.slot_size as usize + 4096, 0xFF);
    Ok(vec![
        (Variant::Truncated, valid[..valid.len() / 2].to_vec()),
        (Variant::CorruptByte, corrupt),
        (Variant::BadSha, bad_sha),
        (Variant::WrongChip, wrong_chip),
        (Variant::OlderVersion, older),
        (Variant::Oversize, oversize),
        (Variant::WrongLength, valid.clone()),
        (Variant::Valid, valid),
    ])
}

impl OtaService {
    pub async fn start(
        bind: SocketAddr,
        tls: GateConfig,
        config: OtaConfig,
        events: EventBus,
    ) -> Result<OtaService, OtaError> {
        let served = Arc::new(variants(&config)?);
        let listener = TcpListener::bind(SocketAddr::new(bind.ip(), 0))
            .await
            .map_err(OtaError::Bind)?;
        let plain = listener.local_addr().map_err(OtaError::Bind)?;
        let bus = events.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    continue;
                };
                let (served, bus) = (served.clone(), bus.clone());
                tokio::spawn(async move {
                    if let Some(record) = serve(stream, &served).await {
                        bus.emit("ota", peer, EventKind::Http(record));
                    }
                });
            }
        });
        let gate = Gate::start(bind, plain, tls, events).await?;
        Ok(OtaService {
            addr: gate.addr,
            plain,
            _gate: gate,
            task,
        })
    }

    /// `https://<host>:<port>/variants/<variant>.bin`.
    pub fn url(&self, host: &str, variant: Variant) -> String {
        format!(
            "https://{host}:{}/variants/{}.bin",
            self.addr.port(),
            variant.name()
        )
    }
}

/// Reads one request head, answers it; `None` when no request arrived.
async fn serve(mut stream: TcpStream, served: &[(Variant, Vec<u8>)]) -> Option<HttpRecord> {
    let mut head = Vec::new();
    let mut buf = [0u8; 2048];
    let (method, path, user_agent, range) = loop {
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 || head.len() > 16 * 1024 {
            return None;
        }
        head.extend_from_slice(&buf[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut request = httparse::Request::new(&mut headers);
        if let Ok(httparse::Status::Complete(_)) = request.parse(&head) {
            let header = |name: &str| {
                request
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case(name))
                    .map(|h| String::from_utf8_lossy(h.value).into_owned())
            };
            break (
                request.method.unwrap_or("GET").to_owned(),
                request.path.unwrap_or("/").to_owned(),
                header("user-agent"),
                header("range"),
            );
        }
    };
    let mut record = HttpRecord {
        method,
        path: path.clone(),
        user_agent,
        range,
        status: 200,
        content_length: None,
        bytes_sent: 0,
        body_complete: false,
    };
    // Only `/variants/<name>.bin`: no path ever reaches the file system.
    let variant = path
        .strip_prefix("/variants/")
        .and_then(|rest| rest.strip_suffix(".bin"))
        .and_then(Variant::from_name);
    let status_only = |status: u16, extra: &str| {
        format!(
            "HTTP/1.1 {status} {}\r\nContent-Length: 0\r\n{extra}Connection: close\r\n\r\n",
            reason(status)
        )
    };
    let body = variant.and_then(|v| served.iter().find(|(s, _)| *s == v).map(|(_, b)| b));
    match (variant, body) {
        (Some(Variant::Redirect), _) => {
            record.status = 302;
            let _ = stream
                .write_all(status_only(302, "Location: /variants/valid.bin\r\n").as_bytes())
                .await;
            record.body_complete = true;
        }
        (Some(Variant::ServerError), _) => {
            record.status = 500;
            let _ = stream.write_all(status_only(500, "").as_bytes()).await;
            record.body_complete = true;
        }
        (Some(variant), Some(body)) => {
            let promised = if variant == Variant::WrongLength {
                body.len() as u64 * 2
            } else {
                body.len() as u64
            };
            record.content_length = Some(promised);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {promised}\r\nConnection: close\r\n\r\n"
            );
            if stream.write_all(head.as_bytes()).await.is_ok() && record.method != "HEAD" {
                if stream.write_all(body).await.is_ok() {
                    record.bytes_sent = body.len() as u64;
                }
                record.body_complete = record.bytes_sent == promised;
            }
        }
        _ => {
            record.status = 404;
            let _ = stream.write_all(status_only(404, "").as_bytes()).await;
            record.body_complete = true;
        }
    }
    let _ = stream.shutdown().await;
    Some(record)
}

fn reason(status: u16) -> &'static str {
    match status {
        302 => "Found",
        404 => "Not Found",
        500 => "Internal Server Error",
        _ => "OK",
    }
}

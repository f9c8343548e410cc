//! The OTA server: firmware images and deliberately broken variants of one image over HTTP,
//! with HTTPS through the TLS gate in front, plus a directory of files under `/files/`. Range
//! requests are answered (206) so devices can resume. Each request becomes an `Http` event.
//!
//! Over HTTPS the gate sits between device and server: a `reset-after` TCP reset reaches the
//! device as the connection ending early (the gate closes its side), over plain HTTP as a reset.
//!
//! Responses are written by hand over the socket (request heads parsed with `httparse`)
//! rather than with hyper: variants must lie about Content-Length and cut the body short,
//! which a conforming HTTP library refuses to do.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use esp_formats::image;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::events::{EventBus, EventKind};
use crate::gate::{Gate, GateConfig, GateError, Protocol};

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
    /// The valid image at `rate` bytes per second (query `?rate=N`, default 16 KiB/s).
    Throttled,
    /// The valid image's first `after` bytes (default half), then silence with the connection
    /// open.
    StallAfter,
    /// The valid image's first `after` bytes (default half), then a TCP reset.
    ResetAfter,
    /// The valid image with the version of the firmware the board runs.
    SameVersion,
    /// The first download cut as `reset-after` cuts it; every later request (a retry, or a
    /// resume with `Range`) gets the valid image.
    ResetOnce,
}

impl Variant {
    pub const ALL: [Variant; 16] = [
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
        Variant::Throttled,
        Variant::StallAfter,
        Variant::ResetAfter,
        Variant::SameVersion,
        Variant::ResetOnce,
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
            Variant::Throttled => "throttled",
            Variant::StallAfter => "stall-after",
            Variant::ResetAfter => "reset-after",
            Variant::SameVersion => "same-version",
            Variant::ResetOnce => "reset-once",
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
    /// The version of the firmware the board runs (`same-version`).
    pub running_version: String,
    /// Served under `/files/`, when set; nothing outside it ever is.
    pub files: Option<PathBuf>,
}

/// `throttled`'s default rate, and how long `stall-after` keeps a silent connection open.
const DEFAULT_RATE: u64 = 16 * 1024;
const STALL_LIMIT: Duration = Duration::from_secs(120);

pub use crate::events::HttpRecord;

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
    let mut same = valid.clone();
    image::set_version(&mut same, &config.running_version)?;
    Ok(vec![
        (Variant::Throttled, valid.clone()),
        (Variant::StallAfter, valid.clone()),
        (Variant::ResetAfter, valid.clone()),
        (Variant::ResetOnce, valid.clone()),
        (Variant::SameVersion, same),
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
        let files = Arc::new(config.files.clone());
        let listener = TcpListener::bind(SocketAddr::new(bind.ip(), 0))
            .await
            .map_err(OtaError::Bind)?;
        let plain = listener.local_addr().map_err(OtaError::Bind)?;
        let bus = events.clone();
        let cut_once = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    continue;
                };
                let (served, bus, files) = (served.clone(), bus.clone(), files.clone());
                let cut_once = cut_once.clone();
                tokio::spawn(async move {
                    let served = Served {
                        variants: &served,
                        files: files.as_deref(),
                        cut_once: &cut_once,
                    };
                    if let Some(record) = serve(stream, &served).await {
                        bus.emit("ota", peer, EventKind::Http(record));
                    }
                });
            }
        });
        let tls = GateConfig {
            service: "ota".to_owned(),
            protocol: Protocol::Raw,
            ..tls
        };
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

/// What one server serves: its variants, its files, and whether `reset-once` has cut a
/// download yet.
struct Served<'a> {
    variants: &'a [(Variant, Vec<u8>)],
    files: Option<&'a Path>,
    cut_once: &'a AtomicBool,
}

/// Reads one request head, answers it; `None` when no request arrived.
async fn serve(mut stream: TcpStream, served: &Served<'_>) -> Option<HttpRecord> {
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
    let (route, query) = path.split_once('?').unwrap_or((&path, ""));
    let status_only = |status: u16, extra: &str| {
        format!(
            "HTTP/1.1 {status} {}\r\nContent-Length: 0\r\n{extra}Connection: close\r\n\r\n",
            reason(status)
        )
    };
    let answer_status = |record: &mut HttpRecord, status: u16, extra: &str| {
        record.status = status;
        record.body_complete = true;
        status_only(status, extra)
    };
    let response = if let Some(name) = route.strip_prefix("/files/") {
        match file(served.files, name) {
            Ok(bytes) => Some((Variant::Valid, bytes)),
            Err(status) => {
                let head = answer_status(&mut record, status, "");
                let _ = stream.write_all(head.as_bytes()).await;
                None
            }
        }
    } else {
        // Variants by name only: `/variants/<name>.bin`.
        let variant = route
            .strip_prefix("/variants/")
            .and_then(|rest| rest.strip_suffix(".bin"))
            .and_then(Variant::from_name);
        let body = variant.and_then(|v| {
            served
                .variants
                .iter()
                .find(|(s, _)| *s == v)
                .map(|(_, b)| b)
        });
        let head = match (variant, body) {
            (Some(Variant::Redirect), _) => Some(answer_status(
                &mut record,
                302,
                "Location: /variants/valid.bin\r\n",
            )),
            (Some(Variant::ServerError), _) => Some(answer_status(&mut record, 500, "")),
            (Some(_), Some(_)) => None,
            _ => Some(answer_status(&mut record, 404, "")),
        };
        match head {
            Some(head) => {
                let _ = stream.write_all(head.as_bytes()).await;
                None
            }
            None => variant.zip(body.cloned()),
        }
    };
    let reset = match response {
        Some((Variant::ResetOnce, body)) => {
            let first = !served.cut_once.swap(true, Ordering::SeqCst);
            let variant = if first {
                Variant::ResetAfter
            } else {
                Variant::Valid
            };
            send(&mut stream, variant, &body, query, &mut record).await
        }
        Some((variant, body)) => send(&mut stream, variant, &body, query, &mut record).await,
        None => false,
    };
    if !reset {
        let _ = stream.shutdown().await;
    }
    Some(record)
}

/// A file under the served directory; 403 for any path that tries to leave it (`..`,
/// absolute, backslashes, anything that is not a plain name), 404 when absent.
fn file(dir: Option<&Path>, name: &str) -> Result<Vec<u8>, u16> {
    let dir = dir.ok_or(404u16)?;
    let plain = |segment: &str| {
        !segment.is_empty()
            && segment != "."
            && segment != ".."
            && segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    };
    if !name.split('/').all(plain) {
        return Err(403);
    }
    let path = dir.join(name);
    // Symbolic links inside the directory must not lead out of it either.
    let (Ok(root), Ok(real)) = (dir.canonicalize(), path.canonicalize()) else {
        return Err(404);
    };
    if !real.starts_with(&root) {
        return Err(403);
    }
    std::fs::read(real).map_err(|_| 404)
}

/// A `Range: bytes=START-[END]` header against a body of `len` bytes: the inclusive range,
/// `Err` when it cannot be satisfied.
fn byte_range(header: &str, len: u64) -> Result<(u64, u64), ()> {
    let spec = header.trim().strip_prefix("bytes=").ok_or(())?;
    let (start, end) = spec.split_once('-').ok_or(())?;
    let (start, end) = match (start.trim(), end.trim()) {
        ("", suffix) => {
            let n: u64 = suffix.parse().map_err(|_| ())?;
            (len.saturating_sub(n), len.saturating_sub(1))
        }
        (start, "") => (start.parse().map_err(|_| ())?, len.saturating_sub(1)),
        (start, end) => (
            start.parse().map_err(|_| ())?,
            end.parse::<u64>()
                .map_err(|_| ())?
                .min(len.saturating_sub(1)),
        ),
    };
    if len == 0 || start > end || start >= len {
        return Err(());
    }
    Ok((start, end))
}

/// A `key=value` query parameter as a number.
fn query_number(query: &str, key: &str) -> Option<u64> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.parse().ok())
}

/// Sends a 200 (or 206 for a range) with `body`, misbehaving as `variant` says; true when
/// the connection must end with a reset (dropped without a FIN).
async fn send(
    stream: &mut TcpStream,
    variant: Variant,
    body: &[u8],
    query: &str,
    record: &mut HttpRecord,
) -> bool {
    let total = body.len() as u64;
    let (status, slice, content_range) = match record.range.as_deref() {
        None => (200, body, String::new()),
        Some(range) => match byte_range(range, total) {
            Ok((start, end)) => (
                206,
                &body[start as usize..=end as usize],
                format!("Content-Range: bytes {start}-{end}/{total}\r\n"),
            ),
            Err(()) => {
                record.status = 416;
                record.body_complete = true;
                let head = format!(
                    "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{total}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                let _ = stream.write_all(head.as_bytes()).await;
                return false;
            }
        },
    };
    let promised = if variant == Variant::WrongLength {
        slice.len() as u64 * 2
    } else {
        slice.len() as u64
    };
    record.status = status;
    record.content_length = Some(promised);
    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: application/octet-stream\r\nAccept-Ranges: bytes\r\n{content_range}Content-Length: {promised}\r\nConnection: close\r\n\r\n",
        reason(status)
    );
    if stream.write_all(head.as_bytes()).await.is_err() || record.method == "HEAD" {
        return false;
    }
    let cut = query_number(query, "after")
        .unwrap_or(slice.len() as u64 / 2)
        .min(slice.len() as u64) as usize;
    match variant {
        Variant::Throttled => {
            let rate = query_number(query, "rate").unwrap_or(DEFAULT_RATE).max(1);
            // Tenth-of-a-second chunks at `rate` bytes per second.
            let chunk = (rate / 10).max(1) as usize;
            let mut interval = tokio::time::interval(Duration::from_millis(100));
            for part in slice.chunks(chunk) {
                interval.tick().await;
                if stream.write_all(part).await.is_err() {
                    return false;
                }
                record.bytes_sent += part.len() as u64;
            }
        }
        Variant::StallAfter => {
            if stream.write_all(&slice[..cut]).await.is_ok() {
                record.bytes_sent = cut as u64;
                // Silence until the client gives up (bounded).
                let mut sink = [0u8; 512];
                let _ = tokio::time::timeout(STALL_LIMIT, async {
                    while let Ok(n) = stream.read(&mut sink).await {
                        if n == 0 {
                            break;
                        }
                    }
                })
                .await;
            }
        }
        Variant::ResetAfter => {
            if stream.write_all(&slice[..cut]).await.is_ok() {
                record.bytes_sent = cut as u64;
                let _ = stream.flush().await;
                // Closing with a zero linger sends RST instead of FIN.
                let reset = stream.set_zero_linger().is_ok();
                record.body_complete = false;
                return reset;
            }
        }
        _ => {
            if stream.write_all(slice).await.is_ok() {
                record.bytes_sent = slice.len() as u64;
            }
        }
    }
    record.body_complete = record.bytes_sent == promised;
    false
}

fn reason(status: u16) -> &'static str {
    match status {
        206 => "Partial Content",
        302 => "Found",
        403 => "Forbidden",
        404 => "Not Found",
        500 => "Internal Server Error",
        _ => "OK",
    }
}

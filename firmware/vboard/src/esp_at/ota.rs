//! `AT+USEROTA`: download an app image over HTTP(S) into the passive OTA slot and validate it
//! as `esp_https_ota` does (magic, chip id, size, checksum and SHA-256), then point otadata at
//! it. Every failure leaves the running image and otadata untouched and logs the real lines
//! (esp-facts §6.1).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use esp_formats::image;
use esp_formats::otadata::{self, OtaState};
use esp_formats::partition::Partition;

use super::costs;
use super::tls::{self, Credentials, Transport};
use crate::personality::{AppContext, Defect, LogLevel};

/// esp_http_client's `max_redirection_count` default (`DEFAULT_MAX_REDIRECT`, 10), which
/// `esp_https_ota` leaves as it is (ESP-IDF `components/esp_http_client/esp_http_client.c`).
const REDIRECT_LIMIT: usize = 10;
/// esp_http_client's default network timeout (board time: divided by the time scale).
const NETWORK_TIMEOUT: Duration = Duration::from_secs(10);
const HEAD_LIMIT: usize = 8192;
/// Bytes the first `esp_https_ota_perform` reads before checking the image: image header,
/// first segment header and the app descriptor.
const IMAGE_HEADER_LEN: usize = 24 + 8 + 256;

/// Why an update failed; the firmware has already logged the lines.
#[derive(Debug)]
pub struct OtaFailed;

/// `scheme://host[:port]/path`. Parsed by hand: esp_http_client accepts no more than this,
/// and the `url` crate's IDNA machinery would be dead weight here.
struct Url {
    tls: bool,
    host: String,
    port: u16,
    path: String,
}

fn parse_url(url: &str) -> Option<Url> {
    let (tls, rest) = if let Some(rest) = url.strip_prefix("https://") {
        (true, rest)
    } else {
        (false, url.strip_prefix("http://")?)
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !host.contains(']') || host.ends_with(']') => {
            (host, port.parse().ok()?)
        }
        _ => (authority, if tls { 443 } else { 80 }),
    };
    if host.is_empty() {
        return None;
    }
    Some(Url {
        tls,
        host: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        port,
        path: if path.is_empty() {
            "/".into()
        } else {
            path.into()
        },
    })
}

/// A response head and the connection its body follows on.
struct Response {
    status: u16,
    location: Option<String>,
    content_length: Option<u64>,
    body_start: Vec<u8>,
    transport: Transport,
}

/// Runs the update; on success the board restarts into the new slot.
pub fn user_ota(ctx: &AppContext, url: &str) -> Result<(), OtaFailed> {
    let log = |level, tag: &str, message: &str| ctx.log(level, tag, message);
    let Some(passive) = passive_slot(ctx) else {
        log(
            LogLevel::Error,
            "esp_https_ota",
            "Passive OTA partition not found",
        );
        return Err(OtaFailed);
    };
    if let Err(e) = ctx.shared.alloc(costs::OTA_BUFFERS) {
        log(
            LogLevel::Error,
            "at",
            &format!(
                "alloc failed, size:{}, caps:0x{:x}",
                e.wanted,
                costs::DEFAULT_CAPS
            ),
        );
        return Err(OtaFailed);
    }
    let result = download_into(ctx, url, &passive);
    ctx.shared.free(costs::OTA_BUFFERS);
    let written = result?;
    finish(ctx, &passive, written)
}

fn download_into(ctx: &AppContext, url: &str, passive: &Partition) -> Result<usize, OtaFailed> {
    let log = |level, tag: &str, message: &str| ctx.log(level, tag, message);
    let mut url = url.to_owned();
    let mut response = None;
    for _ in 0..=REDIRECT_LIMIT {
        let Some(parsed) = parse_url(&url) else {
            log(
                LogLevel::Error,
                "HTTP_CLIENT",
                &format!("Error parse url {url}"),
            );
            return Err(OtaFailed);
        };
        let r = request(ctx, &parsed)?;
        match (r.status, &r.location) {
            (301 | 302 | 303 | 307 | 308, Some(location)) => {
                url = if location.starts_with("http") {
                    location.clone()
                } else {
                    let scheme = if parsed.tls { "https" } else { "http" };
                    format!("{scheme}://{}:{}{location}", parsed.host, parsed.port)
                };
            }
            _ => {
                response = Some(r);
                break;
            }
        }
    }
    let Some(mut response) = response else {
        log(
            LogLevel::Error,
            "HTTP_CLIENT",
            &format!("Error, reach max_redirection_count count={REDIRECT_LIMIT}"),
        );
        return Err(OtaFailed);
    };
    match response.status {
        200 => {}
        404 => {
            log(LogLevel::Error, "esp_https_ota", "File not found(404)");
            return Err(OtaFailed);
        }
        s @ 400..=499 => {
            log(
                LogLevel::Error,
                "esp_https_ota",
                &format!("Client error ({s})"),
            );
            return Err(OtaFailed);
        }
        s => {
            log(
                LogLevel::Error,
                "esp_https_ota",
                &format!("Server error ({s})"),
            );
            return Err(OtaFailed);
        }
    }
    log(LogLevel::Info, "esp_https_ota", "Starting OTA...");
    log(
        LogLevel::Info,
        "esp_https_ota",
        &format!(
            "Writing to <{}> partition at offset 0x{:x}",
            passive.label, passive.offset
        ),
    );
    let expected = response.content_length;
    let accept_any = ctx
        .shared
        .has_defect(|d| *d == Defect::AcceptAnyOtaImage)
        .is_some();
    let mut image = std::mem::take(&mut response.body_start);
    let mut checked = false;
    let deadline = Instant::now() + ctx.shared.scaled(Duration::from_secs(300));
    let mut buf = [0u8; 4096];
    loop {
        if !checked && image.len() >= IMAGE_HEADER_LEN.min(expected.unwrap_or(u64::MAX) as usize) {
            checked = true;
            if !accept_any {
                check_header(ctx, &image)?;
            }
        }
        if expected.is_some_and(|len| image.len() as u64 >= len) {
            break;
        }
        if image.len() > passive.size as usize {
            break;
        }
        if Instant::now() > deadline {
            log(
                LogLevel::Error,
                "esp_https_ota",
                "Download did not finish in 300 s",
            );
            return Err(OtaFailed);
        }
        match response.transport.read(&mut buf) {
            Ok(0) if expected.is_none() => break,
            Ok(0) => {
                log(
                    LogLevel::Error,
                    "esp_https_ota",
                    "Connection closed before complete data was received!",
                );
                return Err(OtaFailed);
            }
            Ok(n) => image.extend_from_slice(&buf[..n]),
            Err(e) => {
                log(LogLevel::Error, "esp-tls", &format!("read error :{e}"));
                log(
                    LogLevel::Error,
                    "esp_https_ota",
                    "Connection closed before complete data was received!",
                );
                return Err(OtaFailed);
            }
        }
    }
    if image.len() > passive.size as usize {
        log(
            LogLevel::Error,
            "esp_image",
            &format!(
                "Image length {} doesn't fit in partition length {}",
                image.len(),
                passive.size
            ),
        );
        log(
            LogLevel::Error,
            "esp_ota_ops",
            "New image failed verification",
        );
        return Err(OtaFailed);
    }
    if ctx
        .flash_erase(u64::from(passive.offset), passive.size as usize)
        .is_err()
        || ctx.flash_write(u64::from(passive.offset), &image).is_err()
    {
        log(LogLevel::Error, "esp_ota_ops", "esp_ota_write failed");
        return Err(OtaFailed);
    }
    if !accept_any && let Err(e) = image::parse_for_chip(&image, ctx.chip) {
        log(LogLevel::Error, "esp_image", &e.to_string());
        log(
            LogLevel::Error,
            "esp_ota_ops",
            "New image failed verification",
        );
        log(
            LogLevel::Error,
            "esp_https_ota",
            "esp_https_ota_finish failed: ESP_ERR_OTA_VALIDATE_FAILED (0x1503)",
        );
        return Err(OtaFailed);
    }
    Ok(image.len())
}

/// The checks of the first perform step: magic byte and chip id.
fn check_header(ctx: &AppContext, head: &[u8]) -> Result<(), OtaFailed> {
    let magic = head.first().copied().unwrap_or(0);
    if magic != 0xE9 {
        ctx.log(
            LogLevel::Error,
            "esp_ota_ops",
            &format!("OTA image has invalid magic byte (expected 0xE9, saw 0x{magic:02x})"),
        );
        return Err(OtaFailed);
    }
    let found = head
        .get(12..14)
        .map_or(0xFFFF, |b| u16::from_le_bytes([b[0], b[1]]));
    let expected = ctx.chip.id();
    if found != expected {
        ctx.log(
            LogLevel::Error,
            "boot_comm",
            &format!("mismatch chip ID, expected {expected}, found {found}"),
        );
        ctx.log(
            LogLevel::Error,
            "esp_https_ota",
            "esp_https_ota_perform failed: ESP_ERR_INVALID_VERSION",
        );
        return Err(OtaFailed);
    }
    Ok(())
}

/// `esp_ota_set_boot_partition`: otadata now points at the new slot, state NEW so the
/// bootloader arms rollback (the defect `no-rollback` skips that and marks it VALID).
fn finish(ctx: &AppContext, passive: &Partition, written: usize) -> Result<(), OtaFailed> {
    let Some(ota) = otadata::partition(&ctx.table).cloned() else {
        ctx.log(LogLevel::Error, "esp_ota_ops", "not found otadata");
        return Err(OtaFailed);
    };
    let slots = ctx.table.ota_slots();
    let Some(slot) = slots.iter().position(|p| p.offset == passive.offset) else {
        return Err(OtaFailed);
    };
    let bytes = ctx
        .flash_read(u64::from(ota.offset), 2 * otadata::SECTOR)
        .map_err(|_| OtaFailed)?;
    let state = if ctx
        .shared
        .has_defect(|d| *d == Defect::NoRollback)
        .is_some()
    {
        OtaState::Valid
    } else {
        OtaState::New
    };
    let (index, entry) = otadata::next_entry(&otadata::read(&bytes), slot, slots.len(), state);
    let at = u64::from(ota.offset) + (index * otadata::SECTOR) as u64;
    if ctx.flash_erase(at, otadata::SECTOR).is_err()
        || ctx.flash_write(at, &entry.to_bytes()).is_err()
    {
        ctx.log(LogLevel::Error, "esp_ota_ops", "otadata write failed");
        return Err(OtaFailed);
    }
    ctx.log(
        LogLevel::Info,
        "esp_https_ota",
        &format!("ESP_HTTPS_OTA upgrade successful ({written} bytes). Rebooting ..."),
    );
    Ok(())
}

/// The OTA slot the running app is not in.
fn passive_slot(ctx: &AppContext) -> Option<Partition> {
    ctx.table
        .ota_slots()
        .into_iter()
        .find(|p| p.offset != ctx.partition.offset)
        .cloned()
}

/// Connects (TLS without server verification, as ESP-AT's `AT+USEROTA` does by default),
/// sends the GET and reads the response head.
fn request(ctx: &AppContext, url: &Url) -> Result<Response, OtaFailed> {
    let fail = |message: String| {
        ctx.log(LogLevel::Error, "esp_https_ota", &message);
        OtaFailed
    };
    let network = ctx.shared.network();
    let Some(addr) = network.resolve(&url.host, url.port) else {
        ctx.log(
            LogLevel::Error,
            "esp-tls",
            &format!(
                "couldn't get hostname for :{}: getaddrinfo() returns 202, addrinfo=0x0",
                url.host
            ),
        );
        return Err(fail(
            "Failed to open HTTP connection: ESP_ERR_HTTP_CONNECT".into(),
        ));
    };
    let network_timeout = ctx.shared.scaled_network(NETWORK_TIMEOUT);
    let tcp = TcpStream::connect_timeout(&addr, network_timeout)
        .map_err(|e| fail(format!("Failed to open HTTP connection: {e}")))?;
    let mut transport = if url.tls {
        let no_credentials = Credentials {
            ca: Vec::new(),
            client: None,
        };
        let setup = tls::ClientSetup {
            credentials: &no_credentials,
            verify_server: false,
            alpn: &[],
            name: &url.host,
        };
        let log =
            |level, tag: &str, message: &str| ctx.log(LogLevel::from_letter(level), tag, message);
        tls::connect(&ctx.shared, tcp, &setup, network_timeout, &log)
            .map_err(|_| fail("Failed to open HTTP connection: ESP_ERR_HTTP_CONNECT".into()))?
    } else {
        Transport::Plain(tcp)
    };
    let _ = transport.tcp().set_read_timeout(Some(network_timeout));
    let head = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: ESP32 HTTP Client/1.0\r\nConnection: close\r\n\r\n",
        url.path, url.host
    );
    transport
        .write_all(head.as_bytes())
        .and_then(|()| transport.flush())
        .map_err(|e| fail(format!("HTTP request failed: {e}")))?;
    let mut received = Vec::new();
    let mut buf = [0u8; 2048];
    loop {
        let n = transport
            .read(&mut buf)
            .map_err(|e| fail(format!("reading the response head: {e}")))?;
        if n == 0 {
            return Err(fail("Connection closed before the response head".into()));
        }
        received.extend_from_slice(&buf[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut parsed = httparse::Response::new(&mut headers);
        match parsed.parse(&received) {
            Ok(httparse::Status::Complete(len)) => {
                let header = |name: &str| {
                    parsed
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case(name))
                        .map(|h| String::from_utf8_lossy(h.value).trim().to_owned())
                };
                return Ok(Response {
                    status: parsed.code.unwrap_or(0),
                    location: header("location"),
                    content_length: header("content-length").and_then(|v| v.parse().ok()),
                    body_start: received[len..].to_vec(),
                    transport,
                });
            }
            Ok(httparse::Status::Partial) if received.len() < HEAD_LIMIT => {}
            _ => return Err(fail("malformed HTTP response".into())),
        }
    }
}

//! `sparring serve`: the device-facing services standalone, for work with a real board by hand.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use esp_formats::Chip;
use esp_formats::image::AppSpec;
use sparring_pki::PkiDir;
use sparring_services::events::{EventKind, TlsOutcome};
use sparring_services::ota::{OtaConfig, OtaService};
use sparring_services::sntp::{SntpConfig, SntpServer};
use sparring_services::{BrokerBehaviour, EventBus, MqttService, TlsSettings, gate};

/// Run the mutual-TLS MQTT broker (behind sparring's TLS gate), the HTTPS OTA server and the
/// SNTP server until Ctrl-C, printing what devices do.
///
/// Prints one JSON line with every address and the CA file to give the firmware, e.g.
/// `{"mqtt":"127.0.0.1:8883","ota":"https://127.0.0.1:8443/","sntp":"127.0.0.1:1123",
/// "ca":"certs/out/ca/root.pem"}`, then one line per event. Binds loopback by default: a real
/// board on the network needs the host's LAN address (`--bind 192.168.1.20`), and certificates
/// issued for it (`sparring certs --ip ...`).
///
/// The OTA server serves `/variants/<name>.bin` (valid, truncated, corrupt-byte, bad-sha,
/// wrong-chip, older-version, same-version, oversize, throttled?rate=N, stall-after?after=N,
/// reset-after?after=N, reset-once, wrong-length, 404, 500, redirect) derived from one image, and
/// `/files/<name>` from a directory; Range requests resume.
///
/// `--config FILE` (TOML) sets what flags do not:
///
///   [broker]   refuse-connects = 2, withhold-connack = 1, disconnect-after-ms = 30000,
///              withhold = ["puback", "suback", "pingresp", "connack"], delay = [...],
///              delay-ms = 5000, client-id-must-match-cn = true
///
///   [tls]      versions = ["1.2"], cipher-suites = ["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"],
///              alpn = ["x-amzn-mqtt-ca"]   (the broker's listener)
///
///   [ota]      image = "build/app.bin", files = "build/", running-version = "2.4.0.0",
///              slot-size = 1900544
#[derive(Debug, clap::Args)]
// Verbatim: the TOML sketch above must keep its lines.
#[command(verbatim_doc_comment)]
pub struct Args {
    /// A directory written by `sparring certs`.
    #[arg(long, default_value = "certs/out")]
    certs: PathBuf,
    /// Server certificate profile to serve (valid, expired, wrong-host, ...; see manifest.json).
    #[arg(long, default_value = "valid")]
    profile: String,
    /// Address to listen on: loopback by default; a board on the network needs the host's LAN
    /// address, and certificates issued for it.
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
    /// MQTT over TLS port (0: any free port).
    #[arg(long, default_value_t = 8883)]
    mqtt_port: u16,
    /// SNTP port (real boards ask 123, which needs privileges).
    #[arg(long, default_value_t = 1123)]
    sntp_port: u16,
    /// Skew of the SNTP time in seconds (e.g. 63072000 = two years ahead).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    sntp_skew: i64,
    /// Do not require a client certificate.
    #[arg(long)]
    no_client_auth: bool,
    /// HTTPS OTA port (0: any free port).
    #[arg(long, default_value_t = 8443)]
    ota_port: u16,
    /// Also append every event as a JSON line to this file.
    #[arg(long)]
    events: Option<PathBuf>,
    /// Broker faults and OTA settings (TOML; see above).
    #[arg(long)]
    config: Option<PathBuf>,
}

/// `--config`'s file.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
struct ServeConfig {
    broker: BrokerBehaviour,
    tls: TlsSettings,
    ota: OtaSettings,
}

#[derive(Debug, serde::Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
struct OtaSettings {
    /// The app image the variants derive from (default: a generated ESP-AT image).
    image: Option<PathBuf>,
    /// Served under `/files/`.
    files: Option<PathBuf>,
    /// The version the board runs (`same-version`).
    running_version: String,
    /// The OTA slot size (`oversize` exceeds it).
    slot_size: u32,
}

impl Default for OtaSettings {
    fn default() -> Self {
        Self {
            image: None,
            files: None,
            running_version: sparring_runner::environment::FIRMWARE_VERSION.to_owned(),
            // ESP-AT's ESP32-C3 layout: ota_0/ota_1 are 0x1D0000 bytes.
            slot_size: 0x1D_0000,
        }
    }
}

fn load_config(path: &Path) -> anyhow::Result<ServeConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    // toml's message names the line and column and what was expected.
    toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// The OTA server's base image: the configured file (validated), or a generated ESP-AT app.
fn ota_image(settings: &OtaSettings) -> anyhow::Result<Vec<u8>> {
    match &settings.image {
        Some(path) => {
            let bytes =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            esp_formats::image::parse(&bytes)
                .with_context(|| format!("{} is not a valid app image", path.display()))?;
            Ok(bytes)
        }
        None => Ok(esp_formats::image::build_app(&AppSpec::new(
            Chip::Esp32C3,
            "esp-at",
            sparring_runner::environment::OTA_VERSION,
        ))?),
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(serve(args))
}

async fn serve(args: Args) -> anyhow::Result<ExitCode> {
    let pki = PkiDir::load(&args.certs).with_context(|| {
        format!(
            "loading {} (run `sparring certs` first)",
            args.certs.display()
        )
    })?;
    let settings = match &args.config {
        Some(path) => load_config(path)?,
        None => ServeConfig::default(),
    };
    let mut config = gate::from_pki(&pki, &args.profile, !args.no_client_auth)?;
    config.broker = settings.broker.clone();
    config.tls = settings.tls.clone();
    let ota_config = OtaConfig {
        image: ota_image(&settings.ota)?,
        slot_size: settings.ota.slot_size,
        running_version: settings.ota.running_version.clone(),
        files: settings.ota.files.clone(),
    };
    let events = EventBus::default();
    let mut receiver = events.subscribe();
    let mqtt = MqttService::start(
        SocketAddr::new(args.bind, args.mqtt_port),
        config,
        events.clone(),
    )
    .await?;
    let sntp_config = SntpConfig {
        skew_seconds: args.sntp_skew,
        silent: false,
        ignore_first: 0,
    };
    let sntp = SntpServer::start(
        SocketAddr::new(args.bind, args.sntp_port),
        sntp_config,
        events.clone(),
    )
    .await
    .with_context(|| format!("binding SNTP on {}:{}", args.bind, args.sntp_port))?;
    // The OTA server always presents the valid profile and asks for no client certificate,
    // as OTA servers do; the broker presents the chosen profile.
    let ota = OtaService::start(
        SocketAddr::new(args.bind, args.ota_port),
        gate::from_pki(&pki, "valid", false)?,
        ota_config,
        events.clone(),
    )
    .await
    .with_context(|| format!("starting OTA on {}:{}", args.bind, args.ota_port))?;
    let ca = pki.path(&pki.manifest.authorities.root.cert.pem);
    println!(
        "{}",
        serde_json::json!({
            "mqtt": mqtt.gate.addr,
            "ota": format!("https://{}/", ota.addr),
            "ota_plain": format!("http://{}/", ota.plain),
            "sntp": sntp.addr,
            "ca": ca,
            "profile": args.profile,
        })
    );
    let mut file = match &args.events {
        Some(path) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("opening {}", path.display()))?,
        ),
        None => None,
    };
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            event = receiver.recv() => {
                let Ok(event) = event else { continue };
                if let Some(file) = file.as_mut() {
                    use std::io::Write;
                    writeln!(file, "{}", serde_json::to_string(&event)?).context("writing the events file")?;
                }
                println!("{}", describe(&event));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn describe(event: &sparring_services::Event) -> String {
    let head = format!("{} {} {}", event.at.time(), event.service, event.peer);
    match &event.kind {
        EventKind::Tls(t) => {
            let outcome = match &t.outcome {
                TlsOutcome::Established => format!(
                    "established {} {}",
                    t.version.as_deref().unwrap_or("?"),
                    t.cipher_suite.as_deref().unwrap_or("?")
                ),
                TlsOutcome::RejectedByUs { reason, detail } => {
                    format!("REJECTED {reason:?}: {detail}")
                }
                TlsOutcome::AbortedByPeer { alert: Some(alert) } => {
                    format!("device aborted with alert {alert}")
                }
                TlsOutcome::AbortedByPeer { alert: None } => {
                    "device closed without alert".to_owned()
                }
                TlsOutcome::HandshakeTimeout => "handshake timed out".to_owned(),
            };
            format!(
                "{head} TLS sni={} client_cn={} {outcome}",
                t.sni.as_deref().unwrap_or("-"),
                t.client_cn.as_deref().unwrap_or("-")
            )
        }
        EventKind::Mqtt(m) => format!(
            "{head} MQTT {:?} {} {}{}",
            m.direction,
            m.packet,
            m.topic.as_deref().or(m.client_id.as_deref()).unwrap_or(""),
            m.fault
                .as_deref()
                .map(|f| format!(" [{f}]"))
                .unwrap_or_default()
        ),
        EventKind::Sntp(s) => format!(
            "{head} SNTP {} (skew {} s)",
            if s.answered { "answered" } else { "ignored" },
            s.skew_seconds
        ),
        EventKind::Http(h) => format!(
            "{head} HTTP {} {} -> {} ({} bytes{})",
            h.method,
            h.path,
            h.status,
            h.bytes_sent,
            if h.body_complete { "" } else { ", incomplete" }
        ),
    }
}

//! `sparring serve`: the device-facing services standalone, for work with a real board by hand.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use sparring_pki::PkiDir;
use sparring_services::events::{EventKind, TlsOutcome};
use sparring_services::sntp::{SntpConfig, SntpServer};
use sparring_services::{EventBus, MqttService, gate};

/// Run the mutual-TLS MQTT broker (behind sparring's TLS gate) and the SNTP server until
/// Ctrl-C, printing what devices do.
///
/// Prints one JSON line with every address and the CA file to give the firmware, e.g.
/// `{"mqtt":"127.0.0.1:8883","sntp":"127.0.0.1:1123","ca":"certs/out/ca/root.pem"}`, then one
/// line per event. Binds loopback by default: a real board on the network needs the host's LAN
/// address (`--bind 192.168.1.20`), and certificates issued for it (`sparring certs --ip ...`).
/// (The OTA server is not part of this command yet.)
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A directory written by `sparring certs`.
    #[arg(long, default_value = "certs/out")]
    certs: PathBuf,
    /// Server certificate profile to serve (valid, expired, wrong-host, ...; see manifest.json).
    #[arg(long, default_value = "valid")]
    profile: String,
    /// Address to listen on.
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
    /// Also append every event as a JSON line to this file.
    #[arg(long)]
    events: Option<PathBuf>,
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
    let config = gate::from_pki(&pki, &args.profile, !args.no_client_auth)?;
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
    };
    let sntp = SntpServer::start(
        SocketAddr::new(args.bind, args.sntp_port),
        sntp_config,
        events,
    )
    .await
    .with_context(|| format!("binding SNTP on {}:{}", args.bind, args.sntp_port))?;
    let ca = pki.path(&pki.manifest.authorities.root.cert.pem);
    println!(
        "{}",
        serde_json::json!({"mqtt": mqtt.gate.addr, "sntp": sntp.addr, "ca": ca, "profile": args.profile})
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
            "{head} MQTT {:?} {} {}",
            m.direction,
            m.packet,
            m.topic.as_deref().or(m.client_id.as_deref()).unwrap_or("")
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

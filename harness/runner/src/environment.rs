//! The services one scenario talks to: a TLS gate in front of the run's broker with the
//! scenario's server certificate profile, an SNTP server with the scenario's clock, and the OTA
//! server — on the lab's address, their events fed into the scenario's observations, and the
//! variables (`${broker.host}`, `${broker.port}`, ...) scenario steps refer to them by. Hosts are
//! the lab's names on boards whose network the harness shapes (they resolve through its hosts
//! table) and the lab's address elsewhere, so one scenario file runs on both.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use esp_formats::Chip;
use esp_formats::image::AppSpec;
use sparring_pki::PkiDir;
use sparring_services::EventBus;
use sparring_services::broker::BrokerAddrs;
use sparring_services::gate::{self, Gate};
use sparring_services::ota::{OtaConfig, OtaService, Variant};
use sparring_services::sntp::{SntpConfig, SntpServer};
use tokio::runtime::Runtime;

use crate::board::LabNetwork;
use crate::board::inventory::Lab;
use crate::observe::Observations;
use crate::scenario::Setup;

/// Host names a lab network resolves to the services (the certificates name them).
pub const BROKER_HOST: &str = "broker.sparring.test";
pub const SNTP_HOST: &str = "time.sparring.test";
pub const OTA_HOST: &str = "ota.sparring.test";
/// The ESP-AT version the scenarios flash (`${firmware.version}`, `esp-at/boot.toml`); the
/// OTA server's `same-version` variant carries it too.
pub const FIRMWARE_VERSION: &str = "2.4.0.0";
/// The version the OTA server's images carry (scenarios flash an older one first).
pub const OTA_VERSION: &str = "2.5.0.0";

#[derive(Debug, thiserror::Error)]
pub enum EnvironmentError {
    #[error("certificate profile: {0}")]
    Pki(#[from] sparring_pki::PkiError),
    #[error("TLS gate: {0}")]
    Gate(#[from] sparring_services::GateError),
    #[error(
        "SNTP server on {0}: {1} (port 123 needs privileges: run as root, or `sudo setcap cap_net_bind_service=+ep $(which sparring)`, or set [lab] sntp_port and redirect 123 to it)"
    )]
    Sntp(SocketAddr, std::io::Error),
    #[error("OTA server: {0}")]
    Ota(#[from] sparring_services::ota::OtaError),
    #[error("unknown OTA variant {0:?}")]
    Variant(String),
    #[error("OTA image: {0}")]
    Image(String),
}

/// Running services of one scenario; dropping it stops them.
pub struct Environment {
    _gate: Gate,
    /// Taken when the environment stops: its port must be free when the next one starts.
    sntp_server: Option<SntpServer>,
    runtime: tokio::runtime::Handle,
    /// Only for ESP boards: it serves ESP app images.
    _ota: Option<OtaService>,
    forward: tokio::task::JoinHandle<()>,
    pub broker_plain: SocketAddr,
    pub sntp: SocketAddr,
    /// `${name}` values for the scenario's steps.
    pub vars: BTreeMap<String, String>,
}

impl Drop for Environment {
    fn drop(&mut self) {
        self.forward.abort();
        if let Some(sntp) = self.sntp_server.take() {
            // Dropped on the executor's thread, never inside the runtime.
            self.runtime.block_on(sntp.shutdown());
        }
    }
}

impl Environment {
    /// `names_resolve`: the board's network resolves the lab's names (a lab-network fixture);
    /// otherwise steps get the lab's address and SNTP listens on the lab's `sntp_port`. The OTA
    /// server runs for an ESP `chip` (its images are ESP app images); other boards get none and
    /// no `${ota.*}` values.
    #[allow(clippy::too_many_arguments)] // the scenario's whole context, each part distinct
    pub fn start(
        runtime: &Runtime,
        chip: Option<Chip>,
        pki: &PkiDir,
        broker: BrokerAddrs,
        setup: &Setup,
        observations: Arc<Observations>,
        lab: &Lab,
        names_resolve: bool,
        time_scale: u32,
    ) -> Result<Environment, EnvironmentError> {
        let profile = setup.server_profile.as_deref().unwrap_or("valid");
        let mut config = gate::from_pki(pki, profile, setup.client_auth)?;
        config.broker = setup.broker.clone();
        // The broker is part of the lab: its delays run on the board's clock too.
        config.broker.delay_ms /= u64::from(time_scale.max(1));
        config.broker.disconnect_after_ms = config
            .broker
            .disconnect_after_ms
            .map(|ms| ms / u64::from(time_scale.max(1)));
        config.tls = setup.tls.clone();
        config.mqtt5_upstream = Some(broker.v5);
        config.handshake_timeout = Duration::from_secs(10);
        let events = EventBus::default();
        let mut receiver = events.subscribe();
        let forward = runtime.spawn(async move {
            // Ends when the bus closes (services dropped) or the task is aborted.
            while let Ok(event) = receiver.recv().await {
                observations.push_event(event);
            }
        });
        let bind = SocketAddr::new(lab.bind, 0);
        // A lab network redirects SNTP's 123 to wherever it listens; a real board asks 123.
        let sntp_bind = SocketAddr::new(lab.bind, if names_resolve { 0 } else { lab.sntp_port });
        let variant_name = setup.ota_variant.as_deref().unwrap_or("valid");
        let variant = Variant::from_name(variant_name)
            .ok_or_else(|| EnvironmentError::Variant(variant_name.to_owned()))?;
        let ota_config = chip
            .map(|chip| {
                let image =
                    esp_formats::image::build_app(&AppSpec::new(chip, "esp-at", OTA_VERSION))
                        .map_err(|e| EnvironmentError::Image(e.to_string()))?;
                // The app slots are the same in both storage layouts.
                let slot_size = esp_formats::partition::esp_at_layout(chip, Default::default())
                    .main
                    .find("ota_1")
                    .map_or(0x100000, |p| p.size);
                Ok::<_, EnvironmentError>(OtaConfig {
                    image,
                    slot_size,
                    running_version: FIRMWARE_VERSION.to_owned(),
                    files: None,
                })
            })
            .transpose()?;
        let ota_tls = gate::from_pki(pki, "valid", false)?;
        let (gate, sntp, ota) = runtime.block_on(async {
            let gate = Gate::start(bind, broker.v4, config, events.clone()).await?;
            let sntp = SntpServer::start(
                sntp_bind,
                SntpConfig {
                    skew_seconds: setup.sntp_offset_secs,
                    silent: !setup.sntp,
                    ignore_first: setup.sntp_ignore_requests,
                },
                events.clone(),
            )
            .await
            .map_err(|e| EnvironmentError::Sntp(sntp_bind, e))?;
            let ota = match ota_config {
                Some(ota_config) => {
                    Some(OtaService::start(bind, ota_tls, ota_config, events.clone()).await?)
                }
                None => None,
            };
            Ok::<_, EnvironmentError>((gate, sntp, ota))
        })?;
        let device = setup.device_profile.as_deref().unwrap_or("device-valid");
        let mut vars = BTreeMap::new();
        let mut set = |k: &str, v: String| vars.insert(k.to_owned(), v);
        let address = lab.bind.to_string();
        let host = |name: &str| {
            if names_resolve {
                name.to_owned()
            } else {
                address.clone()
            }
        };
        let ota_host = host(OTA_HOST);
        set("broker.host", host(BROKER_HOST));
        set("broker.ip", address.clone());
        set("broker.port", gate.addr.port().to_string());
        set("sntp.host", host(SNTP_HOST));
        set("wifi.ssid", lab.wifi.ssid.clone());
        set("wifi.password", lab.wifi.password.clone());
        set("device.profile", device.to_owned());
        set("device.cn", pki.manifest.device_id.clone());
        set("server.profile", profile.to_owned());
        if let Some(ota) = &ota {
            set("ota.host", ota_host.clone());
            set("ota.port", ota.addr.port().to_string());
            let url = ota.url(&ota_host, variant);
            set("ota.url_len", url.len().to_string());
            set("ota.url", url);
            set("ota.version", OTA_VERSION.to_owned());
        }
        set("firmware.version", FIRMWARE_VERSION.to_owned());
        Ok(Environment {
            broker_plain: broker.v4,
            sntp: sntp.addr,
            _gate: gate,
            sntp_server: Some(sntp),
            runtime: runtime.handle().clone(),
            _ota: ota,
            forward,
            vars,
        })
    }

    /// What a lab-network fixture gives the board: the lab's names → the services' address,
    /// SNTP's 123 → where SNTP listens, the lab's access point.
    pub fn lab_network(&self, lab: &Lab) -> LabNetwork {
        LabNetwork {
            hosts: [BROKER_HOST, SNTP_HOST, OTA_HOST]
                .into_iter()
                .map(|h| (h.to_owned(), lab.bind))
                .collect(),
            ports: BTreeMap::from([(123, self.sntp.port())]),
            wifi: lab.wifi.clone(),
        }
    }

    /// Values that differ between labs, with the placeholder snapshots show instead, so a
    /// snapshot taken on a virtual board matches the same scenario on a real one.
    pub fn snapshot_placeholders(&self) -> Vec<(String, &'static str)> {
        let mut placeholders: Vec<(String, &'static str)> = Vec::new();
        for (var, placeholder) in [
            ("broker.host", "<lab-host>"),
            ("sntp.host", "<lab-host>"),
            ("ota.host", "<lab-host>"),
            ("broker.ip", "<lab-host>"),
            ("wifi.ssid", "<wifi-ssid>"),
            ("wifi.password", "<wifi-password>"),
        ] {
            if let Some(value) = self.vars.get(var)
                && !value.is_empty()
            {
                placeholders.push((value.clone(), placeholder));
            }
        }
        // Longest first: a name is never cut by a shorter value inside it.
        placeholders.sort_by_key(|(value, _)| std::cmp::Reverse(value.len()));
        placeholders
    }

    /// The broker publishes to the device at QoS 1: a plain MQTT client on the broker's loopback
    /// port, waiting for the broker's PUBACK.
    pub fn publish_acknowledged(&self, topic: &str, payload: Vec<u8>) -> Result<(), String> {
        let broker = self.broker_plain;
        let mut options =
            rumqttc::MqttOptions::new("sparring-publisher", broker.ip().to_string(), broker.port());
        options.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut connection) = rumqttc::Client::new(options, 10);
        client
            .publish(topic, rumqttc::QoS::AtLeastOnce, false, payload)
            .map_err(|e| format!("queueing the publish: {e}"))?;
        // Until the broker acknowledged it; bounded.
        for notification in connection.iter().take(50) {
            match notification {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) => {
                    let _ = client.disconnect();
                    return Ok(());
                }
                Ok(_) => {}
                Err(e) => return Err(format!("publishing to the broker: {e}")),
            }
        }
        Err("the broker did not acknowledge the publish".into())
    }
}

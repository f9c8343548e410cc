//! The services one scenario talks to: a TLS gate in front of the run's broker with the
//! scenario's server certificate profile, an SNTP server with the scenario's clock, and (when
//! asked) the OTA server — all on loopback, their events fed into the scenario's observations,
//! and the variables (`${broker.port}`, ...) scenario steps refer to them by.

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

use crate::observe::Observations;
use crate::scenario::Setup;

/// Host names the board's hosts table resolves to loopback (the certificates name them).
pub const BROKER_HOST: &str = "broker.sparring.test";
pub const SNTP_HOST: &str = "time.sparring.test";
pub const OTA_HOST: &str = "ota.sparring.test";
/// The ESP-AT version the scenarios flash (`${firmware.version}`, `esp-at/boot.toml`); the
/// OTA server's `same-version` variant carries it too.
pub const FIRMWARE_VERSION: &str = "2.4.0.0";
/// The version the OTA server's images carry (scenarios flash an older one first).
pub const OTA_VERSION: &str = "2.5.0.0";
pub const WIFI_SSID: &str = "sparring-lab";
pub const WIFI_PASSWORD: &str = "correct horse";

#[derive(Debug, thiserror::Error)]
pub enum EnvironmentError {
    #[error("certificate profile: {0}")]
    Pki(#[from] sparring_pki::PkiError),
    #[error("TLS gate: {0}")]
    Gate(#[from] sparring_services::GateError),
    #[error("SNTP server: {0}")]
    Sntp(std::io::Error),
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
    _sntp: SntpServer,
    _ota: OtaService,
    forward: tokio::task::JoinHandle<()>,
    pub broker_plain: SocketAddr,
    pub sntp: SocketAddr,
    /// `${name}` values for the scenario's steps.
    pub vars: BTreeMap<String, String>,
}

impl Drop for Environment {
    fn drop(&mut self) {
        self.forward.abort();
    }
}

impl Environment {
    pub fn start(
        runtime: &Runtime,
        chip: Chip,
        pki: &PkiDir,
        broker: BrokerAddrs,
        setup: &Setup,
        observations: Arc<Observations>,
    ) -> Result<Environment, EnvironmentError> {
        let profile = setup.server_profile.as_deref().unwrap_or("valid");
        let mut config = gate::from_pki(pki, profile, setup.client_auth)?;
        config.broker = setup.broker.clone();
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
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let variant_name = setup.ota_variant.as_deref().unwrap_or("valid");
        let variant = Variant::from_name(variant_name)
            .ok_or_else(|| EnvironmentError::Variant(variant_name.to_owned()))?;
        let image = esp_formats::image::build_app(&AppSpec::new(chip, "esp-at", OTA_VERSION))
            .map_err(|e| EnvironmentError::Image(e.to_string()))?;
        // The app slots are the same in both storage layouts.
        let slot_size = esp_formats::partition::esp_at_layout(chip, Default::default())
            .main
            .find("ota_1")
            .map_or(0x100000, |p| p.size);
        let ota_tls = gate::from_pki(pki, "valid", false)?;
        let (gate, sntp, ota) = runtime.block_on(async {
            let gate = Gate::start(loopback, broker.v4, config, events.clone()).await?;
            let sntp = SntpServer::start(
                loopback,
                SntpConfig {
                    skew_seconds: setup.sntp_offset_secs,
                    silent: !setup.sntp,
                },
                events.clone(),
            )
            .await
            .map_err(EnvironmentError::Sntp)?;
            let ota = OtaService::start(
                loopback,
                ota_tls,
                OtaConfig {
                    image,
                    slot_size,
                    running_version: FIRMWARE_VERSION.to_owned(),
                    files: None,
                },
                events.clone(),
            )
            .await?;
            Ok::<_, EnvironmentError>((gate, sntp, ota))
        })?;
        let device = setup.device_profile.as_deref().unwrap_or("device-valid");
        let mut vars = BTreeMap::new();
        let mut set = |k: &str, v: String| vars.insert(k.to_owned(), v);
        set("broker.host", BROKER_HOST.to_owned());
        set("broker.ip", "127.0.0.1".to_owned());
        set("broker.port", gate.addr.port().to_string());
        set("sntp.host", SNTP_HOST.to_owned());
        set("wifi.ssid", WIFI_SSID.to_owned());
        set("wifi.password", WIFI_PASSWORD.to_owned());
        set("device.profile", device.to_owned());
        set("device.cn", pki.manifest.device_id.clone());
        set("server.profile", profile.to_owned());
        set("ota.host", OTA_HOST.to_owned());
        set("ota.port", ota.addr.port().to_string());
        let url = ota.url(OTA_HOST, variant);
        set("ota.url_len", url.len().to_string());
        set("ota.url", url);
        set("ota.version", OTA_VERSION.to_owned());
        set("firmware.version", FIRMWARE_VERSION.to_owned());
        Ok(Environment {
            broker_plain: broker.v4,
            sntp: sntp.addr,
            _gate: gate,
            _sntp: sntp,
            _ota: ota,
            forward,
            vars,
        })
    }
}

//! The services one scenario talks to: a TLS gate in front of the run's broker with the
//! scenario's server certificate profile, an SNTP server with the scenario's clock, and (when
//! asked) the OTA server — all on loopback, their events fed into the scenario's observations,
//! and the variables (`${broker.port}`, ...) scenario steps refer to them by.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sparring_pki::PkiDir;
use sparring_services::gate::{self, Gate};
use sparring_services::sntp::{SntpConfig, SntpServer};
use sparring_services::EventBus;
use tokio::runtime::Runtime;

use crate::observe::Observations;
use crate::scenario::Setup;

/// Host names the board's hosts table resolves to loopback (the certificates name them).
pub const BROKER_HOST: &str = "broker.sparring.test";
pub const SNTP_HOST: &str = "time.sparring.test";
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
}

/// Running services of one scenario; dropping it stops them.
pub struct Environment {
    _gate: Gate,
    _sntp: SntpServer,
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
        pki: &PkiDir,
        broker_plain: SocketAddr,
        setup: &Setup,
        observations: Arc<Observations>,
    ) -> Result<Environment, EnvironmentError> {
        let profile = setup.server_profile.as_deref().unwrap_or("valid");
        let mut config = gate::from_pki(pki, profile, setup.client_auth)?;
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
        let (gate, sntp) = runtime.block_on(async {
            let gate = Gate::start(loopback, broker_plain, config, events.clone()).await?;
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
            Ok::<_, EnvironmentError>((gate, sntp))
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
        Ok(Environment {
            broker_plain,
            sntp: sntp.addr,
            _gate: gate,
            _sntp: sntp,
            forward,
            vars,
        })
    }
}

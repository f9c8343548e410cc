//! The device-facing services — sparring's TLS gate in front of an embedded MQTT broker, an
//! SNTP server that can lie about the time — and the typed events they report.

pub mod broker;
pub mod events;
pub mod gate;
pub mod legacy_tls;
pub mod mqtt_proxy;
pub mod ota;
mod small_rsa;
pub mod sntp;

use std::net::SocketAddr;

pub use events::{Event, EventBus, EventKind};
pub use gate::{ClientAuth, Gate, GateConfig, GateError, Protocol, TlsSettings, TlsVersion};
pub use mqtt_proxy::{Ack, BrokerBehaviour};

/// A broker behind the TLS gate.
pub struct MqttService {
    pub gate: Gate,
    /// rumqttd's MQTT 3.1.1 listener (plaintext, loopback).
    pub broker: SocketAddr,
    /// rumqttd's MQTT 5 listener.
    pub broker_v5: SocketAddr,
    /// Publishes and subscribes inside the broker (rumqttd's local link).
    pub observer: broker::Observer,
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Broker(#[from] broker::BrokerError),
    #[error(transparent)]
    Gate(#[from] GateError),
    #[error("broker did not start listening on {0} within 5 s")]
    BrokerNotReady(SocketAddr),
}

impl MqttService {
    /// Starts rumqttd and the gate in front of it (routing MQTT 5 CONNECTs to rumqttd's
    /// MQTT 5 listener); events go to `events`.
    pub async fn start(
        bind: SocketAddr,
        config: GateConfig,
        events: EventBus,
    ) -> Result<MqttService, ServiceError> {
        let (broker, observer) = broker::start_rumqttd()?;
        wait_for_listener(broker.v4).await?;
        wait_for_listener(broker.v5).await?;
        let config = GateConfig {
            mqtt5_upstream: Some(broker.v5),
            ..config
        };
        let gate = Gate::start(bind, broker.v4, config, events).await?;
        Ok(MqttService {
            gate,
            broker: broker.v4,
            broker_v5: broker.v5,
            observer,
        })
    }
}

/// rumqttd binds asynchronously on its own thread; poll until it accepts (bounded).
pub async fn wait_for_listener(addr: SocketAddr) -> Result<(), ServiceError> {
    for _ in 0..250 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    Err(ServiceError::BrokerNotReady(addr))
}

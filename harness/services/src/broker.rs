//! The MQTT broker: rumqttd embedded on loopback, fed plaintext by the TLS gate.

use std::net::{SocketAddr, TcpListener};

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("finding a free loopback port: {0}")]
    Port(std::io::Error),
    #[error("rumqttd configuration: {0}")]
    Config(serde_json::Error),
}

/// Starts rumqttd (MQTT 3.1.1) on a free loopback port, on its own thread: its `start()`
/// blocks forever and cannot report the port it bound, so the port is chosen first.
pub fn start_rumqttd() -> Result<SocketAddr, BrokerError> {
    let addr = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(BrokerError::Port)?;
    // rumqttd's Config is built through serde because most of its settings structs have
    // private fields or no constructors.
    let config: rumqttd::Config = serde_json::from_value(serde_json::json!({
        "id": 0,
        "router": {
            "max_connections": 10010,
            "max_outgoing_packet_count": 200,
            "max_segment_size": 104857600,
            "max_segment_count": 10
        },
        "v4": {
            "1": {
                "name": "v4-1",
                "listen": addr.to_string(),
                "next_connection_delay_ms": 0,
                "connections": {
                    "connection_timeout_ms": 60000,
                    "max_payload_size": 1048576,
                    "max_inflight_count": 100,
                    "dynamic_filters": true
                }
            }
        }
    }))
    .map_err(BrokerError::Config)?;
    std::thread::Builder::new()
        .name("rumqttd".into())
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(config);
            if let Err(error) = broker.start() {
                tracing::error!("rumqttd stopped: {error}");
            }
        })
        .map_err(BrokerError::Port)?;
    Ok(addr)
}

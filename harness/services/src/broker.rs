//! The MQTT broker: rumqttd embedded on loopback, fed plaintext by the TLS gate.

use std::net::{SocketAddr, TcpListener};

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("finding a free loopback port: {0}")]
    Port(std::io::Error),
    #[error("rumqttd configuration: {0}")]
    Config(serde_json::Error),
}

/// rumqttd's plaintext listeners on loopback.
#[derive(Debug, Clone, Copy)]
pub struct BrokerAddrs {
    /// MQTT 3.1.1.
    pub v4: SocketAddr,
    /// MQTT 5.
    pub v5: SocketAddr,
}

fn free_port() -> Result<SocketAddr, BrokerError> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(BrokerError::Port)
}

/// Starts rumqttd (MQTT 3.1.1 and MQTT 5 listeners) on free loopback ports, on its own
/// thread: its `start()` blocks forever and cannot report the ports it bound, so they are
/// chosen first.
pub fn start_rumqttd() -> Result<BrokerAddrs, BrokerError> {
    let addr = free_port()?;
    let v5 = free_port()?;
    let connections = serde_json::json!({
        "connection_timeout_ms": 60000,
        "max_payload_size": 1048576,
        "max_inflight_count": 100,
        "dynamic_filters": true
    });
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
                "connections": connections
            }
        },
        "v5": {
            "1": {
                "name": "v5-1",
                "listen": v5.to_string(),
                "next_connection_delay_ms": 0,
                "connections": connections
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
    Ok(BrokerAddrs { v4: addr, v5 })
}

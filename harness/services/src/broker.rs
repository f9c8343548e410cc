//! The MQTT broker: rumqttd embedded on loopback, fed plaintext by the TLS gate.

use std::net::{SocketAddr, TcpListener};

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("rumqttd's local link: {0}")]
    Link(Box<rumqttd::local::LinkError>),
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

/// A client inside sparring on rumqttd's local link: publishes and subscribes without a
/// socket. rumqttd's local links carry QoS 0 only.
pub struct Observer {
    tx: rumqttd::local::LinkTx,
    rx: rumqttd::local::LinkRx,
}

fn link(error: rumqttd::local::LinkError) -> BrokerError {
    BrokerError::Link(Box::new(error))
}

/// A message the observer received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub topic: String,
    pub payload: Vec<u8>,
}

impl Observer {
    /// Publishes at QoS 0.
    pub fn publish(&mut self, topic: &str, payload: Vec<u8>) -> Result<(), BrokerError> {
        self.tx.publish(topic.to_owned(), payload).map_err(link)?;
        Ok(())
    }

    pub fn subscribe(&mut self, filter: &str) -> Result<(), BrokerError> {
        self.tx.subscribe(filter).map_err(link)?;
        Ok(())
    }

    /// The next message on a subscribed topic, waiting at most until `deadline`.
    pub fn next_message(&mut self, deadline: std::time::Instant) -> Option<Message> {
        // Bounded by the deadline: each round either returns or waits for the router.
        while std::time::Instant::now() < deadline {
            match self.rx.recv_deadline(deadline) {
                Ok(Some(rumqttd::Notification::Forward(forward))) => {
                    return Some(Message {
                        topic: String::from_utf8_lossy(&forward.publish.topic).into_owned(),
                        payload: forward.publish.payload.to_vec(),
                    });
                }
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    }
}

/// Two distinct free loopback ports: both are held until both are chosen, so the kernel
/// cannot hand the same one out twice.
fn free_ports() -> Result<(SocketAddr, SocketAddr), BrokerError> {
    let bind = || TcpListener::bind("127.0.0.1:0").map_err(BrokerError::Port);
    let (first, second) = (bind()?, bind()?);
    let addr = |l: &TcpListener| l.local_addr().map_err(BrokerError::Port);
    Ok((addr(&first)?, addr(&second)?))
}

/// Starts rumqttd (MQTT 3.1.1 and MQTT 5 listeners) on free loopback ports, on its own
/// thread: its `start()` blocks forever and cannot report the ports it bound, so they are
/// chosen first.
pub fn start_rumqttd() -> Result<(BrokerAddrs, Observer), BrokerError> {
    let (addr, v5) = free_ports()?;
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
    let mut broker = rumqttd::Broker::new(config);
    let (tx, rx) = broker.link("sparring-observer").map_err(link)?;
    std::thread::Builder::new()
        .name("rumqttd".into())
        .spawn(move || {
            if let Err(error) = broker.start() {
                tracing::error!("rumqttd stopped: {error}");
            }
        })
        .map_err(BrokerError::Port)?;
    Ok((BrokerAddrs { v4: addr, v5 }, Observer { tx, rx }))
}

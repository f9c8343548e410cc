//! The MQTT side of the TLS gate: the plaintext between a device and rumqttd, cut into packets
//! with rumqttc's codec, each recorded as an event, and the broker's misbehaviour on demand —
//! refused or withheld CONNACKs, withheld or delayed acknowledgements, a disconnect some time
//! after a good connect — plus the cloud-broker policy "client id = certificate CN".
//!
//! Faults live here rather than in rumqttd because rumqttd has no hooks to drop or delay its
//! own packets; a proxy that sees every packet can, and the device cannot tell the difference.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use crate::events::{Direction, EventBus, EventKind, MqttRecord};

/// Largest packet the tap parses (rumqttd's `max_payload_size` plus headers).
const MAX_PACKET: usize = 1 << 21;

/// MQTT 3.1.1 CONNACK return codes the broker side sends on its own.
const IDENTIFIER_REJECTED: u8 = 0x02;
const SERVER_UNAVAILABLE: u8 = 0x03;

/// An acknowledgement the broker can withhold or delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ack {
    Connack,
    Puback,
    Suback,
    Pingresp,
}

impl Ack {
    fn of(packet: &rumqttc::Packet) -> Option<Ack> {
        match packet {
            rumqttc::Packet::ConnAck(_) => Some(Ack::Connack),
            rumqttc::Packet::PubAck(_) => Some(Ack::Puback),
            rumqttc::Packet::SubAck(_) => Some(Ack::Suback),
            rumqttc::Packet::PingResp => Some(Ack::Pingresp),
            _ => None,
        }
    }
}

/// How the broker behaves towards devices (all off by default: a well-behaved broker).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct BrokerBehaviour {
    /// The first N CONNECTs (counted over all connections) get CONNACK "server unavailable".
    pub refuse_connects: u32,
    /// The first N CONNECTs get no CONNACK at all.
    pub withhold_connack: u32,
    /// Close the connection this long after a successful CONNACK.
    pub disconnect_after_ms: Option<u64>,
    /// Acknowledgements never sent (`withhold = ["puback"]`).
    pub withhold: Vec<Ack>,
    /// Acknowledgements sent `delay_ms` late.
    pub delay: Vec<Ack>,
    pub delay_ms: u64,
    /// Cloud-broker policy: the CONNECT's client id must equal the device certificate's CN,
    /// else CONNACK "identifier rejected".
    pub client_id_must_match_cn: bool,
}

/// One gate's proxy state, shared by its connections.
#[derive(Debug, Default)]
pub struct ProxyShared {
    pub behaviour: BrokerBehaviour,
    connects: AtomicU32,
}

impl ProxyShared {
    pub fn new(behaviour: BrokerBehaviour) -> Self {
        Self {
            behaviour,
            connects: AtomicU32::new(0),
        }
    }
}

/// One connection, as the proxy sees it.
pub struct Connection<'a> {
    pub peer: SocketAddr,
    pub service: &'a str,
    pub client_cn: Option<String>,
    pub events: &'a EventBus,
    pub shared: &'a ProxyShared,
}

impl Connection<'_> {
    fn emit(&self, record: MqttRecord) {
        self.events
            .emit(self.service, self.peer, EventKind::Mqtt(record));
    }
}

/// What the device-side pump asks the broker-side pump to do instead of the broker.
enum Inject {
    /// Answer the CONNECT with this return code, then close.
    Refuse(u8),
}

/// Copies both ways packet by packet, recording each and applying the broker behaviour.
/// Ends when both directions end, or when a fault closes the connection.
pub async fn proxy<S>(device: S, broker: TcpStream, conn: Connection<'_>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (device_rx, device_tx) = tokio::io::split(device);
    let (broker_rx, broker_tx) = broker.into_split();
    let (inject_tx, inject_rx) = mpsc::channel(1);
    // Which CONNECT (over the gate's life) this connection sent, once it sent one.
    let connect_index = Mutex::new(None);
    let closed_by_fault = Notify::new();
    let up = upstream(device_rx, broker_tx, &conn, &connect_index, inject_tx);
    let down = downstream(
        broker_rx,
        device_tx,
        &conn,
        &connect_index,
        inject_rx,
        &closed_by_fault,
    );
    tokio::select! {
        _ = async { tokio::join!(up, down) } => {}
        () = closed_by_fault.notified() => {}
    }
}

/// Cuts a byte stream into MQTT packets (raw bytes and parsed), as they complete. Once the
/// stream stops parsing (not MQTT, e.g. HTTP through the OTA gate) it is passed on raw.
#[derive(Default)]
struct Framer {
    buffer: BytesMut,
    broken: bool,
}

enum Frame {
    Packet(BytesMut, rumqttc::Packet),
    Raw(BytesMut),
}

impl Framer {
    /// The next complete frame, if any.
    fn next(&mut self) -> Option<Frame> {
        if self.buffer.is_empty() {
            return None;
        }
        if self.broken {
            return Some(Frame::Raw(self.buffer.split()));
        }
        match rumqttc::mqttbytes::check(self.buffer.iter(), MAX_PACKET) {
            Ok(header) => {
                let raw = self.buffer.split_to(header.frame_length());
                let mut copy = raw.clone();
                match rumqttc::Packet::read(&mut copy, MAX_PACKET) {
                    Ok(packet) => Some(Frame::Packet(raw, packet)),
                    Err(_) => {
                        self.broken = true;
                        let mut rest = raw;
                        rest.unsplit(self.buffer.split());
                        Some(Frame::Raw(rest))
                    }
                }
            }
            Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => None,
            Err(_) => {
                self.broken = true;
                Some(Frame::Raw(self.buffer.split()))
            }
        }
    }
}

/// Device → broker.
async fn upstream(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    conn: &Connection<'_>,
    connect_index: &Mutex<Option<u32>>,
    inject: mpsc::Sender<Inject>,
) {
    let behaviour = &conn.shared.behaviour;
    let mut framer = Framer::default();
    let mut buf = vec![0u8; 16 * 1024];
    'reading: while let Ok(n) = from.read(&mut buf).await {
        if n == 0 {
            break;
        }
        framer.buffer.extend_from_slice(&buf[..n]);
        // Bounded by the bytes just read: every frame consumes at least two.
        while let Some(frame) = framer.next() {
            let raw = match frame {
                Frame::Raw(raw) => raw,
                Frame::Packet(raw, packet) => {
                    conn.emit(record(Direction::FromDevice, &packet, None));
                    if let rumqttc::Packet::Connect(connect) = &packet {
                        let index = conn.shared.connects.fetch_add(1, Ordering::SeqCst);
                        if let Ok(mut slot) = connect_index.lock() {
                            *slot = Some(index);
                        }
                        let wrong_id = behaviour.client_id_must_match_cn
                            && conn.client_cn.as_deref() != Some(connect.client_id.as_str());
                        let refusal = if wrong_id {
                            Some(IDENTIFIER_REJECTED)
                        } else if index < behaviour.refuse_connects {
                            Some(SERVER_UNAVAILABLE)
                        } else {
                            None
                        };
                        if let Some(code) = refusal {
                            // The broker never hears of it.
                            let _ = inject.send(Inject::Refuse(code)).await;
                            break 'reading;
                        }
                    }
                    raw
                }
            };
            if to.write_all(&raw).await.is_err() {
                break 'reading;
            }
        }
    }
    let _ = to.shutdown().await;
}

/// Broker → device.
async fn downstream(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    conn: &Connection<'_>,
    connect_index: &Mutex<Option<u32>>,
    mut inject: mpsc::Receiver<Inject>,
    closed_by_fault: &Notify,
) {
    let behaviour = &conn.shared.behaviour;
    let mut framer = Framer::default();
    let mut buf = vec![0u8; 16 * 1024];
    // Set once a good CONNACK went out, with `disconnect-after-ms`.
    let mut disconnect_at: Option<Instant> = None;
    let far = Duration::from_secs(24 * 3600);
    loop {
        let deadline = disconnect_at.unwrap_or_else(|| Instant::now() + far);
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(n) if n > 0 => n,
                _ => break,
            },
            Some(Inject::Refuse(code)) = inject.recv() => {
                let connack = [0x20, 0x02, 0x00, code];
                let _ = to.write_all(&connack).await;
                let _ = to.flush().await;
                let mut copy = BytesMut::from(&connack[..]);
                if let Ok(packet) = rumqttc::Packet::read(&mut copy, MAX_PACKET) {
                    conn.emit(record(Direction::ToDevice, &packet, Some("refused")));
                }
                let _ = to.shutdown().await;
                closed_by_fault.notify_one();
                return;
            }
            () = tokio::time::sleep_until(deadline), if disconnect_at.is_some() => {
                let mut closed = record(Direction::ToDevice, &rumqttc::Packet::Disconnect, Some("disconnect-after-ms"));
                closed.packet = "CLOSE".into();
                conn.emit(closed);
                let _ = to.shutdown().await;
                closed_by_fault.notify_one();
                return;
            }
        };
        framer.buffer.extend_from_slice(&buf[..n]);
        while let Some(frame) = framer.next() {
            let raw = match frame {
                Frame::Raw(raw) => raw,
                Frame::Packet(raw, packet) => {
                    let ack = Ack::of(&packet);
                    let index = connect_index.lock().ok().and_then(|slot| *slot);
                    let withheld = match ack {
                        Some(Ack::Connack) => {
                            index.is_some_and(|i| i < behaviour.withhold_connack)
                                || behaviour.withhold.contains(&Ack::Connack)
                        }
                        Some(ack) => behaviour.withhold.contains(&ack),
                        None => false,
                    };
                    if withheld {
                        conn.emit(record(Direction::ToDevice, &packet, Some("withheld")));
                        continue;
                    }
                    let delayed = ack.is_some_and(|a| behaviour.delay.contains(&a));
                    if delayed {
                        tokio::time::sleep(Duration::from_millis(behaviour.delay_ms)).await;
                    }
                    conn.emit(record(
                        Direction::ToDevice,
                        &packet,
                        delayed.then_some("delayed"),
                    ));
                    if let rumqttc::Packet::ConnAck(ack) = &packet
                        && ack.code == rumqttc::ConnectReturnCode::Success
                        && let Some(ms) = behaviour.disconnect_after_ms
                    {
                        disconnect_at = Some(Instant::now() + Duration::from_millis(ms));
                    }
                    raw
                }
            };
            if to.write_all(&raw).await.is_err() {
                return;
            }
        }
    }
    let _ = to.shutdown().await;
}

fn record(direction: Direction, packet: &rumqttc::Packet, fault: Option<&str>) -> MqttRecord {
    use rumqttc::Packet as P;
    let mut r = MqttRecord {
        direction,
        packet: String::new(),
        client_id: None,
        topic: None,
        qos: None,
        payload_size: None,
        packet_id: None,
        keep_alive: None,
        clean_session: None,
        username: None,
        return_code: None,
        fault: fault.map(str::to_owned),
    };
    r.packet = match packet {
        P::Connect(c) => {
            r.client_id = Some(c.client_id.clone());
            r.keep_alive = Some(c.keep_alive);
            r.clean_session = Some(c.clean_session);
            r.username = c.login.as_ref().map(|l| l.username.clone());
            "CONNECT"
        }
        P::ConnAck(a) => {
            r.return_code = Some(format!("{:?}", a.code));
            "CONNACK"
        }
        P::Publish(p) => {
            r.topic = Some(p.topic.clone());
            r.qos = Some(p.qos as u8);
            r.payload_size = Some(p.payload.len());
            r.packet_id = Some(p.pkid);
            "PUBLISH"
        }
        P::PubAck(a) => {
            r.packet_id = Some(a.pkid);
            "PUBACK"
        }
        P::PubRec(_) => "PUBREC",
        P::PubRel(_) => "PUBREL",
        P::PubComp(_) => "PUBCOMP",
        P::Subscribe(s) => {
            r.topic = s.filters.first().map(|f| f.path.clone());
            r.packet_id = Some(s.pkid);
            "SUBSCRIBE"
        }
        P::SubAck(a) => {
            r.packet_id = Some(a.pkid);
            "SUBACK"
        }
        P::Unsubscribe(_) => "UNSUBSCRIBE",
        P::UnsubAck(_) => "UNSUBACK",
        P::PingReq => "PINGREQ",
        P::PingResp => "PINGRESP",
        P::Disconnect => "DISCONNECT",
    }
    .to_owned();
    r
}

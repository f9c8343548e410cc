//! The MQTT side of the TLS gate: the plaintext between a device and rumqttd (its MQTT 3.1.1
//! or MQTT 5 listener, as the CONNECT asks), cut into packets with rumqttc's codecs, each
//! recorded as an event, and the broker's misbehaviour on demand —
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

/// An acknowledgement the broker can withhold or delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ack {
    Connack,
    Puback,
    Suback,
    Pingresp,
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
    /// Answer the CONNECT with a refusal, then close.
    Refuse(Refusal),
}

/// Why the gate answers a CONNECT itself.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    ServerUnavailable,
    IdentifierRejected,
}

/// Which broker listener the device's CONNECT asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    /// MQTT 3.1.1 (protocol level 4; level 3 goes to the same listener).
    V4,
    /// MQTT 5.
    V5,
}

/// rumqttd's listeners behind the gate.
#[derive(Debug, Clone, Copy)]
pub struct Upstreams {
    pub v4: SocketAddr,
    pub v5: Option<SocketAddr>,
}

/// How long the gate waits for the first packet (the CONNECT) after the handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Copies both ways packet by packet, recording each and applying the broker behaviour.
/// The CONNECT's protocol level picks rumqttd's v4 or v5 listener, as one port of a real
/// broker serves both. Ends when both directions end, or when a fault closes the connection.
pub async fn proxy<S>(device: S, upstreams: Upstreams, conn: Connection<'_>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut device_rx, device_tx) = tokio::io::split(device);
    let mut first = BytesMut::new();
    let Ok(Some(version)) =
        tokio::time::timeout(CONNECT_TIMEOUT, read_version(&mut device_rx, &mut first)).await
    else {
        return;
    };
    let target = match (version, upstreams.v5) {
        (Version::V5, Some(v5)) => v5,
        _ => upstreams.v4,
    };
    let Ok(broker) = TcpStream::connect(target).await else {
        return;
    };
    let (broker_rx, broker_tx) = broker.into_split();
    let (inject_tx, inject_rx) = mpsc::channel(1);
    // Which CONNECT (over the gate's life) this connection sent, once it sent one.
    let connect_index = Mutex::new(None);
    let closed_by_fault = Notify::new();
    let up = upstream(
        device_rx,
        broker_tx,
        Framer::new(version, first),
        &conn,
        &connect_index,
        inject_tx,
    );
    let down = downstream(
        broker_rx,
        device_tx,
        Framer::new(version, BytesMut::new()),
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

/// Reads until the first packet's protocol level is in `buffer`; `None` when the stream ends
/// first. Anything that is not a CONNECT goes to the v4 listener, which refuses it.
async fn read_version(
    from: &mut (impl AsyncRead + Unpin),
    buffer: &mut BytesMut,
) -> Option<Version> {
    let mut buf = [0u8; 1024];
    // Bounded by the caller's timeout and by the packet size limit.
    while buffer.len() < MAX_PACKET {
        if let Some(version) = protocol_level(buffer) {
            return Some(version);
        }
        let n = from.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        buffer.extend_from_slice(&buf[..n]);
    }
    Some(Version::V4)
}

/// The protocol level of a CONNECT at the start of `bytes`: the fixed header (type, 1–4
/// bytes of remaining length), then `00 04 'M' 'Q' 'T' 'T'` and the level byte.
fn protocol_level(bytes: &[u8]) -> Option<Version> {
    let first = *bytes.first()?;
    if first >> 4 != 1 {
        return Some(Version::V4);
    }
    let length_bytes = bytes.get(1..)?.iter().take(4).position(|b| b & 0x80 == 0)? + 1;
    let level = *bytes.get(1 + length_bytes + 6)?;
    Some(if level == 5 { Version::V5 } else { Version::V4 })
}

/// Cuts a byte stream into MQTT packets as they complete, each with what the proxy needs to
/// know of it. Once the stream stops parsing (not MQTT) it is passed on raw.
struct Framer {
    version: Version,
    buffer: BytesMut,
    broken: bool,
}

/// One packet, whatever the MQTT version.
struct Seen {
    record: MqttRecord,
    ack: Option<Ack>,
    /// CONNECT: the client id.
    client_id: Option<String>,
    /// CONNACK: whether it accepts the connection.
    accepted: Option<bool>,
}

impl Seen {
    fn new(direction: Direction, packet: &str) -> Self {
        Self {
            record: empty_record(direction, packet),
            ack: None,
            client_id: None,
            accepted: None,
        }
    }
}

enum Frame {
    Packet(BytesMut, Box<Seen>),
    Raw(BytesMut),
}

impl Framer {
    fn new(version: Version, buffer: BytesMut) -> Self {
        Self {
            version,
            buffer,
            broken: false,
        }
    }

    /// The next complete frame, if any.
    fn next(&mut self, direction: Direction) -> Option<Frame> {
        if self.buffer.is_empty() {
            return None;
        }
        if self.broken {
            return Some(Frame::Raw(self.buffer.split()));
        }
        // The fixed header is the same in both versions.
        match rumqttc::mqttbytes::check(self.buffer.iter(), MAX_PACKET) {
            Ok(header) => {
                let raw = self.buffer.split_to(header.frame_length());
                match parse(self.version, &raw, direction) {
                    Some(seen) => Some(Frame::Packet(raw, Box::new(seen))),
                    None => {
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

    /// The CONNACK refusing a connection, in this connection's version.
    fn refusal(&self, refusal: Refusal) -> Vec<u8> {
        match (self.version, refusal) {
            (Version::V4, Refusal::ServerUnavailable) => vec![0x20, 0x02, 0x00, 0x03],
            (Version::V4, Refusal::IdentifierRejected) => vec![0x20, 0x02, 0x00, 0x02],
            // Reason codes 0x88 "Server unavailable" and 0x85 "Client Identifier not valid",
            // no properties.
            (Version::V5, Refusal::ServerUnavailable) => vec![0x20, 0x03, 0x00, 0x88, 0x00],
            (Version::V5, Refusal::IdentifierRejected) => vec![0x20, 0x03, 0x00, 0x85, 0x00],
        }
    }
}

/// Device → broker.
async fn upstream(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    mut framer: Framer,
    conn: &Connection<'_>,
    connect_index: &Mutex<Option<u32>>,
    inject: mpsc::Sender<Inject>,
) {
    let behaviour = &conn.shared.behaviour;
    let mut buf = vec![0u8; 16 * 1024];
    // The CONNECT already read comes first.
    let mut n = 0;
    'reading: loop {
        framer.buffer.extend_from_slice(&buf[..n]);
        // Bounded by the bytes read: every frame consumes at least two.
        while let Some(frame) = framer.next(Direction::FromDevice) {
            let raw = match frame {
                Frame::Raw(raw) => raw,
                Frame::Packet(raw, seen) => {
                    conn.emit(seen.record);
                    if let Some(client_id) = seen.client_id {
                        let index = conn.shared.connects.fetch_add(1, Ordering::SeqCst);
                        if let Ok(mut slot) = connect_index.lock() {
                            *slot = Some(index);
                        }
                        let wrong_id = behaviour.client_id_must_match_cn
                            && conn.client_cn.as_deref() != Some(client_id.as_str());
                        let refusal = if wrong_id {
                            Some(Refusal::IdentifierRejected)
                        } else if index < behaviour.refuse_connects {
                            Some(Refusal::ServerUnavailable)
                        } else {
                            None
                        };
                        if let Some(refusal) = refusal {
                            // The broker never hears of it.
                            let _ = inject.send(Inject::Refuse(refusal)).await;
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
        n = match from.read(&mut buf).await {
            Ok(n) if n > 0 => n,
            _ => break,
        };
    }
    let _ = to.shutdown().await;
}

/// Broker → device.
async fn downstream(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    mut framer: Framer,
    conn: &Connection<'_>,
    connect_index: &Mutex<Option<u32>>,
    mut inject: mpsc::Receiver<Inject>,
    closed_by_fault: &Notify,
) {
    let behaviour = &conn.shared.behaviour;
    let mut buf = vec![0u8; 16 * 1024];
    // Set once a good CONNACK went out, with `disconnect-after-ms`.
    let mut disconnect_at: Option<Instant> = None;
    let far = Duration::from_secs(24 * 3600);
    loop {
        let deadline = disconnect_at.unwrap_or_else(|| Instant::now() + far);
        let n = tokio::select! {
            // A refusal first: the upstream task queues it, then closes the broker side, and
            // the broker's end of stream must not win the race and drop the CONNACK.
            biased;
            Some(Inject::Refuse(refusal)) = inject.recv() => {
                let connack = framer.refusal(refusal);
                let _ = to.write_all(&connack).await;
                let _ = to.flush().await;
                if let Some(mut seen) = parse(framer.version, &connack, Direction::ToDevice) {
                    seen.record.fault = Some("refused".into());
                    conn.emit(seen.record);
                }
                let _ = to.shutdown().await;
                closed_by_fault.notify_one();
                return;
            }
            read = from.read(&mut buf) => match read {
                Ok(n) if n > 0 => n,
                _ => break,
            },
            () = tokio::time::sleep_until(deadline), if disconnect_at.is_some() => {
                let mut closed = empty_record(Direction::ToDevice, "CLOSE");
                closed.fault = Some("disconnect-after-ms".into());
                conn.emit(closed);
                let _ = to.shutdown().await;
                closed_by_fault.notify_one();
                return;
            }
        };
        framer.buffer.extend_from_slice(&buf[..n]);
        while let Some(frame) = framer.next(Direction::ToDevice) {
            let raw = match frame {
                Frame::Raw(raw) => raw,
                Frame::Packet(raw, seen) => {
                    let Seen {
                        mut record,
                        ack,
                        accepted,
                        ..
                    } = *seen;
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
                        record.fault = Some("withheld".into());
                        conn.emit(record);
                        continue;
                    }
                    let delayed = ack.is_some_and(|a| behaviour.delay.contains(&a));
                    if delayed {
                        tokio::time::sleep(Duration::from_millis(behaviour.delay_ms)).await;
                        record.fault = Some("delayed".into());
                    }
                    conn.emit(record);
                    if accepted == Some(true)
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

fn empty_record(direction: Direction, packet: &str) -> MqttRecord {
    MqttRecord {
        direction,
        packet: packet.to_owned(),
        client_id: None,
        topic: None,
        qos: None,
        payload_size: None,
        packet_id: None,
        keep_alive: None,
        clean_session: None,
        username: None,
        will_topic: None,
        dup: None,
        retain: None,
        return_code: None,
        fault: None,
        protocol: None,
    }
}

/// Packet names by the fixed header's type (the same in MQTT 3.1.1 and 5).
const PACKET_NAMES: [&str; 16] = [
    "RESERVED",
    "CONNECT",
    "CONNACK",
    "PUBLISH",
    "PUBACK",
    "PUBREC",
    "PUBREL",
    "PUBCOMP",
    "SUBSCRIBE",
    "SUBACK",
    "UNSUBSCRIBE",
    "UNSUBACK",
    "PINGREQ",
    "PINGRESP",
    "DISCONNECT",
    "AUTH",
];

fn parse(version: Version, raw: &[u8], direction: Direction) -> Option<Seen> {
    let flags = *raw.first()?;
    let kind = usize::from(flags >> 4);
    let mut seen = Seen::new(direction, PACKET_NAMES[kind]);
    if kind == 3 {
        // PUBLISH's DUP, QoS and RETAIN sit in the fixed header in both versions.
        seen.record.dup = Some(flags & 0x08 != 0);
        seen.record.qos = Some((flags >> 1) & 0x03);
        seen.record.retain = Some(flags & 0x01 != 0);
    }
    seen.ack = match kind {
        2 => Some(Ack::Connack),
        4 => Some(Ack::Puback),
        9 => Some(Ack::Suback),
        13 => Some(Ack::Pingresp),
        _ => None,
    };
    let mut copy = BytesMut::from(raw);
    match version {
        Version::V4 => {
            let packet = rumqttc::Packet::read(&mut copy, MAX_PACKET).ok()?;
            describe_v4(&packet, &mut seen);
        }
        Version::V5 => {
            let max = u32::try_from(MAX_PACKET).ok();
            let packet = rumqttc::v5::mqttbytes::v5::Packet::read(&mut copy, max).ok()?;
            describe_v5(&packet, &mut seen);
        }
    }
    Some(seen)
}

/// The fields of a 3.1.1 packet worth recording.
fn describe_v4(packet: &rumqttc::Packet, seen: &mut Seen) {
    use rumqttc::Packet as P;
    let r = &mut seen.record;
    match packet {
        P::Connect(c) => {
            r.client_id = Some(c.client_id.clone());
            r.keep_alive = Some(c.keep_alive);
            r.clean_session = Some(c.clean_session);
            r.username = c.login.as_ref().map(|l| l.username.clone());
            r.will_topic = c.last_will.as_ref().map(|w| w.topic.clone());
            r.protocol = Some("3.1.1".into());
            seen.client_id = Some(c.client_id.clone());
        }
        P::ConnAck(a) => {
            r.return_code = Some(format!("{:?}", a.code));
            seen.accepted = Some(a.code == rumqttc::ConnectReturnCode::Success);
        }
        P::Publish(p) => {
            r.topic = Some(p.topic.clone());
            r.payload_size = Some(p.payload.len());
            r.packet_id = Some(p.pkid);
        }
        P::PubAck(a) => r.packet_id = Some(a.pkid),
        P::Subscribe(s) => {
            r.topic = s.filters.first().map(|f| f.path.clone());
            r.packet_id = Some(s.pkid);
        }
        P::SubAck(a) => r.packet_id = Some(a.pkid),
        P::Unsubscribe(u) => r.packet_id = Some(u.pkid),
        P::UnsubAck(a) => r.packet_id = Some(a.pkid),
        P::PubRec(a) => r.packet_id = Some(a.pkid),
        P::PubRel(a) => r.packet_id = Some(a.pkid),
        P::PubComp(a) => r.packet_id = Some(a.pkid),
        _ => {}
    }
}

/// The fields of an MQTT 5 packet worth recording.
fn describe_v5(packet: &rumqttc::v5::mqttbytes::v5::Packet, seen: &mut Seen) {
    use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode, Packet as P};
    let r = &mut seen.record;
    match packet {
        P::Connect(c, will, login) => {
            r.client_id = Some(c.client_id.clone());
            r.keep_alive = Some(c.keep_alive);
            r.clean_session = Some(c.clean_start);
            r.username = login.as_ref().map(|l| l.username.clone());
            r.will_topic = will
                .as_ref()
                .map(|w| String::from_utf8_lossy(&w.topic).into_owned());
            r.protocol = Some("5".into());
            seen.client_id = Some(c.client_id.clone());
        }
        P::ConnAck(a) => {
            r.return_code = Some(format!("{:?}", a.code));
            seen.accepted = Some(a.code == ConnectReturnCode::Success);
        }
        P::Publish(p) => {
            r.topic = Some(String::from_utf8_lossy(&p.topic).into_owned());
            r.payload_size = Some(p.payload.len());
            r.packet_id = Some(p.pkid);
        }
        P::PubAck(a) => r.packet_id = Some(a.pkid),
        P::Subscribe(s) => {
            r.topic = s.filters.first().map(|f| f.path.clone());
            r.packet_id = Some(s.pkid);
        }
        P::SubAck(a) => r.packet_id = Some(a.pkid),
        P::Unsubscribe(u) => r.packet_id = Some(u.pkid),
        P::UnsubAck(a) => r.packet_id = Some(a.pkid),
        P::PubRec(a) => r.packet_id = Some(a.pkid),
        P::PubRel(a) => r.packet_id = Some(a.pkid),
        P::PubComp(a) => r.packet_id = Some(a.pkid),
        _ => {}
    }
}

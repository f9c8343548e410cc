//! The module's MQTT client (esp-mqtt as ESP-AT drives it): one session thread per
//! `AT+MQTTCONN`, real TCP/TLS to the address the board's network resolves, MQTT 3.1.1 packets
//! through rumqttc's codec, esp-mqtt's keep-alive, retransmission (DUP) and QoS 2 handshakes,
//! its fixed reconnect wait, and the heap the session costs. Every wait goes through
//! [`Shared::scaled`], the board's time scale.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{
    Connect, ConnectReturnCode, LastWill, Login, Packet, PubAck, PubComp, PubRec, PubRel, Publish,
    Subscribe, Unsubscribe,
};

use super::console::Console;
use super::costs;
use super::engine::{MqttConnect, MqttMessage};
use super::tls::{self, Credentials, Transport};
use crate::personality::{Defect, LogLevel, Shared};

/// Largest packet the client accepts (esp-mqtt reassembles up to its buffer; bigger is fine).
const MAX_PACKET: usize = 1 << 20;
/// Incoming payloads above this are "large records" for the crash defect: more than one
/// mbedTLS output record (`CONFIG_MBEDTLS_SSL_OUT_CONTENT_LEN` 4096).
const LARGE_RECORD: usize = 4096;
/// esp-mqtt waits a fixed `reconnect_timeout_ms` after every failed or lost connection, no
/// backoff and no jitter: `esp_mqtt_abort_connection` sets `wait_timeout_ms =
/// reconnect_timeout_ms`, which defaults to `MQTT_RECON_DEFAULT_MS` (10 s) when unset
/// (espressif/esp-mqtt `mqtt_client.c`, `lib/include/mqtt_config.h`); ESP-AT's `AT+MQTTCONN`
/// offers only the `reconnect` on/off flag (`disable_auto_reconnect`), no interval.
pub const RECONNECT_WAIT: Duration = Duration::from_secs(10);
/// Unacknowledged QoS 1/2 publishes (and subscribes: esp-mqtt resends any TRANSMITTED outbox
/// item) go out again after `MQTT_DEFAULT_RETRANSMIT_TIMEOUT_MS`, one item per interval,
/// PUBLISH with DUP set (`mqtt_resend_queued`, esp-mqtt `mqtt_client.c`).
pub const RETRANSMIT: Duration = Duration::from_millis(1000);
/// Outbox items nobody acknowledged are dropped after `OUTBOX_EXPIRED_TIMEOUT_MS` (30 s).
const OUTBOX_EXPIRY: Duration = Duration::from_secs(30);
/// How long a publish/subscribe command waits for its acknowledgement.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// What the session thread needs from the board.
pub struct SessionEnv {
    pub shared: Arc<Shared>,
    pub console: Console,
    pub credentials: Credentials,
}

enum Command {
    Publish(MqttMessage, Sender<bool>),
    Subscribe(String, u8, Sender<bool>),
    Unsubscribe(String, Sender<bool>),
}

/// A running client: the session thread and the way to reach it.
pub struct MqttClient {
    commands: Sender<Command>,
    connected: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// The first attempt's result, which `AT+MQTTCONN` waits for.
pub type FirstAttempt = Result<(), ()>;

impl MqttClient {
    /// Starts the session thread; the returned receiver yields the first attempt's result.
    pub fn start(request: MqttConnect, env: SessionEnv) -> (MqttClient, Receiver<FirstAttempt>) {
        let (commands, command_rx) = channel();
        let (first_tx, first_rx) = channel();
        let connected = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (connected, stop) = (connected.clone(), stop.clone());
            std::thread::spawn(move || {
                let task = Task {
                    request,
                    env,
                    commands: command_rx,
                    connected,
                    stop,
                };
                task.run(first_tx);
            })
        };
        let client = MqttClient {
            commands,
            connected,
            stop,
            thread: Some(thread),
        };
        (client, first_rx)
    }

    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::SeqCst)
    }

    fn ask(&self, make: impl FnOnce(Sender<bool>) -> Command) -> bool {
        let (tx, rx) = channel();
        if self.commands.send(make(tx)).is_err() {
            return false;
        }
        rx.recv_timeout(ACK_TIMEOUT + Duration::from_secs(1))
            .unwrap_or(false)
    }

    pub fn publish(&self, message: MqttMessage) -> bool {
        self.ask(|tx| Command::Publish(message, tx))
    }

    pub fn subscribe(&self, topic: String, qos: u8) -> bool {
        self.ask(|tx| Command::Subscribe(topic, qos, tx))
    }

    pub fn unsubscribe(&self, topic: String) -> bool {
        self.ask(|tx| Command::Unsubscribe(topic, tx))
    }
}

impl Drop for MqttClient {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Task {
    request: MqttConnect,
    env: SessionEnv,
    commands: Receiver<Command>,
    connected: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

/// Why a session ended or never started.
enum Ended {
    /// Could not connect (already logged).
    Failed,
    /// Was connected, then lost the connection.
    Lost,
    Stopped,
    /// The firmware crashed (crash defect); the board reboots.
    Crashed,
}

impl Task {
    fn log(&self, level: LogLevel, tag: &str, message: &str) {
        self.env.console.log(level, tag, message);
    }

    /// Connects, and with `reconnect` on, connects again [`RECONNECT_WAIT`] after every failed
    /// or lost connection until stopped (`AT+MQTTCLEAN`, a reset), as esp-mqtt does forever.
    fn run(self, first: Sender<FirstAttempt>) {
        let mut first = Some(first);
        let mut last_attempt: Option<Instant> = None;
        loop {
            if self.stop.load(Ordering::SeqCst) {
                return;
            }
            if let Some(previous) = last_attempt {
                let gap = previous.elapsed().as_millis();
                self.env
                    .shared
                    .net_stats
                    .last_backoff_ms
                    .store(u32::try_from(gap).unwrap_or(u32::MAX), Ordering::SeqCst);
            }
            last_attempt = Some(Instant::now());
            self.env
                .shared
                .net_stats
                .connect_attempts
                .fetch_add(1, Ordering::SeqCst);
            let ended = self.session(&mut first);
            match ended {
                Ended::Stopped | Ended::Crashed => return,
                Ended::Failed | Ended::Lost => {
                    if let Some(first) = first.take() {
                        let _ = first.send(Err(()));
                    } else {
                        self.env.console.at(b"+MQTTDISCONNECTED:0\r\n".to_vec());
                    }
                }
            }
            if !self.request.reconnect {
                return;
            }
            let wait = if self.defect(Defect::NoBackoff) {
                Duration::ZERO
            } else {
                self.env.shared.scaled(RECONNECT_WAIT)
            };
            if !self.sleep(wait) {
                return;
            }
        }
    }

    fn defect(&self, defect: Defect) -> bool {
        self.env.shared.has_defect(|d| *d == defect).is_some()
    }

    /// Sleeps unless stopped; false when stopped.
    fn sleep(&self, duration: Duration) -> bool {
        let deadline = Instant::now() + duration;
        while Instant::now() < deadline {
            if self.stop.load(Ordering::SeqCst) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        !self.stop.load(Ordering::SeqCst)
    }

    /// One connection: connect, then serve it until it ends.
    fn session(&self, first: &mut Option<Sender<FirstAttempt>>) -> Ended {
        let tls = self.request.user.uses_tls();
        let session_cost = if tls { costs::TLS_SESSION } else { 0 } + costs::MQTT_CLIENT;
        let mut wire = match self.connect() {
            Ok(wire) => wire,
            Err(()) => return Ended::Failed,
        };
        self.env
            .shared
            .net_stats
            .connects
            .fetch_add(1, Ordering::SeqCst);
        if let Some(bytes) = self.leak() {
            // The defect: part of every session is never given back.
            let _ = self.env.shared.alloc(bytes);
        }
        self.connected.store(true, Ordering::SeqCst);
        self.log(LogLevel::Info, "at-mqtt", "mqtt connected");
        let line = self.request.connected_line();
        match first.take() {
            Some(first) => {
                // AT+MQTTCONN prints the line itself before OK.
                let _ = first.send(Ok(()));
            }
            None => self.env.console.at(line.into_bytes()),
        }
        let ended = self.serve(&mut wire);
        self.connected.store(false, Ordering::SeqCst);
        if !matches!(ended, Ended::Crashed) {
            self.log(LogLevel::Info, "at-mqtt", "mqtt disconnected");
        }
        self.env.shared.free(session_cost);
        ended
    }

    fn leak(&self) -> Option<u32> {
        self.env.shared.defects().into_iter().find_map(|d| match d {
            Defect::LeakPerConnect { bytes } => Some(bytes),
            _ => None,
        })
    }

    /// Resolve, allocate, TCP, TLS, CONNECT/CONNACK; logs every failure as the firmware does.
    fn connect(&self) -> Result<Wire, ()> {
        let r = &self.request;
        let network = self.env.shared.network();
        let Some(addr) = network.resolve(&r.host, r.port) else {
            self.log(
                LogLevel::Error,
                "esp-tls",
                &format!(
                    "couldn't get hostname for :{}: getaddrinfo() returns 202, addrinfo=0x0",
                    r.host
                ),
            );
            self.transport_failed();
            return Err(());
        };
        let tls = r.user.uses_tls();
        let cost = if tls { costs::TLS_SESSION } else { 0 } + costs::MQTT_CLIENT;
        if let Err(e) = self.env.shared.alloc(cost) {
            self.log(
                LogLevel::Error,
                "at",
                &format!(
                    "alloc failed, size:{}, caps:0x{:x}",
                    e.wanted,
                    costs::DEFAULT_CAPS
                ),
            );
            if tls {
                self.log(
                    LogLevel::Error,
                    "esp-tls-mbedtls",
                    "mbedtls_ssl_setup returned -0x7F00",
                );
            }
            self.transport_failed();
            return Err(());
        }
        let result = self.open(addr, tls);
        if result.is_err() {
            self.env.shared.free(cost);
        }
        result
    }

    fn transport_failed(&self) {
        self.log(
            LogLevel::Error,
            "transport_base",
            "Failed to open a new connection",
        );
        self.log(LogLevel::Error, "mqtt_client", "Error transport connect");
    }

    fn open(&self, addr: SocketAddr, tls: bool) -> Result<Wire, ()> {
        let r = &self.request;
        let timeout = Duration::from_millis(u64::from(r.timeout_ms));
        let tcp = match TcpStream::connect_timeout(&addr, timeout) {
            Ok(tcp) => tcp,
            Err(e) => {
                self.log(
                    LogLevel::Error,
                    "esp-tls",
                    &format!("[sock=54] delayed connect error: {e}"),
                );
                self.log(LogLevel::Error, "esp-tls", "Failed to open new connection");
                self.transport_failed();
                return Err(());
            }
        };
        let _ = tcp.set_nodelay(true);
        let transport = if tls {
            self.handshake(tcp, timeout)?
        } else {
            Transport::Plain(tcp)
        };
        let mut wire = Wire::new(transport);
        self.mqtt_connect(&mut wire, timeout)?;
        Ok(wire)
    }

    fn handshake(&self, tcp: TcpStream, timeout: Duration) -> Result<Transport, ()> {
        let r = &self.request;
        // The SNI / name checked: what AT+MQTTSNI set, else the host as given.
        let name = r.sni.as_deref().unwrap_or(&r.host);
        let setup = tls::ClientSetup {
            credentials: &self.env.credentials,
            verify_server: r.user.verifies_server(),
            alpn: &r.alpn,
            name,
        };
        let console = &self.env.console;
        let log = |level, tag: &str, message: &str| console.log_letter(level, tag, message);
        tls::connect(&self.env.shared, tcp, &setup, timeout, &log).map_err(|_| {
            self.transport_failed();
        })
    }

    fn mqtt_connect(&self, wire: &mut Wire, timeout: Duration) -> Result<(), ()> {
        let r = &self.request;
        let mut connect = Connect::new(r.user.client_id.clone());
        connect.keep_alive = keepalive(r).as_secs().try_into().unwrap_or(120);
        connect.clean_session = r.clean_session;
        if !r.user.username.is_empty() {
            connect.login = Some(Login::new(r.user.username.clone(), r.user.password.clone()));
        }
        connect.last_will = r
            .last_will
            .as_ref()
            .map(|w| LastWill::new(w.topic.clone(), w.message.clone(), qos(w.qos), w.retain));
        if wire.send(&Packet::Connect(connect)).is_err() {
            self.log(LogLevel::Error, "mqtt_client", "Writing failed: errno=104");
            return Err(());
        }
        // A firmware wait (esp-mqtt's network timeout for the CONNACK), so it follows the time
        // scale; TCP and the TLS handshake do not: their time is the host's real work.
        let deadline = Instant::now() + self.env.shared.scaled(timeout);
        while Instant::now() < deadline {
            match wire.poll() {
                Ok(None) => continue,
                Ok(Some(Packet::ConnAck(ack))) if ack.code == ConnectReturnCode::Success => {
                    return Ok(());
                }
                Ok(Some(Packet::ConnAck(ack))) => {
                    let why = match ack.code {
                        ConnectReturnCode::BadUserNamePassword => "bad username or password",
                        ConnectReturnCode::NotAuthorized => "not authorized",
                        ConnectReturnCode::ServiceUnavailable => "server unavailable",
                        ConnectReturnCode::BadClientId => "identifier rejected",
                        _ => "bad protocol",
                    };
                    self.log(
                        LogLevel::Warn,
                        "mqtt_client",
                        &format!("Connection refused, {why}"),
                    );
                    return Err(());
                }
                Ok(Some(_)) => continue,
                Err(_) => {
                    self.log(
                        LogLevel::Error,
                        "mqtt_client",
                        "mqtt_message_receive: transport_read() error: errno=128",
                    );
                    return Err(());
                }
            }
        }
        self.log(LogLevel::Error, "mqtt_client", "MQTT connect timeout");
        Err(())
    }

    /// Serves an established session until it ends: commands from the AT task, esp-mqtt's
    /// retransmission and keep-alive, and what the broker sends.
    fn serve(&self, wire: &mut Wire) -> Ended {
        let shared = &self.env.shared;
        let keepalive = shared.scaled(keepalive(&self.request));
        let retransmit = shared.scaled(RETRANSMIT);
        let mut outbox = Outbox::default();
        // esp-mqtt's `keepalive_tick`: set at CONNACK and at each PINGRESP, nothing else.
        let mut keepalive_tick = Instant::now();
        let mut waiting_ping = false;
        let mut last_retransmit = Instant::now();
        loop {
            if self.stop.load(Ordering::SeqCst) {
                let _ = wire.send(&Packet::Disconnect);
                return Ended::Stopped;
            }
            while let Ok(command) = self.commands.try_recv() {
                if outbox.send(wire, command).is_err() {
                    return Ended::Lost;
                }
            }
            outbox.expire(shared.scaled(ACK_TIMEOUT), shared.scaled(OUTBOX_EXPIRY));
            if last_retransmit.elapsed() >= retransmit {
                last_retransmit = Instant::now();
                if !self.defect(Defect::NoRetransmit)
                    && outbox.retransmit_oldest(wire, retransmit).is_err()
                {
                    return Ended::Lost;
                }
            }
            // esp-mqtt's `process_keepalive` (mqtt_client.c): PINGREQ half a keep-alive after
            // the tick; no PINGRESP a whole keep-alive after it ends the connection.
            if !self.defect(Defect::IgnoreKeepalive) {
                if waiting_ping && keepalive_tick.elapsed() > keepalive {
                    self.log(LogLevel::Error, "mqtt_client", "No PING_RESP, disconnected");
                    wire.transport.close();
                    return Ended::Lost;
                }
                if !waiting_ping && keepalive_tick.elapsed() > keepalive / 2 {
                    if wire.send(&Packet::PingReq).is_err() {
                        self.log(
                            LogLevel::Error,
                            "mqtt_client",
                            "Can't send ping, disconnected",
                        );
                        return Ended::Lost;
                    }
                    waiting_ping = true;
                }
            }
            let packet = match wire.poll() {
                Ok(None) => continue,
                Ok(Some(packet)) => packet,
                Err(_) => {
                    self.log(
                        LogLevel::Error,
                        "mqtt_client",
                        "mqtt_message_receive: transport_read() error: errno=128",
                    );
                    return Ended::Lost;
                }
            };
            let answered = match packet {
                Packet::PubAck(a) => outbox.acked(a.pkid),
                Packet::SubAck(a) => outbox.acked(a.pkid),
                Packet::UnsubAck(a) => outbox.acked(a.pkid),
                Packet::PubComp(a) => outbox.acked(a.pkid),
                Packet::PubRec(a) => outbox.released(wire, a.pkid),
                // The broker's half of an incoming QoS 2 delivery.
                Packet::PubRel(a) => wire.send(&Packet::PubComp(PubComp::new(a.pkid))),
                Packet::PingResp => {
                    waiting_ping = false;
                    keepalive_tick = Instant::now();
                    Ok(())
                }
                Packet::Publish(p) => {
                    if p.payload.len() > LARGE_RECORD && self.defect(Defect::CrashOnLargeRecord) {
                        self.env.console.panic(crash_dump());
                        return Ended::Crashed;
                    }
                    self.deliver(wire, &p)
                }
                Packet::Disconnect => return Ended::Lost,
                _ => Ok(()),
            };
            if answered.is_err() {
                return Ended::Lost;
            }
        }
    }

    /// An incoming PUBLISH: acknowledged by its QoS (PUBACK, or PUBREC and later PUBCOMP),
    /// handed to the AT port at once, as esp-mqtt dispatches MQTT_EVENT_DATA on receipt.
    fn deliver(&self, wire: &mut Wire, p: &Publish) -> std::io::Result<()> {
        match p.qos {
            QoS::AtLeastOnce => wire.send(&Packet::PubAck(PubAck::new(p.pkid)))?,
            QoS::ExactlyOnce => wire.send(&Packet::PubRec(PubRec::new(p.pkid)))?,
            QoS::AtMostOnce => {}
        }
        let mut line = format!("+MQTTSUBRECV:0,\"{}\",{},", p.topic, p.payload.len()).into_bytes();
        line.extend_from_slice(&p.payload);
        line.extend_from_slice(b"\r\n");
        self.env.console.at(line);
        Ok(())
    }
}

/// What an outbox item waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Awaiting {
    /// PUBACK, SUBACK, UNSUBACK or (after PUBREL) PUBCOMP.
    Ack,
    /// QoS 2: PUBREC, then PUBREL goes out.
    PubRec,
}

/// One unacknowledged packet (esp-mqtt's outbox item).
struct Item {
    id: u16,
    packet: Packet,
    awaiting: Awaiting,
    /// The AT command waiting for the outcome; taken once answered.
    reply: Option<Sender<bool>>,
    queued: Instant,
    sent: Instant,
}

/// The client's outbox: packets sent and not yet acknowledged, oldest first.
#[derive(Default)]
struct Outbox {
    next_id: u16,
    items: Vec<Item>,
}

impl Outbox {
    /// Sends a command's packet; QoS 0 publishes are answered at once.
    fn send(&mut self, wire: &mut Wire, command: Command) -> std::io::Result<()> {
        self.next_id = self.next_id.wrapping_add(1).max(1);
        let id = self.next_id;
        let (packet, reply, awaiting) = match command {
            Command::Publish(m, reply) => {
                let mut p = Publish::new(m.topic, qos(m.qos), m.payload);
                p.retain = m.retain;
                let awaiting = match m.qos {
                    0 => None,
                    1 => Some(Awaiting::Ack),
                    _ => Some(Awaiting::PubRec),
                };
                if awaiting.is_some() {
                    p.pkid = id;
                }
                (Packet::Publish(p), reply, awaiting)
            }
            Command::Subscribe(topic, q, reply) => {
                let mut s = Subscribe::new(topic, qos(q));
                s.pkid = id;
                (Packet::Subscribe(s), reply, Some(Awaiting::Ack))
            }
            Command::Unsubscribe(topic, reply) => {
                let mut u = Unsubscribe::new(topic);
                u.pkid = id;
                (Packet::Unsubscribe(u), reply, Some(Awaiting::Ack))
            }
        };
        if let Err(e) = wire.send(&packet) {
            let _ = reply.send(false);
            return Err(e);
        }
        match awaiting {
            None => {
                let _ = reply.send(true);
            }
            Some(awaiting) => self.items.push(Item {
                id,
                packet,
                awaiting,
                reply: Some(reply),
                queued: Instant::now(),
                sent: Instant::now(),
            }),
        }
        Ok(())
    }

    /// The last acknowledgement of an item came: done.
    fn acked(&mut self, id: u16) -> std::io::Result<()> {
        if let Some(i) = self.items.iter().position(|item| item.id == id) {
            let item = self.items.remove(i);
            if let Some(reply) = item.reply {
                let _ = reply.send(true);
            }
        }
        Ok(())
    }

    /// PUBREC for a QoS 2 publish: PUBREL goes out and the item waits for PUBCOMP.
    fn released(&mut self, wire: &mut Wire, id: u16) -> std::io::Result<()> {
        let release = Packet::PubRel(PubRel::new(id));
        wire.send(&release)?;
        if let Some(item) = self.items.iter_mut().find(|item| item.id == id) {
            item.packet = release;
            item.awaiting = Awaiting::Ack;
            item.sent = Instant::now();
        }
        Ok(())
    }

    /// The AT command gives up after `answer_within`; the item itself is dropped after
    /// `expiry` (esp-mqtt's `outbox_delete_expired`).
    fn expire(&mut self, answer_within: Duration, expiry: Duration) {
        for item in &mut self.items {
            if item.queued.elapsed() >= answer_within
                && let Some(reply) = item.reply.take()
            {
                let _ = reply.send(false);
            }
        }
        self.items.retain(|item| item.queued.elapsed() < expiry);
    }

    /// Sends the oldest item unacknowledged for longer than `after` again: a PUBLISH with
    /// DUP set, or the PUBREL of a QoS 2 publish (`mqtt_resend_pubrel`).
    fn retransmit_oldest(&mut self, wire: &mut Wire, after: Duration) -> std::io::Result<()> {
        let Some(item) = self
            .items
            .iter_mut()
            .find(|item| item.sent.elapsed() > after)
        else {
            return Ok(());
        };
        if let Packet::Publish(p) = &mut item.packet {
            p.dup = true;
        }
        item.sent = Instant::now();
        wire.send(&item.packet)
    }
}

/// The keep-alive interval: ESP-AT's 0 means 120 s.
fn keepalive(request: &MqttConnect) -> Duration {
    Duration::from_secs(match request.keepalive {
        0 => 120,
        s => u64::from(s),
    })
}

fn qos(level: u8) -> QoS {
    match level {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

/// A function the crash dump's backtrace runs through, as the virtual firmware's ELF declares
/// it: the harness builds that ELF from [`CRASH_FRAMES`] so its panics decode like a real
/// build's.
#[derive(Debug, Clone, Copy)]
pub struct CrashFrame {
    pub function: &'static str,
    /// Start and end of the function's code.
    pub code: (u32, u32),
    pub file: &'static str,
    pub line: u32,
    /// The frame's `PC:SP` pair on the `Backtrace:` line.
    pub pc: u32,
    pub sp: u32,
}

/// The panic's call chain, innermost first.
pub const CRASH_FRAMES: [CrashFrame; 3] = [
    CrashFrame {
        function: "at_mqtt_subscribe_data_cb",
        code: (0x400d_1a00, 0x400d_1a40),
        file: "/esp-at/components/at/src/at_mqtt_cmd.c",
        line: 412,
        pc: 0x400d_1a28,
        sp: 0x3ffb_5e40,
    },
    CrashFrame {
        function: "esp_mqtt_task",
        code: (0x400d_1b00, 0x400d_1b60),
        file: "/idf/components/mqtt/esp-mqtt/mqtt_client.c",
        line: 1650,
        pc: 0x400d_1b39,
        sp: 0x3ffb_5e60,
    },
    CrashFrame {
        function: "vPortTaskWrapper",
        code: (0x4008_6cc0, 0x4008_6d00),
        file: "/idf/components/freertos/port/xtensa/port.c",
        line: 131,
        pc: 0x4008_6cf1,
        sp: 0x3ffb_5e90,
    },
];

/// What ESP-IDF prints when an app faults on a RISC-V/Xtensa core (esp-facts §5.7).
pub(super) fn crash_dump() -> String {
    let backtrace: Vec<String> = CRASH_FRAMES
        .iter()
        .map(|f| format!("0x{:08x}:0x{:08x}", f.pc, f.sp))
        .collect();
    [
        "Guru Meditation Error: Core  0 panic'ed (LoadProhibited). Exception was unhandled.",
        "",
        "Core  0 register dump:",
        "PC      : 0x400d1a2b  PS      : 0x00060630  A0      : 0x800d1b3c  A1      : 0x3ffb5e40",
        "",
        &format!("Backtrace: {}", backtrace.join(" ")),
        "",
        "",
        "ELF file SHA256: 3c1a9f0b2d4e5f60",
        "",
        "Rebooting...",
        "",
    ]
    .join("\r\n")
}

/// Packets over a transport.
struct Wire {
    transport: Transport,
    buffer: BytesMut,
}

impl Wire {
    fn new(transport: Transport) -> Wire {
        let _ = transport
            .tcp()
            .set_read_timeout(Some(Duration::from_millis(20)));
        Wire {
            transport,
            buffer: BytesMut::with_capacity(4096),
        }
    }

    fn send(&mut self, packet: &Packet) -> std::io::Result<()> {
        let mut bytes = BytesMut::new();
        packet
            .write(&mut bytes, MAX_PACKET)
            .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
        self.transport.write_all(&bytes)?;
        self.transport.flush()
    }

    /// The next complete packet, `None` after a short wait without one.
    fn poll(&mut self) -> std::io::Result<Option<Packet>> {
        use std::io::Read;
        for _ in 0..2 {
            match Packet::read(&mut self.buffer, MAX_PACKET) {
                Ok(packet) => return Ok(Some(packet)),
                Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {}
                Err(e) => return Err(std::io::Error::other(format!("{e:?}"))),
            }
            let mut chunk = [0u8; 4096];
            match self.transport.read(&mut chunk) {
                Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => self.buffer.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(None);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }
}

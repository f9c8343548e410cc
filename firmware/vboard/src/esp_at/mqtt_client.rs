//! The module's MQTT client (esp-mqtt as ESP-AT drives it): one session thread per
//! `AT+MQTTCONN`, real TCP/TLS to the address the board's network resolves, MQTT 3.1.1 packets
//! through rumqttc's codec, keep-alive, reconnects with a jittered backoff, and the heap the
//! session costs.

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
    Connect, ConnectReturnCode, LastWill, Login, Packet, PubAck, Publish, Subscribe, Unsubscribe,
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
/// Reconnect attempts after the first failure, and the backoff bounds.
const MAX_RECONNECTS: u32 = 20;
const BACKOFF_FIRST: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(8);
/// How long a publish/subscribe waits for its acknowledgement.
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

    fn run(self, first: Sender<FirstAttempt>) {
        let mut first = Some(first);
        let mut backoff = BACKOFF_FIRST;
        let mut last_attempt: Option<Instant> = None;
        for attempt in 0..=MAX_RECONNECTS {
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
            if !self.request.reconnect || attempt == MAX_RECONNECTS {
                return;
            }
            if matches!(ended, Ended::Lost) {
                backoff = BACKOFF_FIRST;
            }
            if !self.sleep(jittered(backoff, attempt)) {
                return;
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
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
        let deadline = Instant::now() + timeout;
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

    /// Serves an established session until it ends.
    fn serve(&self, wire: &mut Wire) -> Ended {
        let keepalive = keepalive(&self.request);
        let mut next_id: u16 = 0;
        let mut pending: Vec<(u16, Sender<bool>, Instant)> = Vec::new();
        let mut last_sent = Instant::now();
        let mut ping_sent: Option<Instant> = None;
        loop {
            if self.stop.load(Ordering::SeqCst) {
                let _ = wire.send(&Packet::Disconnect);
                return Ended::Stopped;
            }
            // Commands from the AT task.
            while let Ok(command) = self.commands.try_recv() {
                next_id = next_id.wrapping_add(1).max(1);
                let (packet, reply, needs_ack) = match command {
                    Command::Publish(m, reply) => {
                        let mut p = Publish::new(m.topic, qos(m.qos), m.payload);
                        p.retain = m.retain;
                        let needs_ack = m.qos > 0;
                        if needs_ack {
                            p.pkid = next_id;
                        }
                        (Packet::Publish(p), reply, needs_ack)
                    }
                    Command::Subscribe(topic, q, reply) => {
                        let mut s = Subscribe::new(topic, qos(q));
                        s.pkid = next_id;
                        (Packet::Subscribe(s), reply, true)
                    }
                    Command::Unsubscribe(topic, reply) => {
                        let mut u = Unsubscribe::new(topic);
                        u.pkid = next_id;
                        (Packet::Unsubscribe(u), reply, true)
                    }
                };
                if wire.send(&packet).is_err() {
                    let _ = reply.send(false);
                    return Ended::Lost;
                }
                last_sent = Instant::now();
                if needs_ack {
                    pending.push((next_id, reply, Instant::now()));
                } else {
                    let _ = reply.send(true);
                }
            }
            pending.retain(|(_, reply, since)| {
                let waiting = since.elapsed() < ACK_TIMEOUT;
                if !waiting {
                    let _ = reply.send(false);
                }
                waiting
            });
            // Keep-alive: PINGREQ after a quiet keep-alive period; no PINGRESP within another
            // period ends the session, as esp-mqtt does.
            if let Some(sent) = ping_sent
                && sent.elapsed() > keepalive
            {
                self.log(LogLevel::Error, "mqtt_client", "No PING_RESP, disconnected");
                return Ended::Lost;
            }
            if ping_sent.is_none() && last_sent.elapsed() >= keepalive {
                if wire.send(&Packet::PingReq).is_err() {
                    return Ended::Lost;
                }
                ping_sent = Some(Instant::now());
                last_sent = Instant::now();
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
            let acked = |id: u16, pending: &mut Vec<(u16, Sender<bool>, Instant)>| {
                if let Some(i) = pending.iter().position(|(p, _, _)| *p == id) {
                    let (_, reply, _) = pending.remove(i);
                    let _ = reply.send(true);
                }
            };
            match packet {
                Packet::PubAck(a) => acked(a.pkid, &mut pending),
                Packet::SubAck(a) => acked(a.pkid, &mut pending),
                Packet::UnsubAck(a) => acked(a.pkid, &mut pending),
                Packet::PingResp => ping_sent = None,
                Packet::Publish(p) => {
                    if p.payload.len() > LARGE_RECORD
                        && self
                            .env
                            .shared
                            .has_defect(|d| *d == Defect::CrashOnLargeRecord)
                            .is_some()
                    {
                        self.env.console.panic(crash_dump());
                        return Ended::Crashed;
                    }
                    if p.qos == QoS::AtLeastOnce {
                        let _ = wire.send(&Packet::PubAck(PubAck::new(p.pkid)));
                    }
                    let mut line =
                        format!("+MQTTSUBRECV:0,\"{}\",{},", p.topic, p.payload.len()).into_bytes();
                    line.extend_from_slice(&p.payload);
                    line.extend_from_slice(b"\r\n");
                    self.env.console.at(line);
                }
                Packet::Disconnect => return Ended::Lost,
                _ => {}
            }
        }
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

/// ±25 % around `base`, varied by attempt and time so boards do not reconnect in lockstep.
fn jittered(base: Duration, attempt: u32) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let spread = (nanos ^ attempt.wrapping_mul(2_654_435_761)) % 501; // 0..=500 ‰
    base * (750 + spread) / 1000
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
fn crash_dump() -> String {
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

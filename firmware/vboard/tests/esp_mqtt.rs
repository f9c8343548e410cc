//! The virtual ESP-AT's MQTT client against a scripted broker, pinned to esp-mqtt
//! (espressif/esp-mqtt `mqtt_client.c`, `lib/include/mqtt_config.h`): the fixed 10 s reconnect
//! wait (`MQTT_RECON_DEFAULT_MS`), `AT+MQTTCONN`'s `reconnect` flag, retransmission with DUP
//! after `MQTT_DEFAULT_RETRANSMIT_TIMEOUT_MS`, QoS 2 both ways, `process_keepalive`, and the
//! board time scale that divides all of those waits.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{
    ConnAck, ConnectReturnCode, Packet, PubAck, PubComp, PubRec, PubRel, Publish,
};
use sparring_vboard::board::{Board, Control};
use sparring_vboard::personality::{AccessPoint, Defect, NetworkConfig};

const SCALE: u32 = 20;

/// A booted ESP-AT board on the lab's access point with `broker.test` → loopback, running
/// `SCALE` times faster, and its AT port.
fn board(dir: &std::path::Path, defects: Vec<Defect>) -> (Board, At) {
    let board = common::flashed_board(dir, "esp-at", "v2.4.0.0", true);
    let network = NetworkConfig {
        access_points: vec![AccessPoint {
            ssid: "lab".into(),
            password: "pw".into(),
            rssi: -40,
            fault: None,
        }],
        hosts: [("broker.test".to_owned(), "127.0.0.1".parse().unwrap())].into(),
        ports: Default::default(),
    };
    board.control(Control::SetNetwork { network }).unwrap();
    board.control(Control::SetDefects { defects }).unwrap();
    board
        .control(Control::SetTimeScale { scale: SCALE })
        .unwrap();
    let port = serialport::new(board.info.uart1.to_string_lossy(), 115_200)
        .timeout(Duration::from_millis(50))
        .open_native()
        .unwrap();
    let mut at = At {
        port,
        pending: String::new(),
    };
    board.control(Control::Reset).unwrap();
    read_until(&mut at, "ready");
    command(&mut at, "AT+CWMODE=1", "OK");
    command(&mut at, "AT+CWJAP=\"lab\",\"pw\"", "WIFI GOT IP");
    read_until(&mut at, "\r\nOK");
    command(
        &mut at,
        "AT+MQTTUSERCFG=0,1,\"dut\",\"\",\"\",0,0,\"\"",
        "OK",
    );
    (board, at)
}

/// The AT port, with what was read past the last needle kept for the next wait.
struct At {
    port: serialport::TTYPort,
    pending: String,
}

impl At {
    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.port.write_all(bytes)
    }
}

/// Sends `AT+MQTTCONN` without waiting: the scripted broker must accept first.
fn connect(at: &mut At, port: u16, reconnect: u8) {
    at.write_all(format!("AT+MQTTCONN=0,\"broker.test\",{port},{reconnect}\r\n").as_bytes())
        .unwrap();
}

fn command(at: &mut At, line: &str, until: &str) -> String {
    at.write_all(format!("{line}\r\n").as_bytes()).unwrap();
    read_until(at, until)
}

/// Reads the AT port up to and including `needle`; bounded by 10 s.
fn read_until(at: &mut At, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 1024];
    while !at.pending.contains(needle) {
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in:\n{}",
            at.pending
        );
        if let Ok(n) = at.port.read(&mut buf) {
            at.pending.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }
    let end = at.pending.find(needle).unwrap_or(0) + needle.len();
    at.pending.drain(..end).collect()
}

/// One broker-side connection: packets in, packets out.
struct Peer {
    tcp: TcpStream,
    buffer: BytesMut,
}

impl Peer {
    /// Accepts the board's next connection within `within` and answers its CONNECT.
    fn accept(listener: &TcpListener, within: Duration) -> Option<(Peer, Instant, u16)> {
        listener.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + within;
        let tcp = loop {
            match listener.accept() {
                Ok((tcp, _)) => break tcp,
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
                Err(_) => return None,
            }
        };
        let accepted = Instant::now();
        tcp.set_nonblocking(false).unwrap();
        tcp.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let mut peer = Peer {
            tcp,
            buffer: BytesMut::new(),
        };
        let Some(Packet::Connect(connect)) = peer.next(Duration::from_secs(5)) else {
            panic!("no CONNECT");
        };
        peer.send(Packet::ConnAck(ConnAck::new(
            ConnectReturnCode::Success,
            false,
        )));
        Some((peer, accepted, connect.keep_alive))
    }

    fn send(&mut self, packet: Packet) {
        let mut bytes = BytesMut::new();
        packet.write(&mut bytes, 1 << 20).unwrap();
        self.tcp.write_all(&bytes).unwrap();
    }

    /// The next packet within `within`; `None` on timeout or when the board closed.
    fn next(&mut self, within: Duration) -> Option<Packet> {
        let deadline = Instant::now() + within;
        let mut chunk = [0u8; 4096];
        loop {
            if let Ok(packet) = Packet::read(&mut self.buffer, 1 << 20) {
                return Some(packet);
            }
            if Instant::now() > deadline {
                return None;
            }
            match self.tcp.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buffer.extend_from_slice(&chunk[..n]),
                Err(_) => {}
            }
        }
    }

    /// Waits until the board closes the connection; when it did, or `None` within `within`.
    fn closed(&mut self, within: Duration) -> Option<Instant> {
        let deadline = Instant::now() + within;
        let mut chunk = [0u8; 4096];
        while Instant::now() < deadline {
            match self.tcp.read(&mut chunk) {
                Ok(0) => return Some(Instant::now()),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                    return Some(Instant::now());
                }
                _ => {}
            }
        }
        None
    }
}

/// A board connected (reconnect on) to a scripted broker that accepted it.
fn session(dir: &std::path::Path, defects: Vec<Defect>) -> (Board, At, Peer) {
    let (board, mut at) = board(dir, defects);
    let (listener, port) = listener();
    connect(&mut at, port, 1);
    let (peer, _, _) = Peer::accept(&listener, Duration::from_secs(5)).unwrap();
    read_until(&mut at, "OK");
    (board, at, peer)
}

fn listener() -> (TcpListener, u16) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    (listener, port)
}

/// The reconnect wait is esp-mqtt's fixed `MQTT_RECON_DEFAULT_MS` divided by the time scale,
/// the same after every drop (no backoff, no jitter); `reconnect` 0 never reconnects.
#[test]
fn reconnects_after_esp_mqtts_fixed_wait_divided_by_the_time_scale() {
    let dir = tempfile::tempdir().unwrap();
    let (_board, mut at) = board(dir.path(), vec![]);
    let (listener, port) = listener();
    connect(&mut at, port, 1);
    let wait = Duration::from_millis(10_000 / u64::from(SCALE));
    let mut gaps = Vec::new();
    let (peer, _, _) = Peer::accept(&listener, Duration::from_secs(5)).unwrap();
    read_until(&mut at, "+MQTTCONNECTED:0,1,\"broker.test\"");
    // The command's own result, so that a later command's `OK` is not taken from it.
    read_until(&mut at, "OK");
    let mut dropped = Instant::now();
    drop(peer);
    for _ in 0..2 {
        let (peer, accepted, _) = Peer::accept(&listener, Duration::from_secs(5)).unwrap();
        gaps.push(accepted - dropped);
        dropped = Instant::now();
        drop(peer);
    }
    for gap in &gaps {
        assert!(
            *gap >= wait * 9 / 10 && *gap < wait * 2,
            "gaps {gaps:?}, expected about {wait:?} each"
        );
    }
    // reconnect = 0: after the drop the client stays down.
    command(&mut at, "AT+MQTTCLEAN=0", "OK");
    command(
        &mut at,
        "AT+MQTTUSERCFG=0,1,\"dut\",\"\",\"\",0,0,\"\"",
        "OK",
    );
    connect(&mut at, port, 0);
    let (peer, _, _) = Peer::accept(&listener, Duration::from_secs(5)).unwrap();
    read_until(&mut at, "+MQTTCONNECTED:0,1");
    drop(peer);
    read_until(&mut at, "+MQTTDISCONNECTED:0");
    assert!(
        Peer::accept(&listener, wait * 3).is_none(),
        "it reconnected"
    );
}

/// The control socket's JSON form of the request the tests send.
#[test]
fn set_time_scale_is_a_control_request() {
    let request: Control = serde_json::from_str(r#"{"cmd":"set_time_scale","scale":20}"#).unwrap();
    assert_eq!(request, Control::SetTimeScale { scale: 20 });
}

/// `no-backoff` reconnects at once: the defect the reconnect scenarios catch.
#[test]
fn the_no_backoff_defect_reconnects_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (_board, mut at) = board(dir.path(), vec![Defect::NoBackoff]);
    let (listener, port) = listener();
    connect(&mut at, port, 1);
    let (peer, _, _) = Peer::accept(&listener, Duration::from_secs(5)).unwrap();
    let dropped = Instant::now();
    drop(peer);
    let (_peer, accepted, _) = Peer::accept(&listener, Duration::from_secs(5)).unwrap();
    assert!(accepted - dropped < Duration::from_millis(200));
}

/// A QoS 1 publish without PUBACK goes out again with DUP and the same packet id after the
/// (scaled) retransmit timeout; the late PUBACK completes `AT+MQTTPUB`.
#[test]
fn an_unacknowledged_qos1_publish_is_retransmitted_with_dup() {
    let dir = tempfile::tempdir().unwrap();
    let (_board, mut at, mut peer) = session(dir.path(), vec![]);
    at.write_all(b"AT+MQTTPUB=0,\"t\",\"hello\",1,0\r\n")
        .unwrap();
    let Some(Packet::Publish(first)) = peer.next(Duration::from_secs(2)) else {
        panic!("no PUBLISH");
    };
    let sent = Instant::now();
    let Some(Packet::Publish(again)) = peer.next(Duration::from_secs(2)) else {
        panic!("no retransmission");
    };
    assert!(!first.dup && again.dup, "{first:?} then {again:?}");
    assert_eq!(first.pkid, again.pkid);
    assert!(sent.elapsed() >= Duration::from_millis(1000 / u64::from(SCALE)));
    peer.send(Packet::PubAck(PubAck::new(first.pkid)));
    read_until(&mut at, "OK");
}

/// `no-retransmit`: the publish goes out once.
#[test]
fn the_no_retransmit_defect_sends_once() {
    let dir = tempfile::tempdir().unwrap();
    let (_board, mut at, mut peer) = session(dir.path(), vec![Defect::NoRetransmit]);
    at.write_all(b"AT+MQTTPUB=0,\"t\",\"hello\",1,0\r\n")
        .unwrap();
    assert!(matches!(
        peer.next(Duration::from_secs(2)),
        Some(Packet::Publish(_))
    ));
    assert_eq!(peer.next(Duration::from_millis(500)), None);
}

/// QoS 2 out (PUBLISH, PUBREC, PUBREL, PUBCOMP) and in (PUBLISH, PUBREC, PUBREL, PUBCOMP,
/// delivered on receipt).
#[test]
fn qos2_completes_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let (_board, mut at, mut peer) = session(dir.path(), vec![]);
    at.write_all(b"AT+MQTTPUB=0,\"t\",\"two\",2,0\r\n").unwrap();
    let Some(Packet::Publish(p)) = peer.next(Duration::from_secs(2)) else {
        panic!("no PUBLISH");
    };
    assert_eq!(p.qos, QoS::ExactlyOnce);
    peer.send(Packet::PubRec(PubRec::new(p.pkid)));
    let Some(Packet::PubRel(rel)) = peer.next(Duration::from_secs(2)) else {
        panic!("no PUBREL");
    };
    assert_eq!(rel.pkid, p.pkid);
    peer.send(Packet::PubComp(PubComp::new(p.pkid)));
    read_until(&mut at, "OK");
    let mut incoming = Publish::new("cmd", QoS::ExactlyOnce, "go");
    incoming.pkid = 7;
    peer.send(Packet::Publish(incoming));
    assert_eq!(
        peer.next(Duration::from_secs(2)),
        Some(Packet::PubRec(PubRec::new(7)))
    );
    read_until(&mut at, "+MQTTSUBRECV:0,\"cmd\",2,go");
    peer.send(Packet::PubRel(PubRel::new(7)));
    assert_eq!(
        peer.next(Duration::from_secs(2)),
        Some(Packet::PubComp(PubComp::new(7)))
    );
}

/// `AT+MQTTCONNCFG`'s keep-alive goes into the CONNECT as configured; the board pings half a
/// keep-alive after CONNACK and gives up one keep-alive after it without PINGRESP (both
/// scaled); `ignore-keepalive` never pings.
#[test]
fn keepalive_pings_at_half_and_disconnects_at_one_interval() {
    let dir = tempfile::tempdir().unwrap();
    let (_board, mut at) = board(dir.path(), vec![]);
    let (listener, port) = listener();
    command(&mut at, "AT+MQTTCONNCFG=0,10,0,\"\",\"\",0,0", "OK");
    connect(&mut at, port, 0);
    let (mut peer, connected, keep_alive) =
        Peer::accept(&listener, Duration::from_secs(5)).unwrap();
    assert_eq!(keep_alive, 10);
    let interval = Duration::from_millis(10_000 / u64::from(SCALE));
    assert_eq!(
        peer.next(interval * 2 / 5),
        None,
        "pinged before half the interval"
    );
    assert_eq!(peer.next(interval), Some(Packet::PingReq));
    let closed = peer.closed(interval * 2).unwrap();
    // One keep-alive after CONNACK; a client pinging only after a whole keep-alive would close
    // after two (slack below that for a loaded CI machine).
    let after = closed - connected;
    assert!(
        after >= interval && after < interval * 7 / 4,
        "closed {after:?} after CONNACK"
    );

    let dir = tempfile::tempdir().unwrap();
    let (_board, mut at) = board(dir.path(), vec![Defect::IgnoreKeepalive]);
    command(&mut at, "AT+MQTTCONNCFG=0,10,0,\"\",\"\",0,0", "OK");
    connect(&mut at, port, 0);
    let (mut peer, _, _) = Peer::accept(&listener, Duration::from_secs(5)).unwrap();
    assert_eq!(peer.next(interval * 2), None);
}

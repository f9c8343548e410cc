//! A booted app runs its personality on the board's ports; the control channel's hooks for
//! part 2 (heap reservation, defect switches, network) reach the board's shared state.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::io::Read;
use std::time::{Duration, Instant};

use esp_formats::Chip;
use sparring_vboard::board::{Board, Control, Mode, send_control};
use sparring_vboard::personality::{Defect, boot_free_heap};

/// A board running ESP-AT v2.4.0.0, booted until `ready`, and its AT port.
fn booted_esp_at(dir: &std::path::Path) -> (Board, serialport::TTYPort) {
    let board = common::flashed_board(dir, "esp-at", "v2.4.0.0", true);
    let mut uart1 = serialport::new(board.info.uart1.to_string_lossy(), 115_200)
        .timeout(Duration::from_millis(100))
        .open_native()
        .unwrap();
    let state = board.control(Control::Reset).unwrap();
    assert_eq!(state.app.as_deref(), Some("esp-at v2.4.0.0"));
    read_until(&mut uart1, "ready", 1);
    (board, uart1)
}

/// Reads a port until `count` lines contain `needle`; bounded by 10 s.
fn read_until(port: &mut dyn Read, needle: &str, count: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut log = String::new();
    let mut buf = [0u8; 1024];
    while log.matches(needle).count() < count {
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in UART0 log:\n{log}"
        );
        if let Ok(n) = port.read(&mut buf) {
            log.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }
    log
}

#[test]
fn generic_personality_runs_and_control_hooks_reach_the_board() {
    let dir = tempfile::tempdir().unwrap();
    let board = common::flashed_board(dir.path(), "gadget", "v7", false);
    let mut uart0 = serialport::new(board.info.uart0.to_string_lossy(), 115_200)
        .timeout(Duration::from_millis(100))
        .open_native()
        .unwrap();
    let log = read_until(&mut uart0, "generic: gadget v7 running", 1);
    assert!(log.contains("rst:0x1 (POWERON)"), "{log}");

    let control = board.info.control.clone();
    let reply = send_control(&control, &Control::ReserveHeap { bytes: 100_000 }).unwrap();
    let free = reply["state"]["free_heap"].as_u64().unwrap();
    assert_eq!(free, u64::from(boot_free_heap(Chip::Esp32C3) - 100_000));
    assert_eq!(reply["state"]["mode"], "running");

    // The wire form part 2 and the scenario engine use.
    let request: Control = serde_json::from_str(
        r#"{"cmd":"set_defects","defects":[{"defect":"skip-cn-check"},{"defect":"leak-per-connect","bytes":512}]}"#,
    )
    .unwrap();
    assert_eq!(
        request,
        Control::SetDefects {
            defects: vec![Defect::SkipCnCheck, Defect::LeakPerConnect { bytes: 512 }]
        }
    );
    assert_eq!(send_control(&control, &request).unwrap()["ok"], true);
    let network: Control = serde_json::from_str(
        r#"{"cmd":"set_network","network":{"access_points":[{"ssid":"lab","password":"pw"}],"hosts":{"broker.sparring.test":"127.0.0.1"}}}"#,
    )
    .unwrap();
    assert_eq!(send_control(&control, &network).unwrap()["ok"], true);

    // A reset stops the app and boots it again.
    let state = board.control(Control::Reset).unwrap();
    assert_eq!(state.mode, Mode::Running);
    let log = read_until(&mut uart0, "generic: gadget v7 running", 1);
    assert!(log.contains("ESP-ROM:esp32c3"), "{log}");
    board.power_off();
}

/// An app whose descriptor says `esp-at` boots into the ESP-AT personality: `ready` and
/// answers on UART1, the AT port, with the flashed version in `AT+GMR`.
#[test]
fn esp_at_app_answers_on_the_at_port() {
    let dir = tempfile::tempdir().unwrap();
    let (board, mut uart1) = booted_esp_at(dir.path());
    use std::io::Write;
    uart1.write_all(b"AT\r\n").unwrap();
    read_until(&mut uart1, "OK", 1);
    uart1.write_all(b"AT+GMR\r\n").unwrap();
    let gmr = read_until(&mut uart1, "OK", 1);
    assert!(gmr.contains("v2.4.0.0"), "{gmr}");
    board.power_off();
}

/// A line sent while a command still runs is not queued: the module answers `busy p...`,
/// then finishes the running command, then serves the next line normally.
#[test]
fn a_line_sent_while_a_command_runs_is_refused_busy() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let (board, mut uart1) = booted_esp_at(dir.path());
    let network = serde_json::from_str(
        r#"{"cmd":"set_network","network":{"access_points":[{"ssid":"lab","password":"pw"}]}}"#,
    )
    .unwrap();
    assert_eq!(
        send_control(&board.info.control, &network).unwrap()["ok"],
        true
    );
    uart1.write_all(b"AT+CWMODE=1\r\n").unwrap();
    read_until(&mut uart1, "OK", 1);
    uart1.write_all(b"AT+CWJAP=\"lab\",\"pw\"\r\n").unwrap();
    read_until(&mut uart1, "OK", 1);

    // A TLS server that accepts and never answers keeps AT+CIPSTART in its handshake.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (accepted, connection) = std::sync::mpsc::channel();
    std::thread::spawn(move || accepted.send(listener.accept().map(|(stream, _)| stream)));
    uart1
        .write_all(format!("AT+CIPSTART=\"SSL\",\"127.0.0.1\",{port}\r\n").as_bytes())
        .unwrap();
    let server_side = connection
        .recv_timeout(Duration::from_secs(10))
        .expect("the board connects within 10 s")
        .unwrap();
    uart1.write_all(b"AT\r\n").unwrap();
    uart1.flush().unwrap();
    // Ends the handshake (the board sees the connection close) once the line is in.
    drop(server_side);
    let answer = read_until(&mut uart1, "ERROR", 1);
    // Echo of the running command, then busy for the early line, then the command's result.
    let echo = answer.find("AT+CIPSTART").expect("the command's echo");
    let busy = answer
        .find("busy p...")
        .expect("busy p... for the early line");
    let error = answer.find("ERROR").unwrap();
    assert!(echo < busy && busy < error, "{answer}");
    assert!(
        !answer.contains("OK"),
        "the early AT must not run: {answer}"
    );
    uart1.write_all(b"AT\r\n").unwrap();
    read_until(&mut uart1, "OK", 1);
    board.power_off();
}

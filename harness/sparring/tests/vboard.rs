//! `sparring vboard` as a separate process, flashed by path by another process — esptool,
//! the tool people already trust — and then booted through its control socket.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::io::Read;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::vboard::start_vboard;
use sparring_vboard::board::{Control, send_control};

/// Runs esptool on the board's UART0; `None` when esptool is missing outside CI.
fn esptool(port: &Path, args: &[&str]) -> Option<String> {
    let output = Command::new("python3")
        .args(["-m", "esptool", "--chip", "esp32c3", "--port"])
        .arg(port)
        .args(["--before", "no-reset", "--after", "no-reset"])
        .args(args)
        .output()
        .ok()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if text.contains("No module named esptool") {
        assert!(
            std::env::var_os("CI").is_none(),
            "esptool is required under CI (.ci/run installs it)"
        );
        return None;
    }
    assert!(output.status.success(), "esptool {args:?} failed:\n{text}");
    Some(text)
}

#[test]
fn esptool_flashes_a_separate_board_process_which_then_boots_the_app() {
    let dir = tempfile::tempdir().unwrap();
    let set = dir.path().join("set");
    let built = Command::new(env!("CARGO_BIN_EXE_sparring"))
        .args([
            "image",
            "flash-set",
            "--chip",
            "esp32c3",
            "--project",
            "sparring-demo",
            "--version",
            "v9.8.7",
            "-o",
        ])
        .arg(&set)
        .output()
        .unwrap();
    assert!(built.status.success());
    let board = start_vboard(&dir.path().join("flash.bin"));
    let uart0 = board.info.uart0.clone();

    let Some(mac) = esptool(&uart0, &["read-mac"]) else {
        return;
    };
    assert!(
        mac.contains(&format!("MAC:                {}", board.info.mac)),
        "{mac}"
    );
    let id = esptool(&uart0, &["flash-id"]).unwrap();
    assert!(id.contains("Detected flash size: 4MB"), "{id}");

    let file = |name: &str| set.join(name).to_string_lossy().into_owned();
    let (boot, table, app) = (
        file("bootloader.bin"),
        file("partition-table.bin"),
        file("app.bin"),
    );
    let written = esptool(
        &uart0,
        &[
            "write-flash",
            "0x0",
            &boot,
            "0x8000",
            &table,
            "0x60000",
            &app,
        ],
    )
    .unwrap();
    assert_eq!(
        written.matches("Hash of data verified.").count(),
        3,
        "{written}"
    );

    let mut port = serialport::new(uart0.to_string_lossy(), 115_200)
        .timeout(Duration::from_millis(100))
        .open_native()
        .unwrap();
    let reply = send_control(&board.info.control, &Control::Reset).unwrap();
    assert_eq!(reply["state"]["mode"], "running", "{reply}");
    assert_eq!(reply["state"]["app"], "sparring-demo v9.8.7", "{reply}");
    let log = read_until(&mut port, "generic:");
    assert!(log.contains("ESP-ROM:esp32c3-api1-20210207"), "{log}");
    assert!(
        log.contains("I (") && log.contains("boot:  4 ota_0            OTA app"),
        "{log}"
    );
    assert!(log.contains("Project name:     sparring-demo"), "{log}");

    let off = send_control(&board.info.control, &Control::PowerOff).unwrap();
    assert_eq!(off["state"]["mode"], "off");
}

#[test]
fn bad_arguments_are_usage_errors() {
    let output = Command::new(env!("CARGO_BIN_EXE_sparring"))
        .args(["vboard", "--flash-size", "3MB"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--flash-size 3MB"));
}

fn read_until(port: &mut impl Read, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut log = Vec::new();
    let mut buf = [0u8; 1024];
    while Instant::now() < deadline && !String::from_utf8_lossy(&log).contains(needle) {
        if let Ok(n) = port.read(&mut buf) {
            log.extend_from_slice(&buf[..n]);
        }
    }
    String::from_utf8_lossy(&log).into_owned()
}

//! The harness flashes the virtual board through the espflash library and the board's
//! ROM-loader protocol — ROM and stub, esp32 and esp32c3 — and the board then boots what it
//! was given.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::io::Read;
use std::time::{Duration, Instant};

use esp_formats::image::{self, AppSpec};
use esp_formats::{Chip, partition};
use espflash::connection::ResetBeforeOperation;
use sparring_runner::flash::{FlashOptions, LoaderLink, Region, flash};
use sparring_vboard::board::{Board, BoardConfig, Control, Mode};

/// Flashes bootloader, partition table and app through the harness's espflash path.
fn flash_board(chip: Chip, use_stub: bool, dir: &std::path::Path) -> Board {
    let mut config = BoardConfig::new(chip, dir.join("flash.bin"), dir.to_path_buf());
    config.download = true;
    let board = Board::start(config).unwrap();
    let layout = partition::esp_at_layout(chip, Default::default());
    let regions = [
        Region {
            offset: chip.bootloader_offset(),
            data: image::build_bootloader(chip),
            name: "bootloader.bin".into(),
        },
        Region {
            offset: partition::TABLE_OFFSET,
            data: layout.main.to_bytes().unwrap(),
            name: "partition-table.bin".into(),
        },
        Region {
            offset: layout.main.find("ota_0").unwrap().offset,
            data: image::build_app(&AppSpec::new(chip, "blink", "v1.2.3")).unwrap(),
            name: "app.bin".into(),
        },
    ];
    let report = flash(
        &LoaderLink::plain(board.info.uart0.clone(), ResetBeforeOperation::NoReset),
        chip,
        &regions,
        &FlashOptions {
            use_stub,
            ..FlashOptions::default()
        },
    )
    .unwrap();
    assert_eq!(report.written.len(), 3);
    board
}

fn open(path: &std::path::Path) -> serialport::TTYPort {
    serialport::new(path.to_string_lossy(), 115_200)
        .timeout(Duration::from_millis(100))
        .open_native()
        .unwrap()
}

/// Resets the board and collects UART0 until `until` appears (bounded by a deadline).
fn reset_and_read(board: &Board, until: &str) -> String {
    let mut port = open(&board.info.uart0);
    let state = board.control(Control::Reset).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut log = Vec::new();
    let mut buf = [0u8; 1024];
    while Instant::now() < deadline && !String::from_utf8_lossy(&log).contains(until) {
        if let Ok(n) = port.read(&mut buf) {
            log.extend_from_slice(&buf[..n]);
        }
    }
    let log = String::from_utf8_lossy(&log).into_owned();
    assert_eq!(state.mode, Mode::Running, "{log}");
    // A loader reply the flasher did not wait for may still be in flight on the pty (ptys
    // pass data on asynchronously); the boot log starts with the ROM banner.
    let banner = log
        .find("ets ")
        .into_iter()
        .chain(log.find("ESP-ROM:"))
        .min()
        .unwrap_or(0);
    log[banner..].to_owned()
}

fn check(chip: Chip, use_stub: bool) -> String {
    let dir = tempfile::tempdir().unwrap();
    let board = flash_board(chip, use_stub, dir.path());
    let log = reset_and_read(&board, "generic:");
    assert!(log.contains("Partition Table:"), "{log}");
    assert!(log.contains("Project name:     blink"), "{log}");
    assert!(log.contains("App version:      v1.2.3"), "{log}");
    board.power_off();
    log
}

#[test]
fn esp32c3_rom_loader() {
    check(Chip::Esp32C3, false);
}

#[test]
fn esp32c3_stub_compressed() {
    let log = check(Chip::Esp32C3, true);
    insta::assert_snapshot!("boot_esp32c3", normalise(&log));
}

#[test]
fn esp32_rom_loader() {
    check(Chip::Esp32, false);
}

#[test]
fn esp32_stub_compressed() {
    let log = check(Chip::Esp32, true);
    insta::assert_snapshot!("boot_esp32", normalise(&log));
}

/// Timestamps vary between runs; everything else in a boot log must not.
fn normalise(log: &str) -> String {
    let re = regex::Regex::new(r"^([EWI]) \(\d+\)").unwrap();
    log.lines()
        .map(|l| re.replace(l.trim_end_matches('\r'), "$1 (T)").into_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

//! The harness's flashing function against the virtual board: writes, verifies, and skips
//! what the board already holds.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use esp_formats::image::{self, AppSpec};
use esp_formats::{Chip, partition};
use espflash::connection::ResetBeforeOperation;
use sparring_runner::flash::{FlashOptions, LoaderLink, Region, flash};
use sparring_vboard::board::{Board, BoardConfig, Control, Mode};

#[test]
fn flashes_then_skips_unchanged_regions() {
    let dir = tempfile::tempdir().unwrap();
    let chip = Chip::Esp32C3;
    let mut config = BoardConfig::new(chip, dir.path().join("flash.bin"), dir.path().to_path_buf());
    config.download = true;
    let board = Board::start(config).unwrap();
    let layout = partition::esp_at_layout(chip, Default::default());
    let regions = vec![
        Region {
            offset: 0,
            data: image::build_bootloader(chip),
            name: "bootloader.bin".into(),
        },
        Region {
            offset: partition::TABLE_OFFSET,
            data: layout.main.to_bytes().unwrap(),
            name: "partition-table.bin".into(),
        },
        Region {
            offset: 0x60000,
            data: image::build_app(&AppSpec::new(chip, "blink", "v1")).unwrap(),
            name: "app.bin".into(),
        },
    ];
    let options = FlashOptions::default();
    let first = flash(
        &LoaderLink::plain(board.info.uart0.clone(), ResetBeforeOperation::NoReset),
        chip,
        &regions,
        &options,
    )
    .unwrap();
    assert_eq!(first.written.len(), 3);
    assert!(first.skipped.is_empty());

    board.control(Control::Download).unwrap();
    let mut changed = regions.clone();
    changed[2].data = image::build_app(&AppSpec::new(chip, "blink", "v2")).unwrap();
    let second = flash(
        &LoaderLink::plain(board.info.uart0.clone(), ResetBeforeOperation::NoReset),
        chip,
        &changed,
        &options,
    )
    .unwrap();
    assert_eq!(second.written, vec!["app.bin".to_owned()]);
    assert_eq!(
        second.skipped,
        vec![
            "bootloader.bin".to_owned(),
            "partition-table.bin".to_owned()
        ]
    );

    // Stopped (Ctrl-C) before the first region: nothing is written, each region says so, and
    // the board keeps v2 although v1 was asked for.
    board.control(Control::Download).unwrap();
    let stopped = FlashOptions {
        stop: Some(Arc::new(AtomicBool::new(true))),
        ..FlashOptions::default()
    };
    let third = flash(
        &LoaderLink::plain(board.info.uart0.clone(), ResetBeforeOperation::NoReset),
        chip,
        &regions,
        &stopped,
    )
    .unwrap();
    assert!(third.written.is_empty() && third.skipped.is_empty());
    assert_eq!(third.not_written.len(), 3);

    let state = board.control(Control::Reset).unwrap();
    assert_eq!(
        (state.mode, state.app.as_deref()),
        (Mode::Running, Some("blink v2"))
    );
    board.power_off();
}

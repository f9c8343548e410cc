//! Boards the tests share.

use esp_formats::image::{self, AppSpec};
use esp_formats::{Chip, partition};
use sparring_vboard::board::{Board, BoardConfig};
use sparring_vboard::flash::Flash;

/// A C3 board holding bootloader, ESP-AT partition table and the app `project` `version` in
/// ota_0. `download`: it starts in the ROM loader and boots only when reset.
pub fn flashed_board(dir: &std::path::Path, project: &str, version: &str, download: bool) -> Board {
    let chip = Chip::Esp32C3;
    let path = dir.join("flash.bin");
    let mut flash = Flash::open(&path, 4 << 20).unwrap();
    flash.write(0, &image::build_bootloader(chip)).unwrap();
    let layout = partition::esp_at_layout(chip, Default::default()).main;
    flash
        .write(
            u64::from(partition::TABLE_OFFSET),
            &layout.to_bytes().unwrap(),
        )
        .unwrap();
    let ota_0 = layout.find("ota_0").unwrap().offset;
    flash
        .write(
            u64::from(ota_0),
            &image::build_app(&AppSpec::new(chip, project, version)).unwrap(),
        )
        .unwrap();
    drop(flash);
    let mut config = BoardConfig::new(chip, path, dir.to_owned());
    config.download = download;
    Board::start(config).unwrap()
}

//! The boot path's decisions: a corrupt or foreign app is refused the way the real
//! bootloader refuses it, with its error lines, and the next slot is tried.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use esp_formats::image::{self, AppSpec};
use esp_formats::otadata::{OtaEntry, OtaState};
use esp_formats::{Chip, partition};
use sparring_vboard::boot::{ResetCause, boot};
use sparring_vboard::flash::Flash;

const OTA_0: u64 = 0x60000;
const OTA_1: u64 = 0x230000;
const OTADATA: u64 = 0xD000;

/// A C3 flash with bootloader, ESP-AT partition table and `app-v1` in ota_0, `app-v2` in ota_1.
fn flash_with_two_apps(dir: &std::path::Path) -> Flash {
    let chip = Chip::Esp32C3;
    let mut flash = Flash::open(&dir.join("flash.bin"), 4 << 20).unwrap();
    flash.write(0, &image::build_bootloader(chip)).unwrap();
    flash
        .write(
            u64::from(partition::TABLE_OFFSET),
            &partition::esp_at_layout(chip, Default::default())
                .main
                .to_bytes()
                .unwrap(),
        )
        .unwrap();
    flash
        .write(
            OTA_0,
            &image::build_app(&AppSpec::new(chip, "app", "v1")).unwrap(),
        )
        .unwrap();
    flash
        .write(
            OTA_1,
            &image::build_app(&AppSpec::new(chip, "app", "v2")).unwrap(),
        )
        .unwrap();
    flash
}

fn select_slot(flash: &mut Flash, seq: u32, state: OtaState) {
    flash.erase(OTADATA, 0x2000).unwrap();
    flash
        .write(OTADATA, &OtaEntry::new(seq, state).to_bytes())
        .unwrap();
}

fn booted_version(flash: &mut Flash) -> (Option<String>, String) {
    let result = boot(Chip::Esp32C3, ResetCause::PowerOn, flash, || 0);
    (
        result.app.map(|a| a.descriptor.version),
        result.lines.join("\n"),
    )
}

#[test]
fn otadata_chooses_the_slot() {
    let dir = tempfile::tempdir().unwrap();
    let mut flash = flash_with_two_apps(dir.path());
    assert_eq!(
        booted_version(&mut flash).0.as_deref(),
        Some("v1"),
        "erased otadata boots ota_0"
    );
    select_slot(&mut flash, 2, OtaState::Valid);
    let (version, log) = booted_version(&mut flash);
    assert_eq!(version.as_deref(), Some("v2"), "{log}");
    assert!(
        log.contains("Loaded app from partition at offset 0x230000"),
        "{log}"
    );
}

#[test]
fn one_corrupt_byte_is_refused_and_the_other_slot_boots() {
    let dir = tempfile::tempdir().unwrap();
    let mut flash = flash_with_two_apps(dir.path());
    select_slot(&mut flash, 2, OtaState::Valid);
    let byte = flash.read(OTA_1 + 0x200, 1).unwrap()[0];
    flash.write(OTA_1 + 0x200, &[byte & 0x0F]).unwrap(); // flash can only clear bits
    let (version, log) = booted_version(&mut flash);
    assert!(
        log.contains("E (0) esp_image: Checksum failed. Calculated 0x"),
        "{log}"
    );
    assert!(
        log.contains("E (0) boot: OTA 1 app partition slot is not bootable"),
        "{log}"
    );
    assert_eq!(
        version.as_deref(),
        Some("v1"),
        "falls back to the other slot:\n{log}"
    );
}

#[test]
fn an_image_for_another_chip_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut flash = flash_with_two_apps(dir.path());
    flash.erase(OTA_0, 0x10000).unwrap();
    flash
        .write(
            OTA_0,
            &image::build_app(&AppSpec::new(Chip::Esp32, "app", "esp32-build")).unwrap(),
        )
        .unwrap();
    flash.erase(OTA_1, 0x10000).unwrap();
    let (version, log) = booted_version(&mut flash);
    assert_eq!(version, None, "{log}");
    assert!(
        log.contains("E (0) boot_comm: mismatch chip ID, expected 5, found 0"),
        "{log}"
    );
    assert!(
        log.contains("image at 0x230000 has invalid magic byte (nothing flashed here?)"),
        "{log}"
    );
    assert!(
        log.ends_with("E (0) boot: No bootable app partitions in the partition table"),
        "{log}"
    );
}

#[test]
fn an_unconfirmed_update_is_rolled_back_on_the_next_boot() {
    let dir = tempfile::tempdir().unwrap();
    let mut flash = flash_with_two_apps(dir.path());
    select_slot(&mut flash, 1, OtaState::Valid);
    // An update to ota_1 was written with state NEW in the other sector.
    flash
        .write(
            OTADATA + 0x1000,
            &OtaEntry::new(2, OtaState::New).to_bytes(),
        )
        .unwrap();
    assert_eq!(
        booted_version(&mut flash).0.as_deref(),
        Some("v2"),
        "first boot tries the update"
    );
    // The app did not confirm itself before the next reset.
    let (version, log) = booted_version(&mut flash);
    assert!(log.contains("rolling back"), "{log}");
    assert_eq!(version.as_deref(), Some("v1"), "{log}");
}

#[test]
fn erased_flash_prints_the_roms_invalid_header() {
    let dir = tempfile::tempdir().unwrap();
    let mut flash = Flash::open(&dir.path().join("flash.bin"), 4 << 20).unwrap();
    let (version, log) = booted_version(&mut flash);
    assert_eq!(version, None);
    assert!(log.ends_with("invalid header: 0xffffffff"), "{log}");
}

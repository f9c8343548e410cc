//! `sparring image` checked against esptool, the tool people already trust.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{sparring, text};

/// `python3 -m esptool --chip CHIP image-info FILE`, or `None` when esptool is missing
/// outside CI (under CI it must be there: `.ci/run` installs it).
fn esptool_image_info(chip: &str, file: &Path) -> Option<Output> {
    let output = Command::new("python3")
        .args(["-m", "esptool", "--chip", chip, "image-info"])
        .arg(file)
        .output()
        .ok()?;
    let missing = String::from_utf8_lossy(&output.stderr).contains("No module named esptool");
    assert!(
        !(missing && std::env::var_os("CI").is_some()),
        "esptool is required under CI (.ci/run installs it)"
    );
    (!missing).then_some(output)
}

#[test]
fn esptool_accepts_the_images_we_build() {
    let dir = tempfile::tempdir().unwrap();
    for chip in ["esp32", "esp32c3"] {
        let file = dir.path().join(format!("{chip}.bin"));
        let built = sparring(&[
            "image",
            "build",
            "--chip",
            chip,
            "--project",
            "esp-at",
            "--version",
            "v4.1.0.0",
            "-o",
            file.to_str().unwrap(),
        ]);
        assert!(built.status.success(), "{}", text(&built));
        let Some(info) = esptool_image_info(chip, &file) else {
            return;
        };
        let report = text(&info);
        assert!(info.status.success(), "{report}");
        assert!(
            report.contains("Checksum: ") && report.contains("(valid)"),
            "{report}"
        );
        assert!(
            report.contains("Validation hash: ") && !report.contains("invalid"),
            "{report}"
        );
        assert!(
            report.contains("Project name: esp-at") && report.contains("App version: v4.1.0.0"),
            "{report}"
        );
    }
}

#[test]
fn one_corrupted_byte_is_explained_and_esptool_agrees() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.bin");
    let built = sparring(&[
        "image",
        "build",
        "--chip",
        "esp32c3",
        "--project",
        "blink",
        "--version",
        "1.0",
        "-o",
        file.to_str().unwrap(),
    ]);
    assert!(built.status.success(), "{}", text(&built));
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[0x200] ^= 0x40; // inside the code segment
    std::fs::write(&file, &bytes).unwrap();

    let info = sparring(&["image", "info", file.to_str().unwrap()]);
    assert_eq!(info.status.code(), Some(1), "{}", text(&info));
    assert!(
        text(&info).contains("broken ESP app image: Checksum failed. Calculated 0x"),
        "{}",
        text(&info)
    );

    let Some(esptool) = esptool_image_info("esp32c3", &file) else {
        return;
    };
    assert!(
        text(&esptool).contains("invalid"),
        "esptool should also call it invalid: {}",
        text(&esptool)
    );
}

#[test]
fn flash_set_lays_out_the_esp_at_flash() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("set");
    let result = sparring(&[
        "image",
        "flash-set",
        "--chip",
        "esp32c3",
        "--layout",
        "esp-at",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(result.status.success(), "{}", text(&result));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("flash-set.json")).unwrap()).unwrap();
    let files = &manifest["flash_files"];
    assert_eq!(files["0x0"], "bootloader.bin");
    assert_eq!(files["0x8000"], "partition-table.bin");
    assert_eq!(files["0x60000"], "app.bin");
    let table = sparring(&[
        "image",
        "info",
        out.join("partition-table.bin").to_str().unwrap(),
    ]);
    assert!(table.status.success(), "{}", text(&table));
    assert!(
        text(&table).contains(" 4 ota_0            OTA app          00 10 00060000 001d0000"),
        "{}",
        text(&table)
    );
    let customize = sparring(&[
        "image",
        "info",
        out.join("at_customize.bin").to_str().unwrap(),
    ]);
    assert!(
        text(&customize).contains("mqtt_cert"),
        "{}",
        text(&customize)
    );
    if let Some(boot) = esptool_image_info("esp32c3", &out.join("bootloader.bin")) {
        assert!(boot.status.success(), "{}", text(&boot));
    }
}

#[test]
fn unknown_chip_and_unreadable_files_are_usage_errors() {
    let bad_chip = sparring(&[
        "image",
        "build",
        "--chip",
        "esp8266",
        "--project",
        "x",
        "--version",
        "1",
    ]);
    assert_eq!(bad_chip.status.code(), Some(2));
    assert!(
        text(&bad_chip).contains("unknown chip \"esp8266\""),
        "{}",
        text(&bad_chip)
    );
    let missing = sparring(&["image", "info", "/nonexistent/app.bin"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(text(&missing).contains("/nonexistent/app.bin"));
}

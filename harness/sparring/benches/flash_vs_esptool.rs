//! `sparring flash` against esptool on the same board and the same 1 MiB app image: one
//! `sparring vboard` process, both tools with the stub, compressed and verified writes. The
//! image's code is pseudo-random (compresses as badly as real code does), and one byte changes
//! before every run so neither tool can skip anything. Goal: sparring ≤ 0.25× esptool's time.

#![allow(clippy::unwrap_used)] // bench code: a panic is the failure report

#[path = "../tests/common/vboard.rs"]
mod vboard;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use esp_formats::Chip;
use esp_formats::image::{self, AppSpec};
use sparring_vboard::board::{BoardInfo, Control, send_control};
use vboard::start_vboard;

const RUNS: usize = 3;
const APP_OFFSET: &str = "0x10000";

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let vboard = start_vboard(&dir.path().join("flash.bin"));
    let info = &vboard.info;

    let mut app = random_app();
    let app_path = dir.path().join("app.bin");
    let esptool_present = Command::new("python3")
        .args(["-m", "esptool", "version"])
        .output()
        .is_ok_and(|o| o.status.success());

    let mut sparring_times = Vec::new();
    let mut esptool_times = Vec::new();
    for run in 0..RUNS {
        change_one_byte(&mut app, run * 2);
        std::fs::write(&app_path, &app).expect("app written");
        sparring_times.push(timed(
            info,
            sparring_flash(info, &app_path),
            "written and verified: ",
        ));
        if esptool_present {
            change_one_byte(&mut app, run * 2 + 1);
            std::fs::write(&app_path, &app).expect("app written");
            esptool_times.push(timed(
                info,
                esptool_write(info, &app_path),
                "Hash of data verified.",
            ));
        }
    }
    drop(vboard);

    let mib = app.len() as f64 / f64::from(1 << 20);
    let sparring = median(&mut sparring_times);
    println!(
        "sparring flash: {mib:.2} MiB app (random code) in {:.2} s (median of {RUNS})",
        sparring.as_secs_f64()
    );
    if !esptool_present {
        println!("SKIPPED esptool: `python3 -m esptool` is not installed (pip install esptool)");
        return;
    }
    let esptool = median(&mut esptool_times);
    let ratio = sparring.as_secs_f64() / esptool.as_secs_f64();
    println!(
        "esptool write-flash: same image in {:.2} s (median of {RUNS})",
        esptool.as_secs_f64()
    );
    println!(
        "ratio sparring / esptool: {ratio:.3} (goal ≤ 0.25: {})",
        if ratio <= 0.25 { "met" } else { "NOT met" }
    );
}

/// A 1 MiB app image whose code segment is pseudo-random bytes (xorshift), resealed.
fn random_app() -> Vec<u8> {
    let mut app = image::build_app(&AppSpec {
        code_len: (1 << 20) - 4096,
        ..AppSpec::new(Chip::Esp32C3, "bench", "v1")
    })
    .expect("image");
    let code = code_segment(&app);
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    for byte in &mut app[code] {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *byte = state as u8;
    }
    image::reseal(&mut app).expect("resealed");
    app
}

fn code_segment(app: &[u8]) -> std::ops::Range<usize> {
    let parsed = image::parse(app).expect("a valid image");
    let code = parsed.segments.last().expect("a code segment");
    code.offset..code.offset + code.len
}

fn change_one_byte(app: &mut Vec<u8>, nth: usize) {
    let code = code_segment(app);
    app[code.start + nth] ^= 0xFF;
    image::reseal(app).expect("resealed");
}

/// Runs `command` with the board freshly in its ROM loader; panics unless it succeeds saying
/// `written` (the region was written and verified, not skipped).
fn timed(info: &BoardInfo, mut command: Command, written: &str) -> Duration {
    send_control(&info.control, &Control::Download).expect("board into its loader");
    let start = Instant::now();
    let output = command.output().expect("flasher runs");
    let elapsed = start.elapsed();
    assert!(
        output.status.success() && String::from_utf8_lossy(&output.stdout).contains(written),
        "{command:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    elapsed
}

fn sparring_flash(info: &BoardInfo, app: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sparring"));
    command
        .args(["flash", "--chip", "esp32c3", "--no-reset", "--port"])
        .arg(&info.uart0)
        .arg(format!("{APP_OFFSET}={}", app.display()));
    command
}

fn esptool_write(info: &BoardInfo, app: &Path) -> Command {
    let mut command = Command::new("python3");
    command
        .args(["-m", "esptool", "--chip", "esp32c3", "--port"])
        .arg(&info.uart0)
        .args([
            "--before",
            "no-reset",
            "--after",
            "no-reset",
            "write-flash",
            APP_OFFSET,
        ])
        .arg(app);
    command
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}

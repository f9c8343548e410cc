//! `sparring flash` against `sparring vboard` running as a separate process, declared in a
//! `boards.toml` (ptys as ports, `sparring vboard ctl` as its reset commands) or flashed through
//! its port directly: every input kind boots, unchanged regions are skipped, and an image for
//! another chip is refused before the board is touched.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::text;
use common::vboard::{Lab, VboardProcess, boot_log, lock_dir, start_vboard};
use esp_formats::Chip;
use esp_formats::image::{self, AppSpec};
use sparring_backtrace::elf_builder::{Architecture, TestElf, at};

const BOARD: &str = "flash-c3";

/// A virtual ESP32-C3 in its own directory, with an inventory naming it.
struct Bench {
    dir: tempfile::TempDir,
    board: VboardProcess,
}

impl Bench {
    fn new() -> Bench {
        let dir = tempfile::tempdir().expect("temp dir");
        let board = start_vboard(&dir.path().join("flash.bin"));
        let inventory = Lab::new().inventory(BOARD, &board);
        std::fs::write(dir.path().join("boards.toml"), inventory).expect("inventory written");
        Bench { dir, board }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `sparring flash --board flash-c3 INPUTS`.
    fn flash_board(&self, inputs: &[&str]) -> Output {
        let boards = self.path("boards.toml");
        let mut args = vec![
            "--boards",
            boards.to_str().expect("utf-8 path"),
            "--board",
            BOARD,
        ];
        args.extend_from_slice(inputs);
        self.sparring_flash(&args)
    }

    /// `sparring flash --port UART0 INPUTS` (a pty: no reset lines; the board is in download
    /// mode as it starts).
    fn flash_port(&self, inputs: &[&str]) -> Output {
        let port = self.board.info.uart0.to_string_lossy().into_owned();
        let mut args = vec!["--port", port.as_str()];
        args.extend_from_slice(inputs);
        self.sparring_flash(&args)
    }

    fn sparring_flash(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_sparring"))
            .arg("flash")
            .args(args)
            .env("SPARRING_LOCK_DIR", lock_dir(self.dir.path()))
            .output()
            .expect("sparring flash runs")
    }

    /// `sparring image flash-set` for `chip` with the app `project`, into `name/`.
    fn flash_set(&self, name: &str, chip: Chip, project: &str) -> PathBuf {
        let out = self.path(name);
        common::flash_set(&out, chip.name(), project, "v1.2.3");
        out
    }
}

/// Exit 0, and output naming the input kind (`says`) and a region written.
fn assert_flashed(output: &Output, says: &str) {
    let said = text(output);
    assert_eq!(output.status.code(), Some(0), "{said}");
    assert!(
        said.contains(says) && said.contains("written and verified: "),
        "{said}"
    );
}

fn manifest(set: &Path) -> serde_json::Value {
    let text = std::fs::read(set.join("flash-set.json")).expect("flash-set.json");
    serde_json::from_slice(&text).expect("flash-set.json is JSON")
}

fn assert_boots(bench: &Bench, project: &str) {
    let log = boot_log(&bench.board);
    assert!(
        log.contains(&format!("Project name:     {project}")),
        "{log}"
    );
    assert!(log.contains("App version:"), "{log}");
}

/// The set's files at their offsets, as `esptool merge-bin` writes them (erased in between).
fn merge(set: &Path) -> Vec<u8> {
    let mut merged = Vec::new();
    for (offset, file) in manifest(set)["flash_files"]
        .as_object()
        .expect("flash_files")
    {
        let offset = usize::from_str_radix(offset.trim_start_matches("0x"), 16).expect("hex");
        let bytes = std::fs::read(set.join(file.as_str().expect("file name"))).expect("file");
        if merged.len() < offset + bytes.len() {
            merged.resize(offset + bytes.len(), 0xFF);
        }
        merged[offset..][..bytes.len()].copy_from_slice(&bytes);
    }
    merged
}

#[test]
fn a_flash_set_flashes_through_the_inventory_board_and_boots() {
    let bench = Bench::new();
    let set = bench.flash_set("set", Chip::Esp32C3, "kind-set");
    let output = bench.flash_board(&[set.to_str().expect("utf-8 path")]);
    assert_flashed(&output, "flashing sparring flash set onto board flash-c3");
    assert_boots(&bench, "kind-set");
}

#[test]
fn a_second_identical_flash_skips_every_region() {
    let bench = Bench::new();
    let set = bench.flash_set("set", Chip::Esp32C3, "kind-again");
    let set = set.to_str().expect("utf-8 path");
    assert_flashed(&bench.flash_board(&[set]), "flashing sparring flash set");
    let again = bench.flash_board(&[set]);
    let said = text(&again);
    assert_eq!(again.status.code(), Some(0), "{said}");
    assert!(!said.contains("written and verified"), "{said}");
    assert_eq!(
        said.matches("skipped (the board's MD5 already matches)")
            .count(),
        5,
        "every region of the set: {said}"
    );
    assert_boots(&bench, "kind-again");
}

#[test]
fn offset_file_pairs_flash_through_the_port() {
    let bench = Bench::new();
    let set = bench.flash_set("set", Chip::Esp32C3, "kind-pairs");
    let pairs: Vec<String> = [
        "0x0=bootloader.bin",
        "0x8000=partition-table.bin",
        "0xd000=ota_data_initial.bin",
        "0x60000=app.bin",
    ]
    .iter()
    .map(|pair| {
        let (offset, file) = pair.split_once('=').expect("pair");
        format!("{offset}={}", set.join(file).display())
    })
    .collect();
    let pairs: Vec<&str> = pairs.iter().map(String::as_str).collect();
    let output = bench.flash_port(&pairs);
    assert_flashed(&output, "flashing offset=file pairs");
    assert!(
        text(&output).contains("no reset lines"),
        "{}",
        text(&output)
    );
    assert_boots(&bench, "kind-pairs");
}

#[test]
fn a_merged_binary_flashes_at_zero_and_boots() {
    let bench = Bench::new();
    let set = bench.flash_set("set", Chip::Esp32C3, "kind-merged");
    let merged = bench.path("merged.bin");
    std::fs::write(&merged, merge(&set)).expect("merged written");
    let output = bench.flash_board(&[merged.to_str().expect("utf-8 path")]);
    assert_flashed(&output, "flashing merged binary");
    assert_boots(&bench, "kind-merged");
}

#[test]
fn an_esp_idf_build_directory_flashes_and_boots() {
    let bench = Bench::new();
    let build = bench.flash_set("build", Chip::Esp32C3, "kind-idf");
    let manifest = manifest(&build);
    std::fs::remove_file(build.join("flash-set.json")).expect("removed");
    // The keys ESP-IDF's flasher_args.json.in writes.
    let flasher_args = serde_json::json!({
        "write_flash_args": ["--flash_mode", "dio", "--flash_size", "4MB", "--flash_freq", "80m"],
        "flash_settings": {"flash_mode": "dio", "flash_size": "4MB", "flash_freq": "80m"},
        "flash_files": manifest["flash_files"],
        "app": {"offset": "0x60000", "file": "app.bin", "encrypted": "false"},
        "extra_esptool_args": {"after": "hard_reset", "before": "default_reset", "stub": true, "chip": "esp32c3"},
    });
    std::fs::write(build.join("flasher_args.json"), flasher_args.to_string()).expect("written");
    let output = bench.flash_board(&[build.to_str().expect("utf-8 path")]);
    assert_flashed(&output, "flashing ESP-IDF build directory");
    assert!(text(&output).contains("dio 80m 4MB"), "{}", text(&output));
    assert_boots(&bench, "kind-idf");
}

#[test]
fn an_app_elf_is_made_an_image_with_espflash_bootloader_and_table_and_boots() {
    let bench = Bench::new();
    let descriptor = image::app_descriptor(&AppSpec::new(Chip::Esp32C3, "kind-elf", "v1.2.3"))
        .expect("descriptor");
    let elf = TestElf::new(Architecture::Riscv32)
        .data_section(".flash.appdesc", 0x3C00_0020, &descriptor)
        .code_section(".flash.text", 0x4200_0020..0x4200_1020)
        .function(
            "app_main",
            0x4200_0020..0x4200_0040,
            at("/app/main/main.c", 7),
        )
        .build();
    let path = bench.path("kind-elf.elf");
    std::fs::write(&path, elf).expect("ELF written");
    let output = bench.flash_port(&[path.to_str().expect("utf-8 path")]);
    assert_flashed(&output, "bootloader (espflash's)");
    assert_boots(&bench, "kind-elf");
}

#[test]
fn an_esp32_image_is_refused_by_the_esp32c3_board_before_anything_is_written() {
    let bench = Bench::new();
    let set = bench.flash_set("esp32-set", Chip::Esp32, "wrong-chip");
    let before = std::fs::read(bench.path("flash.bin")).expect("flash file");
    let output = bench.flash_board(&[set.to_str().expect("utf-8 path")]);
    let said = text(&output);
    assert_eq!(output.status.code(), Some(2), "{said}");
    assert!(
        said.contains("built for esp32, but the board is esp32c3"),
        "{said}"
    );
    assert_eq!(said.trim().lines().count(), 1, "one line: {said}");
    let after = std::fs::read(bench.path("flash.bin")).expect("flash file");
    assert!(before == after, "the flash file changed");
}

/// Ctrl-C once the command has begun (its first output line): no further region is started,
/// the command says what was written and what was not, and exits 130. (The signal lands before
/// the loader connection is up, so in practice nothing is written; a Ctrl-C in the middle of a
/// region finishes that region the same way, through the same check between regions.)
#[test]
fn ctrl_c_stops_before_the_next_region_and_says_what_was_not_written() {
    let bench = Bench::new();
    let mut inputs = Vec::new();
    for (i, offset) in [0x10_0000, 0x20_0000, 0x30_0000].into_iter().enumerate() {
        let path = bench.path(&format!("data{i}.bin"));
        // Incompressible, so each region takes a while to write.
        let mut state = 0x2545_F491_4F6C_DD1D_u64 + i as u64;
        let data: Vec<u8> = (0..1 << 20)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        std::fs::write(&path, data).expect("data written");
        inputs.push(format!("0x{offset:x}={}", path.display()));
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_sparring"))
        .args(["flash", "--chip", "esp32c3", "--port"])
        .arg(&bench.board.info.uart0)
        .args(&inputs)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sparring flash starts");
    let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
    let mut first = String::new();
    stdout.read_line(&mut first).expect("the first line");
    assert!(first.starts_with("flashing offset=file pairs"), "{first}");
    let interrupt = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(interrupt.success());
    let output = child.wait_with_output().expect("sparring flash ends");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("stopped by Ctrl-C: written "), "{stderr}");
    assert!(
        stderr.contains("not written ") && stderr.contains("data2.bin"),
        "{stderr}"
    );
}

//! Espressif's own decoder as the peer: `esp-idf-panic-decoder` (pip; what idf.py monitor
//! calls) decodes the same real transcripts with the same ELF files, and must print what
//! we print.
//!
//! It runs `<toolchain prefix>addr2line -fiaC`. Espressif's toolchains (`xtensa-esp-elf-`,
//! `riscv32-esp-elf-`) come from Espressif's own download server through ESP-IDF's
//! installer, from neither pip nor apt, so the prefix here is empty: binutils' generic
//! `addr2line` (Debian package `binutils`), which reads the DWARF of any 32-bit
//! little-endian ELF, Xtensa and RISC-V alike. Outside CI a missing peer skips with a
//! visible line; under CI (`CI=true`) it fails.

use std::io::Write;
use std::process::Command;

use sparring_backtrace::elf_builder::fixtures::{self, Fixture};
use sparring_backtrace::{PanicDecoder, Symbolizer};

/// Decodes every transcript line with esp-idf-panic-decoder's `PcAddressDecoder`, the
/// class idf.py monitor uses, and prints what it returns.
const PEER: &str = r#"
import shutil, sys
try:
    from esp_idf_panic_decoder import PcAddressDecoder
except ImportError:
    print("esp-idf-panic-decoder (pip)"); sys.exit(3)
if shutil.which("addr2line") is None:
    print("addr2line (apt binutils)"); sys.exit(3)
decoder = PcAddressDecoder("", sys.argv[1])
with open(sys.argv[2], encoding="utf-8") as transcript:
    for line in transcript.read().splitlines()[1:]:
        sys.stdout.write(decoder.decode_address(line.encode()))
"#;
const PEER_MISSING: i32 = 3;

/// The peer's decoded lines, or `None` (after saying so) when it is not installed.
fn peer_decode(fixture: &Fixture) -> Option<Vec<String>> {
    let dir = tempfile::tempdir().expect("temporary directory");
    let elf = dir.path().join("app.elf");
    std::fs::write(&elf, &fixture.elf).expect("writing the test ELF");
    let output = Command::new("python3")
        .args(["-c", PEER])
        .arg(&elf)
        .arg(&fixture.transcript)
        .output();
    let missing = match &output {
        Err(error) => format!("python3 ({error})"),
        Ok(output) if output.status.code() == Some(PEER_MISSING) => {
            String::from_utf8_lossy(&output.stdout).trim().to_owned()
        }
        Ok(output) => {
            assert!(
                output.status.success(),
                "esp-idf-panic-decoder failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            let text = String::from_utf8_lossy(&output.stdout);
            return Some(text.lines().map(str::to_owned).collect());
        }
    };
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{missing} is required under CI"
    );
    // Straight to the stderr handle: the test harness captures eprintln!.
    let _ = writeln!(std::io::stderr(), "skipped: {missing} not installed");
    None
}

fn compare_with_peer(fixture: &Fixture) {
    let Some(theirs) = peer_decode(fixture) else {
        return;
    };
    let symbolizer = Symbolizer::from_elf_bytes(&fixture.elf).expect("the test ELF loads");
    let decoder = PanicDecoder::new(&symbolizer);
    let ours: Vec<String> = fixture
        .lines()
        .iter()
        .flat_map(|line| decoder.feed(line))
        // The one deliberate difference: a panic PC the ELF does not know is shown as
        // `?? ??:0` by us and left out by idf.py monitor.
        .filter(|line| !line.ends_with(": ?? ??:0"))
        .collect();
    assert!(!ours.is_empty(), "the fixture decodes to something");
    assert_eq!(ours, theirs);
}

#[test]
fn xtensa_panic_decodes_as_esp_idf_panic_decoder_does() {
    compare_with_peer(&fixtures::xtensa_panic());
}

#[test]
fn riscv_panic_decodes_as_esp_idf_panic_decoder_does() {
    compare_with_peer(&fixtures::riscv_panic());
}

#[test]
fn abort_decodes_as_esp_idf_panic_decoder_does() {
    compare_with_peer(&fixtures::abort());
}

#[test]
fn task_watchdog_decodes_as_esp_idf_panic_decoder_does() {
    compare_with_peer(&fixtures::task_wdt());
}

//! `sparring monitor` on saved logs, stdin and a pseudo-terminal, decoding real ESP-IDF panic
//! transcripts with ELF files built by `sparring_backtrace::elf_builder`.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serialport::SerialPort;

use common::{sparring, text};
use sparring_backtrace::elf_builder::fixtures::{self, Fixture};
use sparring_backtrace::{Symbolizer, decode_transcript};

/// The fixture's ELF written into `dir`.
fn write_elf(dir: &Path, fixture: &Fixture) -> PathBuf {
    let path = dir.join("app.elf");
    std::fs::write(&path, &fixture.elf).unwrap();
    path
}

fn path_arg(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn saved_log_prints_each_line_then_its_decoded_frames() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = fixtures::xtensa_panic();
    let elf = write_elf(dir.path(), &fixture);
    let output = sparring(&[
        "monitor",
        "--input",
        path_arg(&fixture.transcript),
        "--elf",
        path_arg(&elf),
        "--no-timestamps",
    ]);
    assert!(output.status.success(), "{}", text(&output));
    let printed: Vec<String> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();

    let backtrace = printed
        .iter()
        .position(|line| line.starts_with("Backtrace: 0x400e37f4"))
        .unwrap();
    assert_eq!(
        printed[backtrace + 1..backtrace + 5],
        [
            "0x400e37f4: write_register at /app/main/registers.h:12",
            " (inlined by) app_main at /app/main/main.c:36",
            "0x400d0c2e: main_task at /idf/components/freertos/port/port_common.c:133",
            "0x40087015: vPortTaskWrapper at /idf/components/freertos/port/xtensa/port.c:168",
        ]
    );
    // The whole output is the library's decoding of the whole file, its first line included.
    let symbolizer = Symbolizer::from_elf_bytes(&fixture.elf).unwrap();
    let whole_file: Vec<String> = std::fs::read_to_string(&fixture.transcript)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(printed, decode_transcript(&symbolizer, &whole_file));
}

#[test]
fn stdin_lines_are_timestamped_and_decoded() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = fixtures::task_wdt();
    let elf = write_elf(dir.path(), &fixture);
    let mut child = Command::new(env!("CARGO_BIN_EXE_sparring"))
        .args(["monitor", "--input", "-", "--elf", path_arg(&elf)])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(
            b"boot\r\nBacktrace: 0x4037E0A6:0x3FC9B4F0 0x400559DD:0x3FCDC300 |<-CORRUPTED\r\n",
        )
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let printed = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = printed.lines().collect();
    assert_eq!(lines.len(), 4, "{printed}");
    let untimed: Vec<&str> = lines
        .iter()
        .map(|line| {
            let (stamp, rest) = line.split_once("] ").unwrap();
            let seconds = stamp.strip_prefix('[').unwrap().trim();
            assert!(
                seconds.parse::<f64>().is_ok() && seconds.split('.').nth(1).unwrap().len() == 3,
                "{line}"
            );
            rest
        })
        .collect();
    assert_eq!(
        untimed,
        [
            "boot",
            "Backtrace: 0x4037E0A6:0x3FC9B4F0 0x400559DD:0x3FCDC300 |<-CORRUPTED",
            "0x4037e0a6: task_wdt_isr at /idf/components/esp_system/task_wdt.c:183",
            "0x400559dd: ?? ??:0",
        ]
    );
}

#[test]
fn a_file_that_is_no_elf_is_a_usage_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let not_elf = dir.path().join("notes.elf");
    std::fs::write(&not_elf, "just text\n").unwrap();
    let output = sparring(&["monitor", "--input", "-", "--elf", path_arg(&not_elf)]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("--elf {}: not an ELF file (", not_elf.display())),
        "{stderr}"
    );
}

#[test]
fn a_port_or_an_input_is_required() {
    let output = sparring(&["monitor"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output).contains("--port"), "{}", text(&output));
}

/// Kills the monitor if the test fails before it ends.
struct Monitor(Child);

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn serial_port_is_monitored_until_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = fixtures::riscv_panic();
    let elf = write_elf(dir.path(), &fixture);
    // The monitor opens the second end by its path, as it would a USB UART's.
    let (mut board, port) = serialport::TTYPort::pair().unwrap();
    let port_name = port.name().unwrap();
    let mut monitor = Monitor(
        Command::new(env!("CARGO_BIN_EXE_sparring"))
            .args(["monitor", "--port", &port_name, "--elf", path_arg(&elf)])
            .arg("--no-timestamps")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // Its note on stderr says the port is open; what the board writes from now on is seen.
    let mut note = String::new();
    BufReader::new(monitor.0.stderr.take().unwrap())
        .read_line(&mut note)
        .unwrap();
    assert!(
        note.contains(&format!("monitor on {port_name} at 115200 baud")),
        "{note}"
    );
    let (lines_tx, lines) = mpsc::channel();
    let stdout = monitor.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if lines_tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });

    let transcript = std::fs::read_to_string(&fixture.transcript).unwrap();
    board.write_all(transcript.as_bytes()).unwrap();
    let expected = "0x42003a18: run_test at /app/main/test_panic_main.c:30";
    let mut seen = Vec::new();
    while !seen.iter().any(|line: &String| line == expected) {
        match lines.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => seen.push(line),
            Err(e) => panic!("no {expected:?} from the monitor ({e}); it printed {seen:#?}"),
        }
    }
    assert!(
        seen.iter()
            .any(|line| line.starts_with("MEPC    : 0x420037ce"))
    );

    let interrupt = Command::new("kill")
        .args(["-INT", &monitor.0.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupt.success());
    let status = monitor.0.wait().unwrap();
    assert!(
        status.success(),
        "Ctrl-C ends the monitor with 0, got {status}"
    );
}

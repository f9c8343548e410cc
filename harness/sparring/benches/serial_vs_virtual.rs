//! The catalog through both backends in one run: the in-process virtual board, and the same
//! virtual board as a separate `sparring vboard` process driven through the serial backend (ptys
//! as ports, resets by `sparring vboard ctl` commands). Prints wall times side by side and the
//! summed scenario times over the scenarios both ran.

#[path = "../tests/common/vboard.rs"]
mod vboard;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

/// Runs `sparring run ARGS` into `report` (board locks in `dir`); returns wall seconds and
/// elapsed ms by scenario.
fn run(dir: &Path, report: &str, args: &[&str]) -> (f64, BTreeMap<String, u64>) {
    let report = dir.join(report);
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_sparring"))
        .env("SPARRING_LOCK_DIR", vboard::lock_dir(dir))
        .arg("run")
        .args(args)
        .arg("--report")
        .arg(&report)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
        .output()
        .expect("sparring run");
    let wall = started.elapsed().as_secs_f64();
    assert!(
        output.status.success(),
        "sparring run {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(report.join("report.json")).expect("report.json"))
            .expect("JSON report");
    let ran = json["run"]["results"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["verdict"] != "skipped")
        .filter_map(|r| Some((r["id"].as_str()?.to_owned(), r["elapsed_ms"].as_u64()?)))
        .collect();
    (wall, ran)
}

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (virtual_wall, virtual_times) = run(dir.path(), "virtual", &[]);

    let board = vboard::start_vboard(&dir.path().join("flash.bin"));
    let lab = vboard::Lab::new();
    lab.install(&board);
    let inventory = dir.path().join("boards.toml");
    std::fs::write(&inventory, lab.inventory("bench-board", &board)).expect("inventory");
    let inventory = inventory.to_string_lossy().into_owned();
    let (serial_wall, serial_times) = run(
        dir.path(),
        "serial",
        &["--boards", &inventory, "--board", "bench-board"],
    );

    let common: Vec<&String> = serial_times
        .keys()
        .filter(|id| virtual_times.contains_key(*id))
        .collect();
    let sum = |times: &BTreeMap<String, u64>| -> u64 { common.iter().map(|id| times[*id]).sum() };
    let (virtual_sum, serial_sum) = (sum(&virtual_times), sum(&serial_times));
    println!(
        "in-process virtual board: {virtual_wall:.2} s wall, {} scenarios run",
        virtual_times.len()
    );
    println!(
        "serial backend, external vboard: {serial_wall:.2} s wall, {} scenarios run (the rest need capabilities a serial board lacks)",
        serial_times.len()
    );
    println!(
        "the {} scenarios both ran: {:.2} s in-process, {:.2} s serial ({:+.1} %, {:+.0} ms per scenario)",
        common.len(),
        virtual_sum as f64 / 1000.0,
        serial_sum as f64 / 1000.0,
        (serial_sum as f64 / virtual_sum.max(1) as f64 - 1.0) * 100.0,
        (serial_sum as f64 - virtual_sum as f64) / common.len().max(1) as f64
    );
}

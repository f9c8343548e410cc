//! The repository's scenarios on virtual ESP32-C3 boards (release build), side by side in one
//! run: wall time on one board and on four (the pool), per-cell harness overhead (elapsed minus
//! waiting for the board and services) with where it goes by step kind, and the time from the
//! start of a run to the boards being identified through their ROM loaders (the first bytes a
//! run sends to a board are that loader's SYNC).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use sparring_runner::events::RunEvent;
use sparring_runner::executor::{RunOptions, run};
use sparring_runner::scenario::{LoadedScenario, load_path};

struct Figures {
    wall_s: f64,
    cells: usize,
    passed: usize,
    /// `cell: reason` of each cell that did not pass (a bench on a busy machine can fail one).
    failed: Vec<String>,
    harness_ms: Vec<f64>,
    to_boards_identified_ms: f64,
    to_first_step_ms: f64,
    /// Step kind → (count, total µs).
    steps: BTreeMap<String, (u64, u64)>,
}

fn measure(scenarios: &[LoadedScenario], root: &Path, board: &str) -> Figures {
    let report = tempfile::tempdir().expect("temp dir");
    let options = RunOptions::new(
        vec![board.to_owned()],
        report.path().to_owned(),
        root.join("scenarios/snapshots"),
    );
    let started = Instant::now();
    let (mut identified, mut first_step) = (None, None);
    let mut steps: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let results = run(scenarios, &options, &mut |event| match event {
        RunEvent::RunStarted { .. } => {
            identified.get_or_insert(started.elapsed().as_secs_f64() * 1000.0);
        }
        RunEvent::StepFinished { step, .. } => {
            first_step.get_or_insert(started.elapsed().as_secs_f64() * 1000.0);
            let entry = steps.entry(step.step.clone()).or_default();
            entry.0 += 1;
            entry.1 += step.elapsed_us;
        }
        _ => {}
    })
    .expect("run");
    Figures {
        wall_s: started.elapsed().as_secs_f64(),
        cells: results.len(),
        passed: results.iter().filter(|r| r.verdict.passed()).count(),
        failed: results
            .iter()
            .filter(|r| !r.verdict.passed())
            .map(|r| format!("{}: {}", r.cell, r.reason))
            .collect(),
        harness_ms: results.iter().map(|r| r.harness_ms as f64).collect(),
        to_boards_identified_ms: identified.unwrap_or(0.0),
        to_first_step_ms: first_step.unwrap_or(0.0),
        steps,
    }
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let (scenarios, errors) = load_path(&root.join("scenarios"));
    assert!(errors.is_empty(), "{errors:?}");
    let one = measure(&scenarios, &root, "virtual:esp32c3");
    let four = measure(&scenarios, &root, "virtual:esp32c3*4");
    for (name, f) in [("1 board", &one), ("4 boards", &four)] {
        let mean = f.harness_ms.iter().sum::<f64>() / f.harness_ms.len().max(1) as f64;
        let max = f.harness_ms.iter().copied().fold(0.0, f64::max);
        println!(
            "{name}: {} cells ({} passed) in {:.2} s wall = {:.2} cells/s; harness overhead per cell mean {mean:.0} ms, max {max:.0} ms",
            f.cells,
            f.passed,
            f.wall_s,
            f.cells as f64 / f.wall_s
        );
        for failure in &f.failed {
            println!("  did not pass: {failure}");
        }
    }
    println!(
        "throughput with 4 boards: {:.2}x one board's",
        (four.cells as f64 / four.wall_s) / (one.cells as f64 / one.wall_s)
    );
    println!(
        "start of the run to the board identified through its ROM loader (its first bytes sent before): {:.0} ms; to the first step done: {:.0} ms",
        one.to_boards_identified_ms, one.to_first_step_ms
    );
    println!("time by step kind on 1 board (includes the board's own waits):");
    for (step, (count, total_us)) in &one.steps {
        println!(
            "  {step:<11} {count:>4} steps, mean {:>7.1} ms",
            *total_us as f64 / 1000.0 / (*count).max(1) as f64
        );
    }
}

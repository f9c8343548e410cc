//! The repository's scenarios against a virtual ESP32-C3 (release build): total wall time,
//! per-scenario harness overhead (elapsed minus waiting for the board and services), and the
//! time from start to the first step that talks to the board (the first flash).

use std::path::Path;
use std::time::Instant;

use sparring_runner::events::RunEvent;
use sparring_runner::executor::{RunOptions, run};
use sparring_runner::scenario::load_path;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let (scenarios, errors) = load_path(&root.join("scenarios"));
    assert!(errors.is_empty(), "{errors:?}");
    let report = tempfile::tempdir().expect("temp dir");
    let options = RunOptions::new(
        vec!["virtual:esp32c3".to_owned()],
        report.path().to_owned(),
        root.join("scenarios/snapshots"),
    );
    let started = Instant::now();
    let mut first_step_ms = None;
    let results = run(&scenarios, &options, &mut |event| {
        if let RunEvent::StepFinished { .. } = event {
            first_step_ms.get_or_insert(started.elapsed().as_secs_f64() * 1000.0);
        }
    })
    .expect("run");
    let total = started.elapsed().as_secs_f64();
    let overheads: Vec<f64> = results
        .iter()
        .map(|r| r.elapsed_ms.saturating_sub(r.waited_ms) as f64)
        .collect();
    let mean = overheads.iter().sum::<f64>() / overheads.len().max(1) as f64;
    let max = overheads.iter().copied().fold(0.0, f64::max);
    let passed = results.iter().filter(|r| r.verdict.passed()).count();
    println!("scenarios: {} ({passed} passed)", results.len());
    println!("total wall time: {total:.2} s");
    println!("harness overhead per scenario (elapsed - waits): mean {mean:.0} ms, max {max:.0} ms");
    println!(
        "start to first step done (PKI, broker, board, flash of the first scenario): {:.0} ms",
        first_step_ms.unwrap_or(0.0)
    );
}

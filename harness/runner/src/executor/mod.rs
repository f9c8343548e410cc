//! The executor: runs scenarios on boards against per-scenario services and turns everything
//! it sees into [`RunEvent`]s. It judges (verdict, reason, evidence, facts) but renders
//! nothing; reporters do that from the events. It knows boards only through
//! [`crate::board::Board`] and their declared capabilities.

mod esp_at;
mod steps;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use sparring_pki::PkiDir;
use sparring_services::broker::{BrokerAddrs, Observer};

use crate::bench::{Bench, BenchError};
use crate::board::inventory::{Inventory, InventoryError, Lab};
use crate::board::serial::SerialBoard;
use crate::board::virtual_board::{self, VirtualBoard};
use crate::board::{Board, BoardError, Capability};
use crate::events::{RunEvent, ScenarioResult, Verdict};
use crate::scenario::LoadedScenario;

/// How to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// `virtual:esp32c3`, or inventory ids.
    pub boards: Vec<String>,
    /// Where boards other than virtual ones are declared, with their lab.
    pub inventory: Option<Inventory>,
    /// Wait for boards another run holds instead of failing at once.
    pub wait_for_boards: bool,
    /// Where logs and the board's files go.
    pub report_dir: PathBuf,
    pub snapshot_dir: PathBuf,
    pub update_snapshots: bool,
    /// Defect switches for the whole run (proving the suite catches bad firmware); boards
    /// without the `defects` capability refuse them.
    pub defects: Vec<String>,
    /// Set by Ctrl-C: finish the current step, skip the rest, still report.
    pub interrupted: Arc<AtomicBool>,
}

impl RunOptions {
    /// A plain run: no inventory, no defects, snapshots checked, not interrupted.
    pub fn new(boards: Vec<String>, report_dir: PathBuf, snapshot_dir: PathBuf) -> RunOptions {
        RunOptions {
            boards,
            inventory: None,
            wait_for_boards: false,
            report_dir,
            snapshot_dir,
            update_snapshots: false,
            defects: Vec::new(),
            interrupted: Arc::new(AtomicBool::new(false)),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("generating certificates: {0}")]
    Pki(#[from] sparring_pki::PkiError),
    #[error("starting the broker: {0}")]
    Broker(String),
    #[error(transparent)]
    Board(#[from] BoardError),
    #[error(transparent)]
    Bench(#[from] BenchError),
    #[error("--defect needs boards with the defects capability; {0} has none")]
    Defects(String),
}

/// What every scenario of the run shares.
struct Context<'a> {
    runtime: &'a tokio::runtime::Runtime,
    pki: &'a PkiDir,
    broker: BrokerAddrs,
    /// QoS 0 publishes go in through rumqttd's local link.
    observer: &'a Mutex<Observer>,
    options: &'a RunOptions,
    lab: &'a Lab,
}

/// The lab the run's services live in: the inventory's, else loopback.
fn lab_of(options: &RunOptions) -> Lab {
    options
        .inventory
        .as_ref()
        .map(|i| i.lab.clone())
        .unwrap_or_default()
}

/// Starts (virtual) or takes (inventory) the board a `--board` names.
fn open_board(spec: &str, index: usize, options: &RunOptions) -> Result<Box<dyn Board>, RunError> {
    if let Some(chip) = virtual_board::parse_spec(spec) {
        let dir = options.report_dir.join("boards").join(format!("{index}"));
        let name = format!("{spec}#{index}");
        return Ok(Box::new(VirtualBoard::start(chip, &name, &dir)?));
    }
    let inventory = options
        .inventory
        .as_ref()
        .ok_or_else(|| BoardError::from(InventoryError::NoInventory(spec.to_owned())))?;
    let entry = inventory.board(spec).map_err(BoardError::from)?;
    let mut waiting = |holder: &str| {
        eprintln!("waiting for board {spec} (held by pid {holder})");
    };
    Ok(Box::new(SerialBoard::open(
        entry,
        options.wait_for_boards,
        &mut waiting,
    )?))
}

/// Runs every scenario on every board; returns the results (also emitted as events).
pub fn run(
    scenarios: &[LoadedScenario],
    options: &RunOptions,
    emit: &mut dyn FnMut(&RunEvent),
) -> Result<Vec<ScenarioResult>, RunError> {
    let started = Instant::now();
    let lab = lab_of(options);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(RunError::Runtime)?;
    let mut pki_options = sparring_pki::Options::default();
    if !pki_options.ips.contains(&lab.bind) {
        pki_options.ips.push(lab.bind);
    }
    let pki = sparring_pki::TempPki::generate(pki_options)?;
    let (broker, observer) =
        sparring_services::broker::start_rumqttd().map_err(|e| RunError::Broker(e.to_string()))?;
    let observer = Mutex::new(observer);
    runtime
        .block_on(async {
            sparring_services::wait_for_listener(broker.v4).await?;
            sparring_services::wait_for_listener(broker.v5).await
        })
        .map_err(|e| RunError::Broker(e.to_string()))?;
    let reopen_within = Duration::from_millis(lab.reopen_ms);
    let mut benches = Vec::new();
    for (index, spec) in options.boards.iter().enumerate() {
        let board = open_board(spec, index, options)?;
        if !options.defects.is_empty() && !board.has(Capability::Defects) {
            return Err(RunError::Defects(board.name().to_owned()));
        }
        benches.push(Bench::open(board, reopen_within)?);
    }
    let mut fingerprints = BTreeMap::new();
    for (name, der) in [
        ("root", pki.pki.root()),
        ("intermediate", pki.pki.intermediate()),
    ] {
        fingerprints.insert(name.to_owned(), hex::encode(Sha256::digest(der?.as_ref())));
    }
    emit(&RunEvent::RunStarted {
        sparring_version: env!("CARGO_PKG_VERSION").to_owned(),
        boards: benches.iter().map(|b| b.identity.clone()).collect(),
        scenarios: scenarios.len(),
        ca_fingerprints: fingerprints,
    });
    let context = Context {
        runtime: &runtime,
        pki: &pki.pki,
        broker,
        observer: &observer,
        options,
        lab: &lab,
    };
    let mut results = Vec::new();
    for bench in &mut benches {
        for loaded in scenarios {
            let result = match why_not(bench, loaded, options) {
                Some(reason) => skipped(bench, loaded, &reason),
                None => {
                    emit(&RunEvent::ScenarioStarted {
                        board: bench.identity.name.clone(),
                        id: loaded.scenario.id.get_ref().clone(),
                        title: loaded.scenario.title.clone(),
                    });
                    steps::run_scenario(&context, bench, loaded, emit)
                }
            };
            emit(&RunEvent::ScenarioFinished(Box::new(result.clone())));
            results.push(result);
        }
    }
    let mut counts = BTreeMap::new();
    for r in &results {
        *counts.entry(r.verdict.name().to_owned()).or_insert(0) += 1;
    }
    emit(&RunEvent::RunFinished {
        elapsed_ms: started.elapsed().as_millis() as u64,
        counts,
        interrupted: options.interrupted.load(Ordering::SeqCst),
    });
    Ok(results)
}

/// Why a scenario does not run on this board, if it does not.
fn why_not(bench: &Bench, loaded: &LoadedScenario, options: &RunOptions) -> Option<String> {
    let wanted = &loaded.scenario.board;
    let board = &bench.board;
    if options.interrupted.load(Ordering::SeqCst) {
        return Some("run interrupted (Ctrl-C) before this scenario".into());
    }
    if let Some(lost) = &bench.lost {
        return Some(format!("board lost earlier in the run: {lost}"));
    }
    if !wanted.chips.is_empty() && !wanted.chips.iter().any(|c| c == board.chip().name()) {
        return Some(format!("needs a {} board", wanted.chips.join(", ")));
    }
    if wanted.personality != board.firmware().personality() {
        return Some(format!(
            "needs {} firmware; {} runs {}",
            wanted.personality,
            board.name(),
            board.firmware().personality()
        ));
    }
    let missing: Vec<&str> = wanted
        .requires
        .iter()
        .filter(|c| !board.has(**c))
        .map(|c| c.name())
        .collect();
    if !missing.is_empty() {
        return Some(format!(
            "needs {} ({} does not have it)",
            missing.join(", "),
            board.name()
        ));
    }
    None
}

fn blank_result(bench: &Bench, loaded: &LoadedScenario) -> ScenarioResult {
    let s = &loaded.scenario;
    ScenarioResult {
        board: bench.identity.name.clone(),
        id: s.id.get_ref().clone(),
        title: s.title.clone(),
        file: loaded.path.display().to_string(),
        tags: s.tags.clone(),
        references: s.references.clone(),
        verdict: Verdict::Pass,
        reason: String::new(),
        evidence: Vec::new(),
        warnings: Vec::new(),
        facts: Default::default(),
        elapsed_ms: 0,
        waited_ms: 0,
        logs: BTreeMap::new(),
    }
}

fn skipped(bench: &Bench, loaded: &LoadedScenario, reason: &str) -> ScenarioResult {
    ScenarioResult {
        verdict: Verdict::Skipped,
        reason: reason.to_owned(),
        ..blank_result(bench, loaded)
    }
}

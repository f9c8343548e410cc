//! The executor: runs a run's cells on a pool of boards against per-scenario services and turns
//! everything it sees into [`RunEvent`]s. In the spirit of cargo-nextest's runner: each board is
//! driven by its own thread, takes the next cell it is eligible for (longest expected first when
//! the previous run's durations are known), and sends typed events to the one thread that emits
//! them; one board never runs two cells at once. It judges (verdict, reason, evidence, facts) but
//! renders nothing; reporters do that from the events. It knows boards only through
//! [`crate::board::Board`] and their declared capabilities.

mod esp_at;
mod steps;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use sparring_pki::PkiDir;
use sparring_services::broker::{BrokerAddrs, Observer};

use crate::bench::{Bench, BenchError};
use crate::board::inventory::{Inventory, Lab};
use crate::board::probe::ProbeFinder;
use crate::board::{BoardError, BoardSpec, Capability, resolve_specs};
use crate::cells::{self, Cell, Shard, Spread};
use crate::events::{RunEvent, ScenarioResult, Verdict};
use crate::scenario::LoadedScenario;

/// How to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// `virtual:esp32c3`, `virtual:esp32c3*4`, or inventory ids.
    pub boards: Vec<String>,
    /// Where boards other than virtual ones are declared, with their lab.
    pub inventory: Option<Inventory>,
    /// Wait for boards another run holds instead of failing at once.
    pub wait_for_boards: bool,
    /// How probe boards' debug probes are found.
    pub probes: ProbeFinder,
    /// Which boards a scenario runs on.
    pub spread: Spread,
    /// Only the cells this shard owns.
    pub shard: Option<Shard>,
    /// Only cells whose id or scenario id matches.
    pub filter: Option<globset::GlobMatcher>,
    /// Where logs and the board's files go.
    pub report_dir: PathBuf,
    pub snapshot_dir: PathBuf,
    pub update_snapshots: bool,
    /// Defect switches for the whole run (proving the suite catches bad firmware); boards
    /// without the `defects` capability refuse them.
    pub defects: Vec<String>,
    /// Set by Ctrl-C: finish the current step, skip the rest, still report.
    pub interrupted: Arc<AtomicBool>,
    /// How many times faster than real time a virtual board's firmware waits (reconnect,
    /// keep-alive); real boards run in real time.
    pub time_scale: u32,
}

/// Virtual boards' default: a 10 s esp-mqtt reconnect takes 1 s.
pub const DEFAULT_TIME_SCALE: u32 = 10;

impl RunOptions {
    /// A plain run: no inventory, no defects, snapshots checked, not interrupted.
    pub fn new(boards: Vec<String>, report_dir: PathBuf, snapshot_dir: PathBuf) -> RunOptions {
        RunOptions {
            boards,
            inventory: None,
            wait_for_boards: false,
            probes: ProbeFinder::default(),
            spread: Spread::Every,
            shard: None,
            filter: None,
            report_dir,
            snapshot_dir,
            update_snapshots: false,
            defects: Vec::new(),
            interrupted: Arc::new(AtomicBool::new(false)),
            time_scale: DEFAULT_TIME_SCALE,
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

/// What every scenario on one board shares.
struct Context<'a> {
    runtime: &'a tokio::runtime::Runtime,
    pki: &'a PkiDir,
    /// The board's own broker: boards present the same device identity, and one client id on
    /// one broker would take the other board's session over.
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

/// The boards and cells a run would execute, without opening any board (`--list`).
pub fn cells(
    scenarios: &[LoadedScenario],
    options: &RunOptions,
) -> Result<(Vec<BoardSpec>, Vec<Cell>), RunError> {
    let specs = resolve_specs(
        &options.boards,
        options.inventory.as_ref(),
        &options.report_dir.join("boards"),
    )?;
    let descriptors: Vec<_> = specs.iter().map(|s| s.descriptor.clone()).collect();
    let mut cells = cells::plan(scenarios, &descriptors, options.spread);
    cells.retain(|cell| {
        let wanted = options
            .filter
            .as_ref()
            .is_none_or(|f| f.is_match(&cell.id) || f.is_match(&cell.scenario));
        wanted && options.shard.is_none_or(|s| s.owns(&cell.id))
    });
    Ok((specs, cells))
}

/// A broker of one board (rumqttd runs on its own threads for the rest of the process).
struct Broker {
    addrs: BrokerAddrs,
    observer: Mutex<Observer>,
}

fn start_broker(runtime: &tokio::runtime::Runtime) -> Result<Broker, RunError> {
    let (addrs, observer) =
        sparring_services::broker::start_rumqttd().map_err(|e| RunError::Broker(e.to_string()))?;
    runtime
        .block_on(async {
            sparring_services::wait_for_listener(addrs.v4).await?;
            sparring_services::wait_for_listener(addrs.v5).await
        })
        .map_err(|e| RunError::Broker(e.to_string()))?;
    Ok(Broker {
        addrs,
        observer: Mutex::new(observer),
    })
}

/// Runs the cells on the boards; returns the results (also emitted as events).
pub fn run(
    scenarios: &[LoadedScenario],
    options: &RunOptions,
    emit: &mut dyn FnMut(&RunEvent),
) -> Result<Vec<ScenarioResult>, RunError> {
    let started = Instant::now();
    let (specs, cells) = cells(scenarios, options)?;
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
    let reopen_within = Duration::from_millis(lab.reopen_ms);
    // Boards open side by side: each asks its ROM loader who it is.
    let opened: Vec<Result<(Bench, Broker), RunError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = specs
            .iter()
            .map(|spec| {
                let runtime = &runtime;
                scope.spawn(move || {
                    let board = spec.open(options.wait_for_boards, &options.probes.lister())?;
                    if !options.defects.is_empty() && !board.has(Capability::Defects) {
                        return Err(RunError::Defects(board.name().to_owned()));
                    }
                    let bench = Bench::open(board, reopen_within)?;
                    Ok((bench, start_broker(runtime)?))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(RunError::Broker("a board's thread panicked".into())))
            })
            .collect()
    });
    let benches = opened.into_iter().collect::<Result<Vec<_>, _>>()?;
    let mut fingerprints = BTreeMap::new();
    for (name, der) in [
        ("root", pki.pki.root()),
        ("intermediate", pki.pki.intermediate()),
    ] {
        fingerprints.insert(name.to_owned(), hex::encode(Sha256::digest(der?.as_ref())));
    }
    emit(&RunEvent::RunStarted {
        sparring_version: env!("CARGO_PKG_VERSION").to_owned(),
        boards: benches.iter().map(|(b, _)| b.identity.clone()).collect(),
        scenarios: cells.len(),
        ca_fingerprints: fingerprints,
    });
    let durations_file = options.report_dir.join("durations.json");
    let expected = previous_durations(&durations_file);
    let queue = Queue::new(&cells, &expected);
    let mut results = Vec::new();
    std::thread::scope(|scope| {
        let (sender, receiver) = mpsc::channel::<RunEvent>();
        for (index, (mut bench, broker)) in benches.into_iter().enumerate() {
            let sender = sender.clone();
            let (queue, pki, lab, runtime) = (&queue, &pki.pki, &lab, &runtime);
            scope.spawn(move || {
                let context = Context {
                    runtime,
                    pki,
                    broker: broker.addrs,
                    observer: &broker.observer,
                    options,
                    lab,
                };
                let mut send = |event: &RunEvent| {
                    let _ = sender.send(event.clone());
                };
                // A lost board takes no more cells; the pool gives them to nobody else in
                // its place unless they were eligible elsewhere too.
                while bench.lost.is_none()
                    && let Some(cell) = queue.next_for(index, options)
                {
                    let loaded = &scenarios[cell.scenario_index];
                    send(&RunEvent::ScenarioStarted {
                        board: bench.identity.name.clone(),
                        id: loaded.scenario.id.get_ref().clone(),
                        title: loaded.scenario.title.clone(),
                    });
                    let mut result = steps::run_scenario(&context, &mut bench, loaded, &mut send);
                    result.cell = cell.id.clone();
                    send(&RunEvent::ScenarioFinished(Box::new(result)));
                }
                queue.board_done(index, bench.lost.clone());
            });
        }
        drop(sender);
        for event in receiver {
            if let RunEvent::ScenarioFinished(result) = &event {
                results.push((**result).clone());
            }
            emit(&event);
        }
    });
    // Cells no board took: interrupted, or every board that could run them was lost.
    for cell in queue.left_over() {
        let loaded = &scenarios[cell.scenario_index];
        let reason = match (&cell.skip, queue.loss_of(&cell)) {
            (Some(skip), _) => skip.clone(),
            (None, Some(lost)) => format!("board lost earlier in the run: {lost}"),
            (None, None) => "run interrupted (Ctrl-C) before this scenario".to_owned(),
        };
        let result = skipped(&cell.group, &cell, loaded, &reason);
        emit(&RunEvent::ScenarioFinished(Box::new(result.clone())));
        results.push(result);
    }
    save_durations(&durations_file, &results);
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

/// The cells not yet taken, longest expected first, and why boards stopped taking work.
struct Queue {
    pending: Mutex<Vec<Cell>>,
    /// Boards lost mid-run, by index, with the reason.
    lost: Mutex<BTreeMap<usize, String>>,
}

impl Queue {
    fn new(cells: &[Cell], expected: &BTreeMap<String, u64>) -> Queue {
        let mut pending: Vec<Cell> = cells.to_vec();
        // Stable: cells without a known duration keep the scenario order, after the known ones.
        pending.sort_by_key(|c| std::cmp::Reverse(expected.get(&c.id).copied().unwrap_or(0)));
        Queue {
            pending: Mutex::new(pending),
            lost: Mutex::new(BTreeMap::new()),
        }
    }

    /// The next cell board `index` may run; `None` when there is none (or the run is stopping).
    fn next_for(&self, index: usize, options: &RunOptions) -> Option<Cell> {
        if options.interrupted.load(Ordering::SeqCst) {
            return None;
        }
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let at = pending
            .iter()
            .position(|c| c.skip.is_none() && c.eligible.contains(&index))?;
        Some(pending.remove(at))
    }

    /// A board takes no more work: cells only it could run stay for the leftovers.
    fn board_done(&self, index: usize, lost: Option<String>) {
        if let Some(reason) = lost {
            self.lost
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(index, reason);
        }
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        for cell in pending.iter_mut() {
            cell.eligible.retain(|&b| b != index);
        }
    }

    /// Why a left-over cell's boards stopped: the loss of one that could have run it.
    fn loss_of(&self, cell: &Cell) -> Option<String> {
        let lost = self.lost.lock().unwrap_or_else(|p| p.into_inner());
        cell.candidates.iter().find_map(|b| lost.get(b).cloned())
    }

    fn left_over(&self) -> Vec<Cell> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let mut left = std::mem::take(&mut *pending);
        left.sort_by_key(|c| c.scenario_index);
        left
    }
}

/// Each cell's elapsed time in the previous run into this report directory.
fn previous_durations(path: &Path) -> BTreeMap<String, u64> {
    std::fs::read(path)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

fn save_durations(path: &Path, results: &[ScenarioResult]) {
    let durations: BTreeMap<&str, u64> = results
        .iter()
        .filter(|r| r.verdict != Verdict::Skipped)
        .map(|r| (r.cell.as_str(), r.elapsed_ms))
        .collect();
    if let Ok(json) = serde_json::to_vec_pretty(&durations) {
        let _ = std::fs::create_dir_all(path.parent().unwrap_or(Path::new(".")));
        let _ = std::fs::write(path, json);
    }
}

fn blank_result(board: &str, cell: &str, loaded: &LoadedScenario) -> ScenarioResult {
    let s = &loaded.scenario;
    ScenarioResult {
        board: board.to_owned(),
        cell: cell.to_owned(),
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
        harness_ms: 0,
        logs: BTreeMap::new(),
        steps: Vec::new(),
    }
}

fn skipped(board: &str, cell: &Cell, loaded: &LoadedScenario, reason: &str) -> ScenarioResult {
    ScenarioResult {
        verdict: Verdict::Skipped,
        reason: reason.to_owned(),
        ..blank_result(board, &cell.id, loaded)
    }
}

//! `sparring run`: scenarios against boards, reports for CI and for reviewers.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use sparring_report::{RunRecord, terminal::Terminal};
use sparring_runner::board::inventory::Inventory;
use sparring_runner::cells::{Shard, Spread};
use sparring_runner::executor::{self, RunOptions};
use sparring_runner::scenario::{LoadError, load_path};
use sparring_vboard::personality::Defect;

/// Run scenarios against boards (default: all of scenarios/ on a virtual ESP32-C3) and write
/// JUnit, JSON and HTML reports.
///
/// Per scenario: flash, provision, drive, judge, snapshot, report.
///
/// With no arguments it runs every scenario in `scenarios/` against a virtual ESP32-C3
/// running the ESP-AT firmware personality — no hardware needed. Each scenario gets fresh
/// services (TLS gate with its server certificate profile, broker, SNTP, OTA) on loopback.
///
/// Real boards are named by their id in a `boards.toml` inventory (`--boards FILE`, else
/// `$SPARRING_BOARDS`, else `./boards.toml`): `sparring run --board desk-c3`. The services then
/// listen on the inventory's `[lab] bind` address, and scenarios needing something the board
/// does not offer (heap-control, defects, lab-network) are skipped, naming it. A board is held
/// by one run at a time. `sparring boards` lists ports and checks the inventory.
///
/// Several boards run at once, as a pool: each scenario × board cell goes to whichever eligible
/// board is free (longest first when the previous run into the same `--report` is known). A
/// scenario runs on every board it is eligible for (chip, firmware, capabilities), on one board
/// per chip (`--each chip`) or on one board (`--any`). Cell ids `scenario@board` (`@chip`,
/// `@any`) are stable: `--filter` matches them or the scenario id, `--shard k/n` keeps the cells
/// whose id hashes to shard k (adding a scenario moves no other cell), `--list` prints the cells
/// without touching a board. `--board virtual:esp32c3*4` starts four virtual boards.
///
/// Writes `junit.xml`, `report.json` and `report.html` into `--report` (also after a failure
/// or Ctrl-C, for what ran), raw and timestamped serial logs under `--report/logs/`.
/// Exit codes: 0 all passed, 1 a scenario failed or errored, 2 usage or configuration error,
/// 130 interrupted by Ctrl-C.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Scenario files or directories (default: scenarios/).
    paths: Vec<PathBuf>,
    /// Board to run on: `virtual:esp32c3`, `virtual:esp32`, `virtual:esp32c3*4` (four), or an
    /// id from the inventory; repeat for several (they run side by side).
    #[arg(long = "board", default_value = "virtual:esp32c3")]
    boards: Vec<String>,
    /// The board inventory (default: $SPARRING_BOARDS, else ./boards.toml if present).
    #[arg(long = "boards", value_name = "FILE")]
    inventory: Option<PathBuf>,
    /// Wait for boards another sparring run holds instead of failing at once.
    #[arg(long)]
    wait_for_boards: bool,
    /// Only cells whose id (`tls-valid@desk-c3`) or scenario id matches this glob (`tls-*`).
    #[arg(long)]
    filter: Option<String>,
    /// Run each scenario once per chip (`chip`) instead of on every eligible board.
    #[arg(long, value_parser = ["chip"], conflicts_with = "any")]
    each: Option<String>,
    /// Run each scenario once, on whichever eligible board is free.
    #[arg(long)]
    any: bool,
    /// Only the cells of shard K of N (`2/3`), for CI runners that split a suite.
    #[arg(long, value_name = "K/N")]
    shard: Option<Shard>,
    /// Print the cells this run would execute and exit, touching no board.
    #[arg(long)]
    list: bool,
    /// With --list: `text` (one cell id per line) or `json`.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    format: String,
    /// Directory for reports and logs.
    #[arg(long, default_value = "target/sparring")]
    report: PathBuf,
    /// Accept changed log snapshots (writes scenarios/snapshots/*.snap).
    #[arg(long)]
    update_snapshots: bool,
    /// Turn a defect switch on in the virtual firmware for the whole run, to prove the suite
    /// catches bad firmware: skip-server-verify, skip-cn-check, ignore-expiry, no-sntp-wait,
    /// leak-per-connect=BYTES, crash-on-large-record, accept-any-ota-image, no-rollback,
    /// no-backoff, no-retransmit, ignore-keepalive, crash-before-confirm, accept-weak-crypto.
    #[arg(long = "defect", value_parser = parse_defect)]
    defects: Vec<String>,
    /// How many times faster than real time virtual boards' firmware waits (esp-mqtt's 10 s
    /// reconnect, keep-alive, retransmits); 1 is real time. Facts the broker measures are
    /// converted back into board time. Real boards always run in real time.
    #[arg(long, default_value_t = executor::DEFAULT_TIME_SCALE, value_parser = clap::value_parser!(u32).range(1..=100))]
    time_scale: u32,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let paths = if args.paths.is_empty() {
        vec![PathBuf::from("scenarios")]
    } else {
        args.paths.clone()
    };
    let mut scenarios = Vec::new();
    let mut errors = Vec::new();
    for path in &paths {
        let (found, failed) = load_path(path);
        scenarios.extend(found);
        errors.extend(failed);
    }
    if !errors.is_empty() {
        for e in &errors {
            eprintln!("{e}");
        }
        let unreadable = errors.iter().any(|e| matches!(e, LoadError::Read { .. }));
        anyhow::bail!(
            "{} scenario file(s) {}; nothing was run",
            errors.len(),
            if unreadable { "unreadable" } else { "invalid" }
        );
    }
    let filter = match &args.filter {
        Some(glob) => Some(
            globset::Glob::new(glob)
                .with_context(|| format!("--filter {glob:?}"))?
                .compile_matcher(),
        ),
        None => None,
    };
    anyhow::ensure!(!scenarios.is_empty(), "no scenario to run");
    let snapshot_dir = paths
        .iter()
        .find(|p| p.is_dir())
        .cloned()
        .unwrap_or_else(|| PathBuf::from("scenarios"))
        .join("snapshots");
    let interrupted = Arc::new(AtomicBool::new(false));
    // Ctrl-C: the executor finishes its step, skips the rest, and reports.
    super::watch_ctrl_c(
        interrupted.clone(),
        Some("interrupted: finishing the current step, then writing the reports"),
    );
    let inventory = Inventory::find(args.inventory.as_deref())?;
    let options = RunOptions {
        boards: args.boards,
        inventory,
        wait_for_boards: args.wait_for_boards,
        probes: Default::default(),
        spread: match (args.any, args.each.is_some()) {
            (true, _) => Spread::Any,
            (false, true) => Spread::EachChip,
            (false, false) => Spread::Every,
        },
        shard: args.shard,
        filter,
        report_dir: args.report.clone(),
        snapshot_dir,
        update_snapshots: args.update_snapshots,
        defects: args.defects,
        interrupted: interrupted.clone(),
        time_scale: args.time_scale,
    };
    let (_, cells) = executor::cells(&scenarios, &options)?;
    // An empty shard is fine (a CI runner with nothing to do); an empty filter is a typo.
    anyhow::ensure!(
        !cells.is_empty() || options.shard.is_some(),
        "no cell to run: --filter {:?} matches no scenario or cell id",
        args.filter.as_deref().unwrap_or("")
    );
    if args.list {
        if args.format == "json" {
            println!("{}", serde_json::to_string_pretty(&cells)?);
        } else {
            for cell in &cells {
                match &cell.skip {
                    Some(reason) => println!("{}  (skipped: {reason})", cell.id),
                    None => println!("{}", cell.id),
                }
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut terminal = Terminal::default();
    let mut record = RunRecord::default();
    let result = executor::run(&scenarios, &options, &mut |event| {
        terminal.on(event);
        record.record(event);
    });
    // Reports are written for whatever ran, even when the run itself broke.
    let written = sparring_report::write_all(&args.report, &record)?;
    for path in &written {
        eprintln!("wrote {}", path.display());
    }
    let results = result.context("running the scenarios")?;
    Ok(if interrupted.load(Ordering::SeqCst) {
        // Whatever passed, the suite did not run to its end: never a success for CI.
        ExitCode::from(INTERRUPTED)
    } else if results.iter().all(|r| r.verdict.passed()) {
        ExitCode::SUCCESS
    } else {
        super::exit_problem()
    })
}

/// Checks the name against the virtual firmware's switches; the executor passes it on as is.
fn parse_defect(name: &str) -> Result<String, String> {
    name.parse::<Defect>()
        .map(|_| name.to_owned())
        .map_err(|e| e.to_string())
}

/// Exit code of a run stopped by Ctrl-C (128 + SIGINT, as shells report it).
const INTERRUPTED: u8 = 130;

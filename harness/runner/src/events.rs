//! What a run reports, as typed, timestamped events: the executor emits them, every reporter
//! (terminal, JUnit, JSON, HTML, snapshots) consumes the same stream, so they never disagree.
//! Plain data (serde), so the JSON report is their serialisation.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// One event of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum RunEvent {
    RunStarted {
        sparring_version: String,
        boards: Vec<BoardIdentity>,
        scenarios: usize,
        /// SHA-256 fingerprints of the CAs the services used, by name.
        ca_fingerprints: BTreeMap<String, String>,
    },
    ScenarioStarted {
        board: String,
        id: String,
        title: String,
    },
    StepFinished {
        board: String,
        scenario: String,
        index: usize,
        /// What ran, where it was written and how long it took (benchmarks time single steps
        /// with it); the same record the scenario's result lists.
        step: StepTiming,
    },
    ScenarioFinished(Box<ScenarioResult>),
    RunFinished {
        elapsed_ms: u64,
        counts: BTreeMap<String, usize>,
        interrupted: bool,
    },
}

/// Who a board is, as the qualification report shows it: the chip as its ROM loader says, the
/// firmware as its boot log says — never what the harness assumes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoardIdentity {
    /// `desk-c3` (inventory id), `virtual:esp32c3#0`, ...
    pub name: String,
    pub chip: String,
    pub mac: String,
    pub flash_size: String,
    /// The firmware the board last booted; `None` until a boot log showed it.
    pub firmware: Option<FirmwareIdentity>,
}

/// An app as ESP-IDF's boot log announces it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirmwareIdentity {
    pub project: String,
    pub version: String,
    /// The ELF file's SHA-256: in full when it is the app sparring flashed, else the prefix the
    /// boot log prints (`3c1a9f0b2d4e5f60...`).
    pub elf_sha256: String,
}

impl fmt::Display for FirmwareIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} (ELF SHA-256 {})",
            self.project, self.version, self.elf_sha256
        )
    }
}

/// How a scenario ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Pass,
    /// Passed, but something a reviewer should see happened (e.g. the board refused a bad
    /// certificate by closing the connection without a TLS alert).
    PassWithWarnings,
    Fail,
    /// The harness or a board broke; says nothing about the firmware.
    Error,
    Skipped,
}

impl Verdict {
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::PassWithWarnings => "pass-with-warnings",
            Verdict::Fail => "fail",
            Verdict::Error => "error",
            Verdict::Skipped => "skipped",
        }
    }

    /// Counts as a success for the exit code.
    pub fn passed(self) -> bool {
        matches!(
            self,
            Verdict::Pass | Verdict::PassWithWarnings | Verdict::Skipped
        )
    }
}

/// The outcome of one scenario on one board.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScenarioResult {
    pub board: String,
    /// `scenario@board` (or `@chip`, `@any`): stable across runs, what `--filter` and
    /// `--shard` use.
    #[serde(default)]
    pub cell: String,
    pub id: String,
    pub title: String,
    pub file: String,
    pub tags: Vec<String>,
    pub references: BTreeMap<String, String>,
    pub verdict: Verdict,
    /// One line: why it failed, or what the warning is; empty on a clean pass.
    pub reason: String,
    /// The log lines / events that show it (for failures and warnings).
    pub evidence: Vec<String>,
    pub warnings: Vec<String>,
    pub facts: Facts,
    pub elapsed_ms: u64,
    /// Time spent waiting for the board or services (timeouts, windows): the rest is harness
    /// overhead.
    pub waited_ms: u64,
    /// The harness's own time: elapsed minus waiting.
    #[serde(default)]
    pub harness_ms: u64,
    /// Raw log files written for this scenario, by port.
    pub logs: BTreeMap<String, String>,
    /// Each step that ran, in order, with its time: where a scenario's time goes.
    #[serde(default)]
    pub steps: Vec<StepTiming>,
}

/// One step of a scenario as it ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepTiming {
    /// `expect`, `send`, ...
    pub step: String,
    /// Where it was written, `file:line` (a library file for included steps).
    pub origin: String,
    pub ok: bool,
    pub elapsed_us: u64,
}

/// What was observed about the board during a scenario.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Facts {
    pub tls_versions_offered: Vec<String>,
    pub cipher_suites_offered: usize,
    pub sni_sent: Vec<String>,
    /// Alerts the board sent when it refused a server ("certificate_expired", "none").
    pub alerts_sent: Vec<String>,
    pub handshakes: usize,
    /// TLS connections the board opened to the broker, as the gate saw them.
    pub connect_attempts: u32,
    /// From the end of the last failed attempt to the start of the next, as the broker saw it.
    pub last_backoff_ms: Option<u32>,
    /// The firmware's own last heap report (`+SYSRAM:<free>,<min free>` on ESP-AT).
    pub free_heap: Option<u32>,
    pub heap_low_water: Option<u32>,
    pub mqtt_client_ids: Vec<String>,
    pub http_requests: usize,
    /// What the board booted during the scenario, from its boot log.
    pub firmware: Option<FirmwareIdentity>,
}

//! Scenario files (`scenarios/*.toml`): the plain-data model and its loader.
//!
//! Every error names the file, line and column and says what was expected, for
//! syntax errors (from `toml`'s span) and for semantic ones (bad regex, duplicate
//! id) alike, by keeping spans through `toml::Spanned`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

/// One scenario, as written in its file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Stable identifier used by `--filter` and in reports.
    pub id: Spanned<String>,
    pub title: String,
    #[serde(default)]
    pub tags: Vec<String>,
    /// Catalog entries this scenario corresponds to, e.g. `device-advisor = "TLS_Expired_Server_Cert"`.
    #[serde(default)]
    pub references: BTreeMap<String, String>,
    pub board: BoardRequirement,
    #[serde(default)]
    pub setup: Setup,
    /// Values that expand the file into one scenario per combination: `${matrix.NAME}`
    /// anywhere in the file is replaced, and the id becomes `id[NAME=value,...]`.
    #[serde(default)]
    pub matrix: BTreeMap<String, Vec<String>>,
    pub steps: Vec<Spanned<Step>>,
}

/// What a board must be to run the scenario.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoardRequirement {
    /// Chips the scenario runs on; empty means any.
    #[serde(default)]
    pub chips: Vec<String>,
    /// Firmware personality (app descriptor project name), e.g. `esp-at`.
    pub personality: String,
    /// Where the ESP-AT firmware keeps certificates: `pki-partitions` (v2.x–v3.0, written with
    /// `AT+SYSFLASH`) or `mfg-nvs` (v3.1+, written with `AT+SYSMFG`).
    #[serde(default)]
    pub at_storage: AtStorage,
    /// What the board or its lab must offer beyond ports and resets (`heap-control`,
    /// `defects`, `lab-network`, `power`); on a board without one the scenario is skipped,
    /// naming it.
    #[serde(default)]
    pub requires: Vec<crate::board::Capability>,
}

/// ESP-AT certificate storage, as scenario files name it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AtStorage {
    #[default]
    PkiPartitions,
    MfgNvs,
}

impl AtStorage {
    /// As scenario and inventory files spell it.
    pub fn name(self) -> &'static str {
        match self {
            AtStorage::PkiPartitions => "pki-partitions",
            AtStorage::MfgNvs => "mfg-nvs",
        }
    }
}

impl From<AtStorage> for esp_formats::partition::AtStorage {
    fn from(storage: AtStorage) -> Self {
        match storage {
            AtStorage::PkiPartitions => Self::PkiPartitions,
            AtStorage::MfgNvs => Self::MfgNvs,
        }
    }
}

/// Services and certificates prepared before the steps run.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Setup {
    /// Server certificate profile (a `sparring certs` profile name).
    pub server_profile: Option<String>,
    /// Device (client) certificate profile.
    pub device_profile: Option<String>,
    /// SNTP offset in seconds from the host clock; `None` with `sntp = false` means no answer.
    pub sntp: bool,
    pub sntp_offset_secs: i64,
    /// The SNTP server leaves this many requests unanswered before it answers (late time).
    pub sntp_ignore_requests: u32,
    /// OTA image variant served (`valid`, `corrupt-byte`, `wrong-chip`, ...).
    pub ota_variant: Option<String>,
    /// Heap reserved on the board before the steps (low-heap scenarios).
    pub reserve_heap: Option<u32>,
    /// Whether the broker requires a client certificate (mutual TLS).
    pub client_auth: bool,
    /// Broker faults and policy: `refuse-connects`, `withhold-connack`,
    /// `disconnect-after-ms`, `withhold`/`delay` (`["puback", "suback", "pingresp",
    /// "connack"]`), `delay-ms`, `client-id-must-match-cn`.
    pub broker: sparring_services::BrokerBehaviour,
    /// The broker's TLS: `versions` (`["1.2"]`, `["1.3"]`), `cipher-suites` (rustls names),
    /// `alpn` (`["x-amzn-mqtt-ca"]`).
    pub tls: sparring_services::TlsSettings,
    /// Defect switches this scenario turns on itself (`crash-on-large-record`, ...), on top of
    /// the run's `--defect`s.
    pub defects: Vec<Spanned<String>>,
    /// The scenario provokes a crash: a panic and the reboot after it are expected, and their
    /// absence is a failure.
    pub expect_crash: bool,
    /// A warning for the report when the board completes a TLS handshake with the broker
    /// anyway: accepting is what the real stack does, yet a reviewer should see it
    /// (`"device does not check revocation"` for a revoked server certificate).
    pub warn_if_connected: Option<String>,
}

impl Default for Setup {
    /// A scenario without `[setup]`, or without one of its keys, gets these: the lab's valid
    /// certificates, SNTP answering, mutual TLS, a well-behaved broker.
    fn default() -> Setup {
        Setup {
            server_profile: None,
            device_profile: None,
            sntp: true,
            sntp_offset_secs: 0,
            sntp_ignore_requests: 0,
            ota_variant: None,
            reserve_heap: None,
            client_auth: true,
            broker: Default::default(),
            tls: Default::default(),
            defects: Vec::new(),
            expect_crash: false,
            warn_if_connected: None,
        }
    }
}

/// A board port, by role rather than by device path, so scenarios run unchanged on any backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Port {
    /// UART0: ROM banner and ESP-IDF logs.
    Log,
    /// UART1: AT commands.
    At,
}

/// One step. Written as a table with exactly one key naming the kind, e.g.
/// `[[steps]]` / `expect = { port = "at", regex = "^OK$", within_ms = 2000 }`.
/// (Externally tagged on purpose: `toml::Spanned` inside survives only that representation.)
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum Step {
    Flash(FlashStep),
    Provision(ProvisionStep),
    Reset(ResetStep),
    Send(SendStep),
    Expect(ExpectStep),
    ExpectNot(ExpectNotStep),
    WaitEvent(WaitEventStep),
    Assert(AssertStep),
    Snapshot(SnapshotStep),
    /// Steps from a step library file (see [`crate::library`]), with variables.
    Include(IncludeStep),
    /// Change the board's free heap (virtual boards).
    Heap(HeapStep),
    /// The broker publishes a message to the device.
    Publish(PublishStep),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncludeStep {
    /// Name in the step library, e.g. `esp-at/join-wifi.toml`.
    pub file: Spanned<String>,
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeapStep {
    /// Bytes taken away from the firmware from now on (0 gives them back).
    pub reserve: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishStep {
    pub topic: String,
    /// The payload; or `size` bytes of filler.
    pub payload: Option<String>,
    pub size: Option<usize>,
    #[serde(default)]
    pub qos: u8,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlashStep {
    /// Image set to flash (`esp-at` layout) with the app version to build. Both describe the
    /// generated image a virtual board gets; a board with `firmware_files` gets those files,
    /// one without keeps its firmware (see [`crate::board::FlashContent`]).
    pub layout: String,
    pub version: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvisionStep {
    /// How the certificates and key are encoded (`pem`, `der`); they are wrapped in AtPKI bins
    /// for `AT+SYSFLASH` or stored as NVS blobs with `AT+SYSMFG`, as the board's storage says.
    #[serde(default)]
    pub encoding: Encoding,
    /// Which client's credentials: `mqtt` (`mqtt_ca`/`mqtt_cert`/`mqtt_key`) or `client` (SSL
    /// sockets: `client_ca`/`client_cert`/`client_key`).
    #[serde(default)]
    pub set: CredentialSet,
    /// PEM items with CRLF line endings (as Windows tools write them) instead of LF.
    #[serde(default)]
    pub crlf: bool,
    /// The CA item as a PEM bundle of these lab roots, in this order (`root`,
    /// `unrelated-root`): a root rotation ships the old and the new root together.
    /// Default: the lab's root alone.
    #[serde(default)]
    pub ca: Vec<CaName>,
}

/// A root of the lab's PKI, by its name in the manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CaName {
    Root,
    UnrelatedRoot,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Encoding {
    #[default]
    Pem,
    Der,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CredentialSet {
    #[default]
    Mqtt,
    Client,
}

impl CredentialSet {
    /// The partition / namespace prefix ESP-AT uses.
    pub fn prefix(self) -> &'static str {
        match self {
            CredentialSet::Mqtt => "mqtt",
            CredentialSet::Client => "client",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResetStep {
    /// Reset into download mode instead of a normal boot.
    #[serde(default)]
    pub download: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendStep {
    pub port: Port,
    /// A line (CR LF appended), raw bytes given as hex, or text sent as is (data after a
    /// `>` prompt).
    pub line: Option<String>,
    pub hex: Option<Spanned<String>>,
    pub data: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectStep {
    pub port: Port,
    pub regex: Spanned<String>,
    /// The longest the harness waits, in real time (the step ends at the first match).
    pub within_ms: u64,
    /// Where the search starts on this port (default: after the previous match).
    #[serde(default)]
    pub after: SearchFrom,
}

/// Where an `expect` searches a port from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SearchFrom {
    /// After the line the previous `expect` on this port matched, and not before the last
    /// `send` or `reset`: lines must come in the order the steps name them.
    #[default]
    Previous,
    /// Anywhere since the last `send` or `reset` on this port, for lines whose order the
    /// firmware does not fix.
    Send,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectNotStep {
    pub port: Port,
    pub regex: Spanned<String>,
    pub window_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitEventStep {
    /// Service event kind, one of [`EVENT_KINDS`].
    pub event: String,
    /// Optional regex the event's one-line description must match.
    pub matching: Option<Spanned<String>>,
    pub within_ms: u64,
    /// Which events count (default: since the last step that acted on the board or the
    /// broker, and after the event the previous `wait-event` matched).
    #[serde(default)]
    pub since: EventsSince,
}

/// Which events a `wait-event` looks at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventsSince {
    /// Those since the last action (`send`, `reset`, `publish`, `flash`, `provision`, `heap`)
    /// began, after the one the previous `wait-event` matched: events must come in order,
    /// and an event from an earlier exchange never satisfies a later wait.
    #[default]
    Previous,
    /// Every event since the scenario began.
    Start,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssertStep {
    /// Observed fact (`free-heap`, `heap-low-water`, `reconnects`, `backoff-ms`).
    pub fact: String,
    pub at_least: Option<i64>,
    pub at_most: Option<i64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotStep {
    pub port: Port,
    pub name: String,
}

/// A scenario loaded from a file, with where it came from.
#[derive(Debug, Clone)]
pub struct LoadedScenario {
    pub path: PathBuf,
    pub scenario: Scenario,
}

/// An error in a TOML file sparring reads (scenario, step library, board inventory), located by
/// line and column (both 1-based).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
}

/// 1-based line and column of a byte offset in `text` (column counted in characters).
pub(crate) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, column)
}

pub(crate) fn invalid(
    path: &Path,
    text: &str,
    offset: usize,
    message: impl fmt::Display,
) -> LoadError {
    let (line, column) = line_column(text, offset);
    LoadError::Invalid {
        path: path.to_owned(),
        line,
        column,
        message: message.to_string(),
    }
}

/// Parses and validates one scenario from `text`; `path` only names it in errors.
pub fn parse(path: &Path, text: &str) -> Result<Scenario, LoadError> {
    let scenario: Scenario = toml::from_str(text).map_err(|e| {
        let offset = e.span().map_or(0, |s| s.start);
        invalid(path, text, offset, e.message().trim_end())
    })?;
    validate(path, text, &scenario)?;
    Ok(scenario)
}

/// Compiles a regex as the run will, `${variables}` replaced by a neutral stand-in (they are
/// resolved at run time).
fn check_regex(
    path: &Path,
    text: &str,
    regex: &Spanned<String>,
) -> Result<regex::Regex, LoadError> {
    let pattern = regex::Regex::new(r"\$\{[^}]*\}")
        .map(|vars| vars.replace_all(regex.get_ref(), "VAR").into_owned())
        .unwrap_or_else(|_| regex.get_ref().clone());
    regex::Regex::new(&pattern).map_err(|e| {
        invalid(
            path,
            text,
            regex.span().start,
            format_args!("expected a valid regular expression: {e}"),
        )
    })
}

/// A regex a step waits for must need some text: one that matches an empty line and a line
/// of one control character (`''`, `.*`, `x?`) matches every line, so the step would pass
/// whatever happened.
fn check_selective_regex(
    path: &Path,
    text: &str,
    regex: &Spanned<String>,
) -> Result<(), LoadError> {
    let compiled = check_regex(path, text, regex)?;
    if compiled.is_match("") && compiled.is_match("\u{1}") {
        return Err(invalid(
            path,
            text,
            regex.span().start,
            "expected a regular expression that needs some text (this one matches any line)",
        ));
    }
    Ok(())
}

/// Whether `id` can name a scenario: letters, digits, `-`, `_` and `.`, at least one.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

fn validate(path: &Path, text: &str, scenario: &Scenario) -> Result<(), LoadError> {
    let id = &scenario.id;
    if !is_valid_id(id.get_ref()) {
        return Err(invalid(
            path,
            text,
            id.span().start,
            "expected an id of letters, digits, '-', '_' or '.'",
        ));
    }
    for defect in &scenario.setup.defects {
        defect
            .get_ref()
            .parse::<sparring_vboard::personality::Defect>()
            .map_err(|e| invalid(path, text, defect.span().start, e))?;
    }
    let requires = |capability: crate::board::Capability, offset: usize, what: &str| {
        if scenario.board.requires.contains(&capability) {
            Ok(())
        } else {
            Err(invalid(
                path,
                text,
                offset,
                format!(
                    "{what} needs `requires = [\"{capability}\"]` in [board], so boards without it skip the scenario"
                ),
            ))
        }
    };
    use crate::board::Capability;
    if let Some(defect) = scenario.setup.defects.first() {
        requires(Capability::Defects, defect.span().start, "a defect switch")?;
    }
    if scenario.setup.reserve_heap.is_some() {
        requires(Capability::HeapControl, 0, "setup.reserve_heap")?;
    }
    for step in &scenario.steps {
        if let Step::Heap(_) = step.get_ref() {
            requires(Capability::HeapControl, step.span().start, "a heap step")?;
        }
    }
    validate_steps(path, text, &scenario.steps)
}

/// The event kinds a `wait-event` step can wait for: what [`crate::observe::describe`] calls
/// the service events.
pub const EVENT_KINDS: &[&str] = &[
    "tls-established",
    "tls-alert",
    "tls-timeout",
    "device-rejected",
    "device-connected",
    "published",
    "subscribed",
    "mqtt",
    "sntp",
    "ota-request",
    "ota-completed",
];

/// Checks a list of steps, from a scenario or from a library file: at least one, each with
/// what it needs and nothing that lets it pass whatever the board does.
pub(crate) fn validate_steps(
    path: &Path,
    text: &str,
    steps: &[Spanned<Step>],
) -> Result<(), LoadError> {
    if steps.is_empty() {
        return Err(invalid(
            path,
            text,
            steps_value_offset(text),
            "expected at least one step (a file without steps passes without testing anything)",
        ));
    }
    for step in steps {
        let at_step = |message: &str| invalid(path, text, step.span().start, message);
        match step.get_ref() {
            Step::Publish(p) if p.payload.is_some() == p.size.is_some() => {
                return Err(at_step(
                    "expected a publish step with exactly one of `payload` or `size`",
                ));
            }
            Step::Expect(s) => check_selective_regex(path, text, &s.regex)?,
            Step::ExpectNot(s) => check_regex(path, text, &s.regex).map(drop)?,
            Step::WaitEvent(w) => {
                if !EVENT_KINDS.contains(&w.event.as_str()) {
                    return Err(at_step(&format!(
                        "expected a wait-event `event` of {}, not {:?}",
                        EVENT_KINDS.join(", "),
                        w.event
                    )));
                }
                match &w.matching {
                    Some(matching) => check_selective_regex(path, text, matching)?,
                    // The catch-all kind: without a regex, any packet either way (the
                    // broker's own CONNACK included) would do.
                    None if w.event == "mqtt" => {
                        return Err(at_step(
                            "expected a `matching` regex for event \"mqtt\" (without one, any MQTT packet matches)",
                        ));
                    }
                    None => {}
                }
            }
            Step::Assert(a) if a.at_least.is_none() && a.at_most.is_none() => {
                return Err(at_step(&format!(
                    "expected `at_least` or `at_most` for assert {:?} (without a bound it always passes)",
                    a.fact
                )));
            }
            Step::Send(s) => match (&s.line, &s.hex, &s.data) {
                (Some(_), None, None) | (None, None, Some(_)) => {}
                (None, Some(hex), None) => {
                    hex::decode(hex.get_ref()).map_err(|e| {
                        invalid(
                            path,
                            text,
                            hex.span().start,
                            format_args!("expected hex bytes: {e}"),
                        )
                    })?;
                }
                _ => {
                    return Err(at_step(
                        "expected a send step with exactly one of `line`, `hex` or `data`",
                    ));
                }
            },
            _ => {}
        }
    }
    Ok(())
}

/// Where the `steps` value starts in `text` (0 when it cannot be found): an empty list has no
/// step span to point at.
fn steps_value_offset(text: &str) -> usize {
    #[derive(Deserialize)]
    struct StepsOnly {
        steps: Spanned<toml::Value>,
    }
    toml::from_str::<StepsOnly>(text).map_or(0, |file| file.steps.span().start)
}

/// Loads one file, with the library files it includes: a broken include stops `sparring run`
/// before anything runs, as a broken scenario does.
pub fn load_file(path: &Path) -> Result<LoadedScenario, LoadError> {
    load_text(path, &read(path)?)
}

fn read(path: &Path) -> Result<String, LoadError> {
    std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.to_owned(),
        source,
    })
}

/// The scenario in `text` (read from `path`), its includes checked as the run expands them.
fn load_text(path: &Path, text: &str) -> Result<LoadedScenario, LoadError> {
    let loaded = LoadedScenario {
        path: path.to_owned(),
        scenario: parse(path, text)?,
    };
    crate::plan::expand(&loaded)?;
    Ok(loaded)
}

/// Loads a file, or every `*.toml` directly inside a directory (sorted; `lib/` and
/// `snapshots/` are not scenarios). Returns every error, not just the first.
pub fn load_path(path: &Path) -> (Vec<LoadedScenario>, Vec<LoadError>) {
    let files = if path.is_dir() {
        match std::fs::read_dir(path) {
            Ok(entries) => {
                let mut files: Vec<PathBuf> = entries
                    .filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "toml"))
                    .collect();
                files.sort();
                files
            }
            Err(source) => {
                return (
                    Vec::new(),
                    vec![LoadError::Read {
                        path: path.to_owned(),
                        source,
                    }],
                );
            }
        }
    } else {
        vec![path.to_owned()]
    };
    let mut loaded = Vec::new();
    let mut errors = Vec::new();
    for file in files {
        let expanded = read(&file)
            .and_then(|text| load_text(&file, &text).and_then(|s| expand_matrix(&file, &text, s)));
        match expanded {
            Ok(expanded) => loaded.extend(expanded),
            Err(e) => errors.push(e),
        }
    }
    (loaded, errors)
}

/// At most this many combinations per file: a typo in a matrix must not start a week's run.
const MAX_MATRIX_CELLS: usize = 256;

/// One scenario per combination of the file's `[matrix]` values (the scenario itself when it
/// has none), each parsed from the file with `${matrix.NAME}` replaced.
pub fn expand_matrix(
    path: &Path,
    text: &str,
    loaded: LoadedScenario,
) -> Result<Vec<LoadedScenario>, LoadError> {
    let matrix = &loaded.scenario.matrix;
    if matrix.is_empty() {
        return Ok(vec![loaded]);
    }
    let at = |needle: &str| text.find(needle).unwrap_or(0);
    for (name, values) in matrix {
        if values.is_empty() {
            return Err(invalid(
                path,
                text,
                at(name),
                format!("matrix.{name}: expected at least one value"),
            ));
        }
    }
    // Every `${matrix.X}` must name a matrix value.
    let mut rest = text;
    while let Some(start) = rest.find("${matrix.") {
        let name_and_rest = &rest[start + "${matrix.".len()..];
        let name = name_and_rest.split('}').next().unwrap_or_default();
        if !matrix.contains_key(name) {
            let offset = text.len() - rest.len() + start;
            let known: Vec<&str> = matrix.keys().map(String::as_str).collect();
            return Err(invalid(
                path,
                text,
                offset,
                format!(
                    "${{matrix.{name}}}: no such matrix value (known: {})",
                    known.join(", ")
                ),
            ));
        }
        rest = name_and_rest;
    }
    let mut combinations: Vec<Vec<(&str, &str)>> = vec![Vec::new()];
    for (name, values) in matrix {
        combinations = combinations
            .iter()
            .flat_map(|combo| {
                values.iter().map(move |value| {
                    let mut next = combo.clone();
                    next.push((name.as_str(), value.as_str()));
                    next
                })
            })
            .collect();
        if combinations.len() > MAX_MATRIX_CELLS {
            return Err(invalid(
                path,
                text,
                at("[matrix]"),
                format!("[matrix] expands to more than {MAX_MATRIX_CELLS} scenarios"),
            ));
        }
    }
    let base = loaded.scenario.id.get_ref().clone();
    combinations
        .into_iter()
        .map(|combo| {
            let mut expanded = text.to_owned();
            for (name, value) in &combo {
                expanded = expanded.replace(&format!("${{matrix.{name}}}"), value);
            }
            let mut scenario = parse(path, &expanded)?;
            let label: Vec<String> = combo.iter().map(|(n, v)| format!("{n}={v}")).collect();
            let span = scenario.id.span();
            scenario.id = Spanned::new(span, format!("{base}[{}]", label.join(",")));
            Ok(LoadedScenario {
                path: path.to_owned(),
                scenario,
            })
        })
        .collect()
}

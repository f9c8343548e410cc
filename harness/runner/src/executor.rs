//! The executor: runs scenarios on boards against per-scenario services and turns everything
//! it sees into [`RunEvent`]s. It judges (verdict, reason, evidence, facts) but renders
//! nothing; reporters do that from the events.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use esp_formats::atpki::{self, ItemType};
use esp_formats::flash_set;
use esp_formats::image::AppSpec;
use regex::Regex;
use sha2::{Digest, Sha256};
use sparring_pki::PkiDir;
use sparring_services::broker::{BrokerAddrs, Observer};
use sparring_services::events::{Direction, TlsOutcome};
use sparring_services::{Event, EventKind};
use sparring_vboard::personality::{AccessPoint, Defect, NetworkConfig};

use crate::backend::{BackendError, BoardBackend, LabSetup, VirtualBoard};
use crate::crash::{self, Incident};
use crate::environment::{self, Environment};
use crate::events::{BoardIdentity, Facts, RunEvent, ScenarioResult, Verdict};
use crate::observe::{Observations, Observed, PortReader, Sink};
use crate::plan::{self, PlannedStep};
use crate::scenario::{
    AtStorage, CredentialSet, Encoding, LoadedScenario, Port, ProvisionStep, Step,
};
use crate::snapshot::{self, SnapshotOutcome};

/// The firmware scenarios flash unless they say otherwise.
pub const FIRMWARE_PROJECT: &str = "esp-at";

/// How to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// `virtual:esp32c3`, ...
    pub boards: Vec<String>,
    /// Where logs and the board's files go.
    pub report_dir: PathBuf,
    pub snapshot_dir: PathBuf,
    pub update_snapshots: bool,
    /// Defect switches for the whole run (proving the suite catches bad firmware).
    pub defects: Vec<Defect>,
    /// Set by Ctrl-C: finish the current step, skip the rest, still report.
    pub interrupted: Arc<AtomicBool>,
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
    Board(#[from] BackendError),
    #[error("opening {path}: {source}")]
    Port {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A board with its port readers and writers.
struct Bench {
    board: Box<dyn BoardBackend>,
    sink: Sink,
    readers: BTreeMap<&'static str, PortReader>,
    writers: BTreeMap<&'static str, serialport::TTYPort>,
    identity: BoardIdentity,
}

impl Bench {
    /// Opens (or reopens) a port: reader into the sink, writer kept.
    fn attach(&mut self, port: Port) -> Result<(), std::io::Error> {
        let path = self.board.port(port).to_owned();
        let (reader, writer) = PortReader::start(&path, port, self.sink.clone())?;
        self.readers.insert(port_name(port), reader);
        self.writers.insert(port_name(port), writer);
        Ok(())
    }

    /// Closes a port so a flasher can have it (ports open exclusively).
    fn detach(&mut self, port: Port) {
        self.readers.remove(port_name(port));
        self.writers.remove(port_name(port));
    }
}

fn port_name(port: Port) -> &'static str {
    match port {
        Port::Log => "log",
        Port::At => "at",
    }
}

fn open_bench(spec: &str, dir: &Path, firmware_version: &str) -> Result<Bench, RunError> {
    let board = VirtualBoard::start(spec, dir)?;
    let sink: Sink = Arc::new(Mutex::new(Observations::new()));
    let app = esp_formats::image::build_app(&AppSpec::new(
        board.chip(),
        FIRMWARE_PROJECT,
        firmware_version,
    ))
    .unwrap_or_default();
    let identity = BoardIdentity {
        spec: spec.to_owned(),
        chip: board.chip().name().to_owned(),
        mac: board.mac().to_owned(),
        flash_size: format!("{} MB", board.flash_size() >> 20),
        firmware_project: FIRMWARE_PROJECT.to_owned(),
        firmware_version: firmware_version.to_owned(),
        firmware_sha256: hex::encode(Sha256::digest(&app)),
    };
    let mut bench = Bench {
        board: Box::new(board),
        sink,
        readers: BTreeMap::new(),
        writers: BTreeMap::new(),
        identity,
    };
    for port in [Port::Log, Port::At] {
        bench.attach(port).map_err(|source| RunError::Port {
            path: bench.board.port(port).to_owned(),
            source,
        })?;
    }
    Ok(bench)
}

/// The version the suite's flash steps install (for the report's board identity).
fn firmware_version(scenarios: &[LoadedScenario]) -> String {
    scenarios
        .iter()
        .flat_map(|s| &s.scenario.steps)
        .find_map(|s| match s.get_ref() {
            Step::Flash(f) => Some(f.version.clone()),
            _ => None,
        })
        .unwrap_or_else(|| "2.4.0.0".to_owned())
}

/// Runs every scenario on every board; returns the results (also emitted as events).
pub fn run(
    scenarios: &[LoadedScenario],
    options: &RunOptions,
    emit: &mut dyn FnMut(&RunEvent),
) -> Result<Vec<ScenarioResult>, RunError> {
    let started = Instant::now();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(RunError::Runtime)?;
    let pki = sparring_pki::TempPki::generate(sparring_pki::Options::default())?;
    let (broker, observer) =
        sparring_services::broker::start_rumqttd().map_err(|e| RunError::Broker(e.to_string()))?;
    let observer = Mutex::new(observer);
    runtime
        .block_on(async {
            sparring_services::wait_for_listener(broker.v4).await?;
            sparring_services::wait_for_listener(broker.v5).await
        })
        .map_err(|e| RunError::Broker(e.to_string()))?;
    let version = firmware_version(scenarios);
    let mut benches = Vec::new();
    for (index, spec) in options.boards.iter().enumerate() {
        let dir = options.report_dir.join("boards").join(format!("{index}"));
        benches.push(open_bench(spec, &dir, &version)?);
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
    let mut results = Vec::new();
    for bench in &mut benches {
        for loaded in scenarios {
            let result = if options.interrupted.load(Ordering::SeqCst) {
                skipped(
                    bench,
                    loaded,
                    "run interrupted (Ctrl-C) before this scenario",
                )
            } else if !chip_fits(bench, loaded) {
                let chips = loaded.scenario.board.chips.join(", ");
                skipped(bench, loaded, &format!("needs a {chips} board"))
            } else {
                emit(&RunEvent::ScenarioStarted {
                    board: bench.identity.spec.clone(),
                    id: loaded.scenario.id.get_ref().clone(),
                    title: loaded.scenario.title.clone(),
                });
                let context = Context {
                    runtime: &runtime,
                    pki: &pki.pki,
                    broker,
                    observer: &observer,
                    options,
                };
                run_scenario(&context, bench, loaded, emit)
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

fn chip_fits(bench: &Bench, loaded: &LoadedScenario) -> bool {
    let chips = &loaded.scenario.board.chips;
    chips.is_empty() || chips.iter().any(|c| c == bench.board.chip().name())
}

fn blank_result(bench: &Bench, loaded: &LoadedScenario) -> ScenarioResult {
    let s = &loaded.scenario;
    ScenarioResult {
        board: bench.identity.spec.clone(),
        id: s.id.get_ref().clone(),
        title: s.title.clone(),
        file: loaded.path.display().to_string(),
        tags: s.tags.clone(),
        references: s.references.clone(),
        verdict: Verdict::Pass,
        reason: String::new(),
        evidence: Vec::new(),
        warnings: Vec::new(),
        facts: Facts::default(),
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

struct Context<'a> {
    runtime: &'a tokio::runtime::Runtime,
    pki: &'a PkiDir,
    broker: BrokerAddrs,
    /// QoS 0 publishes go in through rumqttd's local link.
    observer: &'a Mutex<Observer>,
    options: &'a RunOptions,
}

/// Why a step did not pass.
enum StepFailure {
    /// The firmware did not do what the scenario expects.
    Fail {
        reason: String,
        evidence: Vec<String>,
    },
    /// The harness or the board broke.
    Error(String),
}

fn fail(reason: impl Into<String>, evidence: Vec<String>) -> StepFailure {
    StepFailure::Fail {
        reason: reason.into(),
        evidence,
    }
}

/// One scenario in progress.
struct ScenarioRun<'a> {
    context: &'a Context<'a>,
    bench: &'a mut Bench,
    loaded: &'a LoadedScenario,
    observations: Arc<Observations>,
    env: Environment,
    /// Expectations on a port search from the last send to it: everything the board
    /// answered stays visible to every later expectation.
    cursor: BTreeMap<&'static str, usize>,
    allowed_resets: usize,
    waited: Duration,
}

fn run_scenario(
    context: &Context<'_>,
    bench: &mut Bench,
    loaded: &LoadedScenario,
    emit: &mut dyn FnMut(&RunEvent),
) -> ScenarioResult {
    let started = Instant::now();
    let mut result = blank_result(bench, loaded);
    let observations = Observations::new();
    *bench.sink.lock().unwrap_or_else(|p| p.into_inner()) = observations.clone();
    let setup = &loaded.scenario.setup;
    let env = match Environment::start(
        context.runtime,
        bench.board.chip(),
        context.pki,
        context.broker,
        setup,
        observations.clone(),
    ) {
        Ok(env) => env,
        Err(e) => {
            result.verdict = Verdict::Error;
            result.reason = format!("starting the services: {e}");
            return result;
        }
    };
    let mut defects = context.options.defects.clone();
    defects.extend(
        setup
            .defects
            .iter()
            .filter_map(|d| d.get_ref().parse::<Defect>().ok()),
    );
    let lab = LabSetup {
        network: NetworkConfig {
            access_points: vec![AccessPoint {
                ssid: environment::WIFI_SSID.to_owned(),
                password: environment::WIFI_PASSWORD.to_owned(),
                rssi: -45,
                fault: None,
            }],
            hosts: [
                environment::BROKER_HOST,
                environment::SNTP_HOST,
                environment::OTA_HOST,
            ]
            .into_iter()
            .map(|h| (h.to_owned(), std::net::IpAddr::from([127, 0, 0, 1])))
            .collect(),
            ports: BTreeMap::from([(123, env.sntp.port())]),
        },
        defects,
        reserve_heap: setup.reserve_heap.unwrap_or(0),
    };
    if let Err(e) = bench.board.configure(&lab) {
        result.verdict = Verdict::Error;
        result.reason = e.to_string();
        return result;
    }
    let mut run = ScenarioRun {
        context,
        bench,
        loaded,
        observations,
        env,
        cursor: BTreeMap::new(),
        allowed_resets: 0,
        waited: Duration::ZERO,
    };
    let outcome = match plan::expand(loaded) {
        Err(e) => Err(StepFailure::Error(e.to_string())),
        Ok(steps) => run.steps(&steps, emit),
    };
    match outcome {
        Ok(()) => {}
        Err(StepFailure::Fail { reason, evidence }) => {
            result.verdict = Verdict::Fail;
            result.reason = reason;
            result.evidence = evidence;
        }
        Err(StepFailure::Error(reason)) => {
            result.verdict = Verdict::Error;
            result.reason = reason;
        }
    }
    run.judge_incidents(&mut result);
    run.judge_warnings(&mut result);
    result.facts = run.facts();
    result.logs = run.write_logs();
    result.waited_ms = run.waited.as_millis() as u64;
    result.elapsed_ms = started.elapsed().as_millis() as u64;
    result
}

impl ScenarioRun<'_> {
    fn id(&self) -> &str {
        self.loaded.scenario.id.get_ref()
    }

    fn steps(
        &mut self,
        steps: &[PlannedStep],
        emit: &mut dyn FnMut(&RunEvent),
    ) -> Result<(), StepFailure> {
        for (index, planned) in steps.iter().enumerate() {
            if self.context.options.interrupted.load(Ordering::SeqCst) {
                return Err(StepFailure::Error("interrupted (Ctrl-C)".into()));
            }
            let started = Instant::now();
            let result = self.step(planned);
            emit(&RunEvent::StepFinished {
                board: self.bench.identity.spec.clone(),
                scenario: self.id().to_owned(),
                index,
                step: step_name(&planned.step).to_owned(),
                ok: result.is_ok(),
                elapsed_us: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            });
            result.map_err(|failure| match failure {
                StepFailure::Fail { reason, evidence } => StepFailure::Fail {
                    reason: format!(
                        "{} ({}): {reason}",
                        step_name(&planned.step),
                        planned.origin
                    ),
                    evidence,
                },
                StepFailure::Error(reason) => StepFailure::Error(format!(
                    "{} ({}): {reason}",
                    step_name(&planned.step),
                    planned.origin
                )),
            })?;
        }
        Ok(())
    }

    /// The environment's variables, and the include's (which may refer to the environment's).
    fn vars(&self, planned: &PlannedStep) -> BTreeMap<String, String> {
        let mut vars = self.env.vars.clone();
        for (name, value) in &planned.vars {
            let value = plan::substitute(value, &self.env.vars).unwrap_or_else(|_| value.clone());
            vars.insert(name.clone(), value);
        }
        vars
    }

    fn text(&self, planned: &PlannedStep, template: &str) -> Result<String, StepFailure> {
        plan::substitute(template, &self.vars(planned)).map_err(StepFailure::Error)
    }

    fn regex(&self, planned: &PlannedStep, template: &str) -> Result<Regex, StepFailure> {
        let pattern = self.text(planned, template)?;
        Regex::new(&pattern).map_err(|e| StepFailure::Error(format!("regex {pattern:?}: {e}")))
    }

    fn step(&mut self, planned: &PlannedStep) -> Result<(), StepFailure> {
        let board_error = |e: BackendError| StepFailure::Error(e.to_string());
        match &planned.step {
            Step::Flash(f) => {
                let chip = self.bench.board.chip();
                let version = self.text(planned, &f.version)?;
                let app = AppSpec::new(chip, FIRMWARE_PROJECT, &version);
                let storage = self.loaded.scenario.board.at_storage.into();
                let files = flash_set::esp_at(chip, &app, storage)
                    .map_err(|e| StepFailure::Error(e.to_string()))?;
                // The download-mode banner and the boot after flashing.
                self.allowed_resets += 2;
                // The flasher owns the log port while it works; the loader's traffic is not log.
                self.bench.detach(Port::Log);
                let flashed = self.bench.board.flash(&files);
                self.bench
                    .attach(Port::Log)
                    .map_err(|e| StepFailure::Error(format!("reopening the log port: {e}")))?;
                flashed.map_err(board_error)?;
                self.bench.board.reset().map_err(board_error)
            }
            Step::Reset(r) => {
                self.allowed_resets += 1;
                if r.download {
                    return Err(StepFailure::Error(
                        "reset into download mode is done by flash steps".into(),
                    ));
                }
                self.mark(Port::Log);
                self.mark(Port::At);
                self.bench.board.reset().map_err(board_error)
            }
            Step::Send(s) => {
                let bytes = match (&s.line, &s.hex) {
                    (None, None) => self
                        .text(planned, s.data.as_deref().unwrap_or(""))?
                        .into_bytes(),
                    (Some(line), _) => {
                        let line = self.text(planned, line)?;
                        if Regex::new(r"^AT\+(RST|RESTORE|USEROTA)")
                            .is_ok_and(|r| r.is_match(&line))
                        {
                            self.allowed_resets += 1;
                        }
                        format!("{line}\r\n").into_bytes()
                    }
                    (None, Some(hex)) => {
                        hex::decode(hex.get_ref()).map_err(|e| StepFailure::Error(e.to_string()))?
                    }
                };
                self.send(s.port, &bytes)
            }
            Step::Expect(e) => {
                let regex = self.regex(planned, e.regex.get_ref())?;
                self.expect(e.port, &regex, Duration::from_millis(e.within_ms))
            }
            Step::ExpectNot(e) => {
                let regex = self.regex(planned, e.regex.get_ref())?;
                let from = self.from(e.port);
                let deadline = Instant::now() + Duration::from_millis(e.window_ms);
                let waited = Instant::now();
                let seen = self
                    .observations
                    .wait_for(deadline, |o| find_line(o, e.port, from, &regex));
                self.waited += waited.elapsed();
                match seen {
                    None => Ok(()),
                    Some(line) => Err(fail(
                        format!(
                            "/{}/ appeared on the {} port within {} ms",
                            regex.as_str(),
                            port_name(e.port),
                            e.window_ms
                        ),
                        vec![line],
                    )),
                }
            }
            Step::WaitEvent(w) => {
                let matching = match &w.matching {
                    Some(m) => Some(self.regex(planned, m.get_ref())?),
                    None => None,
                };
                let deadline = Instant::now() + Duration::from_millis(w.within_ms);
                let waited = Instant::now();
                let found = self.observations.wait_for(deadline, |o| {
                    o.events.iter().map(describe).find(|(kind, line)| {
                        kind == &w.event && matching.as_ref().is_none_or(|m| m.is_match(line))
                    })
                });
                self.waited += waited.elapsed();
                match found {
                    Some(_) => Ok(()),
                    None => {
                        let seen: Vec<String> = self
                            .observations
                            .lock()
                            .events
                            .iter()
                            .map(|e| {
                                let (kind, line) = describe(e);
                                format!("{kind}: {line}")
                            })
                            .collect();
                        let what = match &matching {
                            Some(m) => format!("{} matching /{}/", w.event, m.as_str()),
                            None => w.event.clone(),
                        };
                        Err(fail(
                            format!("no {what} event within {} ms", w.within_ms),
                            seen,
                        ))
                    }
                }
            }
            Step::Assert(a) => {
                let value = self.fact(&a.fact)?;
                let low = a.at_least.is_some_and(|min| value < min);
                let high = a.at_most.is_some_and(|max| value > max);
                if low || high {
                    let bound = match (a.at_least, a.at_most) {
                        (Some(min), Some(max)) => format!("between {min} and {max}"),
                        (Some(min), None) => format!("at least {min}"),
                        (None, Some(max)) => format!("at most {max}"),
                        (None, None) => String::new(),
                    };
                    return Err(fail(
                        format!("{} is {value}, expected {bound}", a.fact),
                        Vec::new(),
                    ));
                }
                Ok(())
            }
            Step::Snapshot(s) => self.snapshot(s.port, &s.name),
            Step::Provision(p) => self.provision(p),
            Step::Heap(h) => self
                .bench
                .board
                .reserve_heap(h.reserve)
                .map_err(board_error),
            Step::Publish(p) => {
                let topic = self.text(planned, &p.topic)?;
                let payload = match (&p.payload, p.size) {
                    (Some(text), _) => self.text(planned, text)?.into_bytes(),
                    (None, Some(size)) => vec![b'x'; size],
                    (None, None) => Vec::new(),
                };
                if p.qos == 0 {
                    let mut observer = self
                        .context
                        .observer
                        .lock()
                        .map_err(|_| StepFailure::Error("observer link poisoned".into()))?;
                    return observer
                        .publish(&topic, payload)
                        .map_err(|e| StepFailure::Error(e.to_string()));
                }
                // rumqttd's local link carries QoS 0 only: QoS 1 goes over a socket, so the
                // broker's acknowledgement can be awaited.
                publish_acknowledged(self.env.broker_plain, &topic, payload)
                    .map_err(StepFailure::Error)
            }
            Step::Include(_) => Err(StepFailure::Error("include left after planning".into())),
        }
    }

    fn mark(&mut self, port: Port) {
        let end = self.observations.lock().port(port).lines().len();
        self.cursor.insert(port_name(port), end);
    }

    fn from(&self, port: Port) -> usize {
        self.cursor.get(port_name(port)).copied().unwrap_or(0)
    }

    fn send(&mut self, port: Port, bytes: &[u8]) -> Result<(), StepFailure> {
        self.mark(port);
        let writer = self
            .bench
            .writers
            .get_mut(port_name(port))
            .ok_or_else(|| StepFailure::Error("no writer for the port".into()))?;
        writer
            .write_all(bytes)
            .and_then(|()| writer.flush())
            .map_err(|e| {
                StepFailure::Error(format!("writing to the {} port: {e}", port_name(port)))
            })
    }

    fn expect(&mut self, port: Port, regex: &Regex, within: Duration) -> Result<(), StepFailure> {
        let from = self.from(port);
        let deadline = Instant::now() + within;
        let waited = Instant::now();
        let found = self
            .observations
            .wait_for(deadline, |o| find_line(o, port, from, regex));
        self.waited += waited.elapsed();
        if found.is_some() {
            return Ok(());
        }
        let observed = self.observations.lock();
        let lines = observed.port(port).lines();
        let tail: Vec<String> = lines[from.min(lines.len())..]
            .iter()
            .rev()
            .take(12)
            .rev()
            .map(|l| l.text.clone())
            .collect();
        Err(fail(
            format!(
                "expected /{}/ on the {} port within {} ms",
                regex.as_str(),
                port_name(port),
                within.as_millis()
            ),
            tail,
        ))
    }

    /// Writes the device profile's CA, certificate chain and key into the board as a
    /// provisioning station does: AtPKI bins into the `<set>_ca`/`_cert`/`_key` partitions
    /// with `AT+SYSFLASH` (erase, then write through the data prompt), or blobs into the
    /// `mfg_nvs` namespaces of the same names with `AT+SYSMFG`.
    fn provision(&mut self, step: &ProvisionStep) -> Result<(), StepFailure> {
        let pki = self.context.pki;
        let profile_name = self
            .env
            .vars
            .get("device.profile")
            .cloned()
            .unwrap_or_default();
        let error = |e: &dyn std::fmt::Display| StepFailure::Error(e.to_string());
        let profile = pki.profile(&profile_name).map_err(|e| error(&e))?;
        let root = &pki.manifest.authorities.root.cert;
        let (ca, cert, key) = match step.encoding {
            Encoding::Pem => (&root.pem, &profile.files.chain_pem, &profile.files.key.pem),
            Encoding::Der => (&root.der, &profile.files.cert.der, &profile.files.key.der),
        };
        let read = |p: &Path| std::fs::read(pki.path(p)).map_err(|e| error(&e));
        let items = [
            (ItemType::Ca, "ca", read(ca)?),
            (ItemType::Cert, "cert", read(cert)?),
            (ItemType::Key, "key", read(key)?),
        ];
        let ok = Regex::new(r"^(OK|ERROR)$").map_err(|e| error(&e))?;
        let prefix = step.set.prefix();
        for (kind, suffix, content) in items {
            let name = format!("{prefix}_{suffix}");
            match self.loaded.scenario.board.at_storage {
                AtStorage::PkiPartitions => {
                    let bin = atpki::build(&[(kind, content)]).map_err(|e| error(&e))?;
                    self.at_command(&format!("AT+SYSFLASH=0,\"{name}\""), &ok)?;
                    let write = format!("AT+SYSFLASH=1,\"{name}\",0,{}", bin.len());
                    self.write_through_prompt(&write, &bin, &ok)?;
                }
                AtStorage::MfgNvs => {
                    // ESP-AT's key names: `mqtt_ca` in `mqtt_ca`, `client_ca.0` in `client_ca`.
                    let key = match step.set {
                        CredentialSet::Mqtt => name.clone(),
                        CredentialSet::Client => format!("{name}.0"),
                    };
                    let write = format!("AT+SYSMFG=2,\"{name}\",\"{key}\",8,{}", content.len());
                    self.write_through_prompt(&write, &content, &ok)?;
                }
            }
        }
        Ok(())
    }

    /// Sends a command that answers with the `>` data prompt, then the data, and waits for
    /// its final result; `ERROR` fails the step.
    fn write_through_prompt(
        &mut self,
        command: &str,
        data: &[u8],
        result: &Regex,
    ) -> Result<(), StepFailure> {
        // Where to look for the prompt is fixed before sending: a fast board may answer before
        // this thread runs again.
        let raw_from = self.observations.lock().at.raw().len();
        self.send(Port::At, format!("{command}\r\n").as_bytes())?;
        let deadline = Instant::now() + Duration::from_secs(5);
        let prompt = self.observations.wait_for(deadline, |o| {
            o.at.raw()
                .get(raw_from..)
                .filter(|r| r.contains(&b'>'))
                .map(drop)
        });
        if prompt.is_none() {
            return Err(fail(format!("no `>` prompt after {command}"), Vec::new()));
        }
        // Sent like a line, so the result is looked for after the prompt: the `OK` before
        // `>` is not the answer to the data.
        self.send(Port::At, data)?;
        self.expect(Port::At, result, Duration::from_secs(5))?;
        self.check_no_error(command)
    }

    /// Sends a command and waits for its final result line; `ERROR` fails the step.
    fn at_command(&mut self, line: &str, result: &Regex) -> Result<(), StepFailure> {
        self.send(Port::At, format!("{line}\r\n").as_bytes())?;
        self.expect(Port::At, result, Duration::from_secs(5))?;
        self.check_no_error(line)
    }

    /// Fails when the board answered `ERROR` since the last send.
    fn check_no_error(&self, line: &str) -> Result<(), StepFailure> {
        let from = self.from(Port::At);
        let error = Regex::new("^ERROR$").map_err(|e| StepFailure::Error(e.to_string()))?;
        match find_line(&self.observations.lock(), Port::At, from, &error) {
            Some(_) => Err(fail(format!("{line} answered ERROR"), Vec::new())),
            None => Ok(()),
        }
    }

    fn fact(&self, name: &str) -> Result<i64, StepFailure> {
        let state = self
            .bench
            .board
            .state()
            .map_err(|e| StepFailure::Error(e.to_string()))?;
        let observed = self.observations.lock();
        let handshakes = observed
            .events
            .iter()
            .filter(|e| matches!(e.kind, EventKind::Tls(_)))
            .count();
        Ok(match name {
            "free-heap" => i64::from(state.free_heap),
            "heap-low-water" => i64::from(state.min_free_heap),
            "connect-attempts" => i64::from(state.connect_attempts),
            "backoff-ms" => i64::from(state.last_backoff_ms),
            "handshakes" => handshakes as i64,
            other => {
                return Err(StepFailure::Error(format!(
                    "unknown fact {other:?}; expected free-heap, heap-low-water, connect-attempts, backoff-ms or handshakes"
                )));
            }
        })
    }

    fn snapshot(&self, port: Port, name: &str) -> Result<(), StepFailure> {
        let text: Vec<String> = self
            .observations
            .lock()
            .port(port)
            .lines()
            .iter()
            .map(|l| l.text.clone())
            .collect();
        let outcome = snapshot::check(
            &self.context.options.snapshot_dir,
            &format!("{}__{name}", self.id()),
            &self.loaded.path,
            &snapshot::normalise(&text),
            self.context.options.update_snapshots,
        )
        .map_err(|e| StepFailure::Error(format!("snapshot {name}: {e}")))?;
        match outcome {
            SnapshotOutcome::Matched | SnapshotOutcome::Written => Ok(()),
            SnapshotOutcome::Changed { diff, pending } => Err(fail(
                format!(
                    "the {} log changed from snapshot {name} (new version in {}; accept with --update-snapshots or cargo insta review)",
                    port_name(port),
                    pending.display()
                ),
                diff,
            )),
        }
    }

    /// Crashes and resets nobody asked for fail the scenario with the excerpt.
    fn judge_incidents(&self, result: &mut ScenarioResult) {
        let observed = self.observations.lock();
        let lines = observed.log.lines();
        let mut resets = 0;
        let mut panic_at = None;
        for (i, line) in lines.iter().enumerate() {
            match crash::detect(&line.text) {
                Some(Incident::RomReset) => resets += 1,
                Some(_) if panic_at.is_none() => panic_at = Some(i),
                _ => {}
            }
        }
        let expect_crash = self.loaded.scenario.setup.expect_crash;
        let excerpt = |at: usize| -> Vec<String> {
            lines[at..lines.len().min(at + 12)]
                .iter()
                .map(|l| l.text.clone())
                .collect()
        };
        let failed = !matches!(result.verdict, Verdict::Pass);
        match panic_at {
            Some(at) if !expect_crash => {
                result.verdict = Verdict::Fail;
                result.reason = format!(
                    "the board crashed: {}",
                    crash::detect(&lines[at].text).map_or_else(String::new, |i| i.to_string())
                );
                result.evidence = excerpt(at);
            }
            Some(_) => {}
            None if expect_crash && !failed => {
                result.verdict = Verdict::Fail;
                result.reason = "expected a crash (Guru Meditation / abort), none was seen".into();
            }
            None if resets > self.allowed_resets + usize::from(expect_crash) && !failed => {
                result.verdict = Verdict::Fail;
                result.reason = format!(
                    "the board reset {resets} times, the scenario caused {}",
                    self.allowed_resets
                );
                result.evidence = lines
                    .iter()
                    .filter(|l| crash::detect(&l.text) == Some(Incident::RomReset))
                    .map(|l| l.text.clone())
                    .collect();
            }
            None => {}
        }
    }

    /// A refusal without a TLS alert passes, with a warning (Device Advisor counts it so).
    fn judge_warnings(&self, result: &mut ScenarioResult) {
        let observed = self.observations.lock();
        for event in &observed.events {
            if let EventKind::Tls(record) = &event.kind
                && record.outcome == (TlsOutcome::AbortedByPeer { alert: None })
            {
                result
                    .warnings
                    .push("the board closed the TLS connection without sending an alert".into());
            }
        }
        result.warnings.dedup();
        if result.verdict == Verdict::Pass && !result.warnings.is_empty() {
            result.verdict = Verdict::PassWithWarnings;
            result.reason = result.warnings.join("; ");
        }
    }

    fn facts(&self) -> Facts {
        let observed = self.observations.lock();
        let mut facts = Facts::default();
        for event in &observed.events {
            match &event.kind {
                EventKind::Tls(r) => {
                    facts.handshakes += 1;
                    for v in &r.versions_offered {
                        if !facts.tls_versions_offered.contains(v) {
                            facts.tls_versions_offered.push(v.clone());
                        }
                    }
                    facts.cipher_suites_offered = facts
                        .cipher_suites_offered
                        .max(r.cipher_suites_offered.len());
                    let sni = r.sni.clone().unwrap_or_else(|| "(none)".into());
                    if !facts.sni_sent.contains(&sni) {
                        facts.sni_sent.push(sni);
                    }
                    if let TlsOutcome::AbortedByPeer { alert } = &r.outcome {
                        facts
                            .alerts_sent
                            .push(alert.clone().unwrap_or_else(|| "none".into()));
                    }
                }
                EventKind::Mqtt(m)
                    if m.direction == Direction::FromDevice && m.packet == "CONNECT" =>
                {
                    if let Some(id) = &m.client_id
                        && !facts.mqtt_client_ids.contains(id)
                    {
                        facts.mqtt_client_ids.push(id.clone());
                    }
                }
                _ => {}
            }
        }
        if let Ok(state) = self.bench.board.state() {
            facts.free_heap = state.free_heap;
            facts.heap_low_water = state.min_free_heap;
            facts.connect_attempts = state.connect_attempts;
            facts.last_backoff_ms = state.last_backoff_ms;
        }
        facts
    }

    /// Raw bytes and timestamped lines of both ports and the services' events, whatever
    /// happened.
    fn write_logs(&self) -> BTreeMap<String, String> {
        let dir = self
            .context
            .options
            .report_dir
            .join("logs")
            .join(self.bench.identity.spec.replace([':', '/'], "_"));
        let mut written = BTreeMap::new();
        if std::fs::create_dir_all(&dir).is_err() {
            return written;
        }
        let observed = self.observations.lock();
        for port in [Port::Log, Port::At] {
            let capture = observed.port(port);
            let raw = dir.join(format!("{}.{}.log", self.id(), port_name(port)));
            let lines = dir.join(format!("{}.{}.txt", self.id(), port_name(port)));
            let text: String = capture
                .lines()
                .iter()
                .map(|l| format!("[{:>9.3}] {}\n", l.at.as_secs_f64(), l.text))
                .collect();
            if std::fs::write(&raw, capture.raw()).is_ok() && std::fs::write(&lines, text).is_ok() {
                written.insert(port_name(port).to_owned(), raw.display().to_string());
            }
        }
        // The services' events, one JSON object per line (serve's `--events` format).
        let events = dir.join(format!("{}.events.jsonl", self.id()));
        let jsonl: String = observed
            .events
            .iter()
            .filter_map(|e| serde_json::to_string(e).ok())
            .map(|line| line + "\n")
            .collect();
        if std::fs::write(&events, jsonl).is_ok() {
            written.insert("events".to_owned(), events.display().to_string());
        }
        written
    }
}

/// The first complete or partial line at or after `from` matching `regex`.
fn find_line(observed: &Observed, port: Port, from: usize, regex: &Regex) -> Option<String> {
    let capture = observed.port(port);
    capture
        .lines()
        .get(from..)
        .into_iter()
        .flatten()
        .map(|l| l.text.as_str())
        .chain(std::iter::once(capture.partial()))
        .find(|text| regex.is_match(text))
        .map(str::to_owned)
}

/// An event as a step kind and a one-line description that `matching` regexes run against.
pub fn describe(event: &Event) -> (String, String) {
    match &event.kind {
        EventKind::Tls(r) => {
            let sni = r.sni.as_deref().unwrap_or("none");
            let (kind, what) = match &r.outcome {
                TlsOutcome::Established => (
                    "tls-established",
                    format!(
                        "version={} client_cn={}",
                        r.version.as_deref().unwrap_or("?"),
                        r.client_cn.as_deref().unwrap_or("none")
                    ),
                ),
                TlsOutcome::RejectedByUs { reason, detail } => (
                    "device-rejected",
                    format!(
                        "reason={} detail={detail}",
                        serde_json::to_string(reason)
                            .unwrap_or_default()
                            .trim_matches('"')
                    ),
                ),
                TlsOutcome::AbortedByPeer { alert } => (
                    "tls-alert",
                    format!("alert={}", alert.as_deref().unwrap_or("none")),
                ),
                TlsOutcome::HandshakeTimeout => ("tls-timeout", "handshake timed out".to_owned()),
            };
            (
                kind.to_owned(),
                format!("{what} sni={sni} service={}", event.service),
            )
        }
        EventKind::Mqtt(m) => {
            let kind = match (m.direction, m.packet.as_str()) {
                (Direction::FromDevice, "CONNECT") => "device-connected",
                (Direction::FromDevice, "PUBLISH") => "published",
                (Direction::FromDevice, "SUBSCRIBE") => "subscribed",
                _ => "mqtt",
            };
            let line = format!(
                "{:?} {} client_id={} topic={} qos={} size={} code={} fault={}",
                m.direction,
                m.packet,
                m.client_id.as_deref().unwrap_or("-"),
                m.topic.as_deref().unwrap_or("-"),
                m.qos.map_or("-".into(), |q| q.to_string()),
                m.payload_size.map_or("-".into(), |s| s.to_string()),
                m.return_code.as_deref().unwrap_or("-"),
                m.fault.as_deref().unwrap_or("-"),
            );
            (kind.to_owned(), line)
        }
        EventKind::Sntp(s) => (
            "sntp".to_owned(),
            format!("answered={} skew={}", s.answered, s.skew_seconds),
        ),
        EventKind::Http(h) => {
            let kind = if h.status == 200 && h.body_complete {
                "ota-completed"
            } else {
                "ota-request"
            };
            (
                kind.to_owned(),
                format!(
                    "{} {} status={} bytes={} complete={}",
                    h.method, h.path, h.status, h.bytes_sent, h.body_complete
                ),
            )
        }
    }
}

fn step_name(step: &Step) -> &'static str {
    match step {
        Step::Flash(_) => "flash",
        Step::Provision(_) => "provision",
        Step::Reset(_) => "reset",
        Step::Send(_) => "send",
        Step::Expect(_) => "expect",
        Step::ExpectNot(_) => "expect-not",
        Step::WaitEvent(_) => "wait-event",
        Step::Assert(_) => "assert",
        Step::Snapshot(_) => "snapshot",
        Step::Include(_) => "include",
        Step::Heap(_) => "heap",
        Step::Publish(_) => "publish",
    }
}

/// The broker publishes to the device at QoS 1: a plain MQTT client on the broker's loopback
/// port, waiting for the broker's PUBACK.
fn publish_acknowledged(broker: SocketAddr, topic: &str, payload: Vec<u8>) -> Result<(), String> {
    let mut options =
        rumqttc::MqttOptions::new("sparring-publisher", broker.ip().to_string(), broker.port());
    options.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut connection) = rumqttc::Client::new(options, 10);
    client
        .publish(topic, rumqttc::QoS::AtLeastOnce, false, payload)
        .map_err(|e| format!("queueing the publish: {e}"))?;
    // Until the broker acknowledged it; bounded.
    for notification in connection.iter().take(50) {
        match notification {
            Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) => {
                let _ = client.disconnect();
                return Ok(());
            }
            Ok(_) => {}
            Err(e) => return Err(format!("publishing to the broker: {e}")),
        }
    }
    Err("the broker did not acknowledge the publish".into())
}

//! One scenario on one bench: services up, lab fixture set, steps in order, then the verdict
//! from what the ports and the services showed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use esp_formats::flash_set;
use esp_formats::image::AppSpec;
use regex::Regex;

use super::{Context, blank_result};
use crate::bench::{Bench, BenchError, port_name};
use crate::board::{BoardError, Capability, FlashContent};
use crate::capture::Cursor;
use crate::environment::Environment;
use crate::events::{RunEvent, ScenarioResult, StepTiming, Verdict};
use crate::flash::Region;
use crate::observe::{self, Observations, Observed};
use crate::plan::{self, PlannedStep};
use crate::scenario::{EventsSince, LoadedScenario, Port, SearchFrom, Step};
use crate::snapshot::{self, SnapshotOutcome};
use crate::verdict;

/// The firmware scenarios flash unless they say otherwise.
pub const FIRMWARE_PROJECT: &str = "esp-at";

/// See [`ScenarioRun::board_window`]: the virtual board boots to `ready` in about 50 ms and
/// completes a loopback TLS handshake in a few, both at real speed.
const SHORTEST_SCALED_WINDOW: Duration = Duration::from_millis(100);

/// Why a step did not pass.
pub(crate) enum StepFailure {
    /// The firmware did not do what the scenario expects.
    Fail {
        reason: String,
        evidence: Vec<String>,
    },
    /// The harness or the board broke.
    Error(String),
}

pub(crate) fn fail(reason: impl Into<String>, evidence: Vec<String>) -> StepFailure {
    StepFailure::Fail {
        reason: reason.into(),
        evidence,
    }
}

/// One scenario in progress.
pub(crate) struct ScenarioRun<'a> {
    pub(super) context: &'a Context<'a>,
    bench: &'a mut Bench,
    pub(super) loaded: &'a LoadedScenario,
    pub(crate) observations: Arc<Observations>,
    pub(crate) env: Environment,
    /// Where each port's expectations search from.
    cursors: BTreeMap<&'static str, PortCursors>,
    /// The first event a `wait-event` looks at (see [`EventsSince::Previous`]).
    events_from: usize,
    allowed_resets: usize,
    waited: Duration,
    timings: Vec<StepTiming>,
    /// How much faster than real time the board's own waits run (1 on real boards).
    time_scale: u32,
    /// What the report should show beside the verdict (a flash step that wrote nothing).
    warnings: Vec<String>,
}

/// A port's search positions: the end of its lines at the last send or reset, and just past
/// the line the last expectation matched.
#[derive(Debug, Clone, Copy, Default)]
struct PortCursors {
    sent: Cursor,
    matched: Cursor,
}

pub(super) fn run_scenario(
    context: &Context<'_>,
    bench: &mut Bench,
    loaded: &LoadedScenario,
    emit: &mut dyn FnMut(&RunEvent),
) -> ScenarioResult {
    let started = Instant::now();
    let mut result = blank_result(&bench.identity.name, "", loaded);
    let observations = Observations::new();
    bench.observe_into(observations.clone());
    let setup = &loaded.scenario.setup;
    let names_resolve = bench.board.has(Capability::LabNetwork);
    let time_scale = if bench.board.has(Capability::TimeScale) {
        context.options.time_scale.max(1)
    } else {
        1
    };
    let env = match Environment::start(
        context.runtime,
        bench.board.target().esp(),
        context.pki,
        context.broker,
        setup,
        observations.clone(),
        context.lab,
        names_resolve,
        time_scale,
    ) {
        Ok(env) => env,
        Err(e) => {
            result.verdict = Verdict::Error;
            result.reason = format!("starting the services: {e}");
            return result;
        }
    };
    if let Err(e) = set_up_fixture(context, bench, loaded, &env, time_scale) {
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
        cursors: BTreeMap::new(),
        events_from: 0,
        allowed_resets: 0,
        time_scale,
        waited: Duration::ZERO,
        timings: Vec::new(),
        warnings: Vec::new(),
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
    result.warnings = std::mem::take(&mut run.warnings);
    let observed = run.observations.lock();
    verdict::judge_incidents(
        &observed,
        setup.expect_crash,
        run.allowed_resets,
        run.bench.board.elf(),
        &mut result,
    );
    verdict::judge_warnings(&observed, setup.warn_if_connected.as_deref(), &mut result);
    result.facts = verdict::facts(&observed, run.time_scale);
    run.bench.note_firmware(&observed);
    result.facts.firmware = run.bench.identity.firmware.clone();
    let dir = context
        .options
        .report_dir
        .join("logs")
        .join(run.bench.identity.name.replace([':', '/', '#'], "_"));
    result.logs = observe::write_logs(&dir, loaded.scenario.id.get_ref(), &observed);
    drop(observed);
    result.steps = std::mem::take(&mut run.timings);
    result.waited_ms = run.waited.as_millis() as u64;
    result.elapsed_ms = started.elapsed().as_millis() as u64;
    result.harness_ms = result.elapsed_ms.saturating_sub(result.waited_ms);
    result
}

/// The lab equipment for this scenario: network, defect switches, heap, board time — on boards
/// that have them (a scenario needing one the board lacks was skipped before it got here).
fn set_up_fixture(
    context: &Context<'_>,
    bench: &mut Bench,
    loaded: &LoadedScenario,
    env: &Environment,
    time_scale: u32,
) -> Result<(), BoardError> {
    let setup = &loaded.scenario.setup;
    let has = |c| bench.board.has(c);
    let (network, defects, heap) = (
        has(Capability::LabNetwork),
        has(Capability::Defects),
        has(Capability::HeapControl),
    );
    let scaled = has(Capability::TimeScale);
    let Some(fixture) = bench.board.fixture() else {
        return Ok(());
    };
    if scaled {
        fixture.set_time_scale(time_scale)?;
    }
    if network {
        fixture.set_network(&env.lab_network(context.lab))?;
    }
    if defects {
        let mut switches = context.options.defects.clone();
        switches.extend(setup.defects.iter().map(|d| d.get_ref().clone()));
        fixture.set_defects(&switches)?;
    }
    if heap {
        fixture.reserve_heap(setup.reserve_heap.unwrap_or(0))?;
    }
    Ok(())
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
            if acts(&planned.step) {
                self.events_from = self.observations.lock().events.len();
            }
            let result = self
                .bench
                .ensure_ports()
                .map_err(bench_error)
                .and_then(|()| self.step(planned));
            let timing = StepTiming {
                step: step_name(&planned.step).to_owned(),
                origin: planned.origin.clone(),
                ok: result.is_ok(),
                elapsed_us: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            };
            emit(&RunEvent::StepFinished {
                board: self.bench.identity.name.clone(),
                scenario: self.id().to_owned(),
                index,
                step: timing.clone(),
            });
            self.timings.push(timing);
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
        match &planned.step {
            Step::Flash(f) => {
                let target = self.bench.board.target();
                let esp_chip = || {
                    target.esp().ok_or_else(|| {
                        StepFailure::Error(format!(
                            "flash: board {} is a {target}, not an ESP chip: it takes an ELF (`elf` in its inventory entry)",
                            self.bench.identity.name
                        ))
                    })
                };
                let regions: Vec<Region> = match self.bench.board.flash_content() {
                    FlashContent::GeneratedEspAt => {
                        let chip = esp_chip()?;
                        let version = self.text(planned, &f.version)?;
                        let app = AppSpec::new(chip, FIRMWARE_PROJECT, &version);
                        let storage = self.loaded.scenario.board.at_storage.into();
                        flash_set::esp_at(chip, &app, storage)
                            .map_err(|e| StepFailure::Error(e.to_string()))?
                            .into_iter()
                            .map(|f| Region {
                                offset: f.offset,
                                data: f.bytes,
                                name: f.name.to_owned(),
                            })
                            .collect()
                    }
                    // Resolved (and refused) before the board is touched.
                    FlashContent::Files(files) => {
                        files
                            .resolve(esp_chip()?)
                            .map_err(|e| {
                                StepFailure::Error(format!(
                                    "board {}: firmware_files ({}): {e}",
                                    self.bench.identity.name, files.origin
                                ))
                            })?
                            .regions
                    }
                    FlashContent::Elf(elf) => {
                        self.allowed_resets += 1;
                        return self.bench.flash_elf(&elf).map_err(bench_error);
                    }
                    FlashContent::Held => {
                        self.warnings.push(format!(
                            "flash: kept the firmware board {} holds and reset into it (nothing written: its inventory entry names no firmware_files)",
                            self.bench.identity.name
                        ));
                        return self.reset_into_app();
                    }
                };
                // The download-mode banner and the boot after flashing.
                self.allowed_resets += 2;
                self.bench.flash(&regions).map_err(bench_error)
            }
            Step::Reset(r) => {
                if r.download {
                    self.allowed_resets += 1;
                    return Err(StepFailure::Error(
                        "reset into download mode is done by flash steps".into(),
                    ));
                }
                self.reset_into_app()
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
                self.expect_from(e.port, e.after, &regex, Duration::from_millis(e.within_ms))
            }
            Step::ExpectNot(e) => {
                let regex = self.regex(planned, e.regex.get_ref())?;
                let from = self.search_start(e.port, SearchFrom::Previous);
                let seen = self.wait(self.board_window(e.window_ms), |o| {
                    o.port(e.port)
                        .find(from, &regex)
                        .map(|(line, _)| line.to_owned())
                })?;
                match seen {
                    None => Ok(()),
                    Some(line) => Err(fail(
                        format!(
                            "/{}/ appeared on the {} port within {} ms (board time)",
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
                let from = match w.since {
                    EventsSince::Previous => self.events_from,
                    EventsSince::Start => 0,
                };
                let found = self.wait(Duration::from_millis(w.within_ms), |o| {
                    o.events
                        .iter()
                        .enumerate()
                        .skip(from)
                        .find_map(|(index, event)| {
                            let (kind, line) = observe::describe(event);
                            (kind == w.event && matching.as_ref().is_none_or(|m| m.is_match(&line)))
                                .then_some(index)
                        })
                })?;
                match found {
                    Some(index) => {
                        self.events_from = self.events_from.max(index + 1);
                        Ok(())
                    }
                    None => {
                        let seen: Vec<String> = self
                            .observations
                            .lock()
                            .events
                            .iter()
                            .skip(from)
                            .map(|e| {
                                let (kind, line) = observe::describe(e);
                                format!("{kind}: {line}")
                            })
                            .collect();
                        let what = match &matching {
                            Some(m) => format!("{} matching /{}/", w.event, m.as_str()),
                            None => w.event.clone(),
                        };
                        let since = match w.since {
                            EventsSince::Previous => "since the last action",
                            EventsSince::Start => "since the scenario began",
                        };
                        Err(fail(
                            format!("no {what} event within {} ms ({since})", w.within_ms),
                            seen,
                        ))
                    }
                }
            }
            Step::Assert(a) => {
                let value = fact(&self.observations.lock(), &a.fact, self.time_scale)?;
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
            Step::Heap(h) => {
                let board = self.bench.board.name().to_owned();
                let fixture = self.bench.board.fixture().ok_or(BoardError::Missing {
                    board,
                    capability: Capability::HeapControl,
                });
                fixture
                    .and_then(|f| f.reserve_heap(h.reserve))
                    .map_err(|e| StepFailure::Error(e.to_string()))
            }
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
                self.env
                    .publish_acknowledged(&topic, payload)
                    .map_err(StepFailure::Error)
            }
            Step::Include(_) => Err(StepFailure::Error("include left after planning".into())),
        }
    }

    /// From now on, for every expectation on `port`.
    pub(crate) fn mark(&mut self, port: Port) {
        let end = self.observations.lock().port(port).end();
        self.cursors.entry(port_name(port)).or_default().sent = end;
    }

    /// A reset the scenario asked for: expectations look at what the board prints from now on.
    fn reset_into_app(&mut self) -> Result<(), StepFailure> {
        self.allowed_resets += 1;
        self.mark(Port::Log);
        self.mark(Port::At);
        self.bench.reset_into_app().map_err(bench_error)
    }

    /// A window of board time (an `expect-not`'s) as the real time to watch: the board's
    /// clock runs `time_scale` times faster, but what it does over the network (a handshake,
    /// a boot) takes real time, so a scaled window is never shorter than
    /// [`SHORTEST_SCALED_WINDOW`] unless the scenario asked for less.
    fn board_window(&self, window_ms: u64) -> Duration {
        let window = Duration::from_millis(window_ms);
        if self.time_scale <= 1 {
            return window;
        }
        (window / self.time_scale).max(window.min(SHORTEST_SCALED_WINDOW))
    }

    /// Where a search on `port` starts.
    pub(crate) fn search_start(&self, port: Port, after: SearchFrom) -> Cursor {
        let cursors = self
            .cursors
            .get(port_name(port))
            .copied()
            .unwrap_or_default();
        match after {
            SearchFrom::Previous => cursors.sent.max(cursors.matched),
            SearchFrom::Send => cursors.sent,
        }
    }

    pub(crate) fn send(&mut self, port: Port, bytes: &[u8]) -> Result<(), StepFailure> {
        self.mark(port);
        self.bench.write(port, bytes).map_err(bench_error)
    }

    /// Waits until `found` answers or `within` passes; a port that goes away ends the wait
    /// with an error naming it.
    pub(crate) fn wait<T>(
        &mut self,
        within: Duration,
        mut found: impl FnMut(&Observed) -> Option<T>,
    ) -> Result<Option<T>, StepFailure> {
        let waited = Instant::now();
        let answer = self
            .observations
            .wait_for(waited + within, |o| match o.lost.first() {
                Some(lost) => Some(Err(lost.clone())),
                None => found(o).map(Ok),
            });
        self.waited += waited.elapsed();
        match answer {
            None => Ok(None),
            Some(Ok(value)) => Ok(Some(value)),
            Some(Err(lost)) => {
                let reason = format!("board {}: {lost}", self.bench.identity.name);
                Err(StepFailure::Error(reason))
            }
        }
    }

    /// Waits for a line matching `regex` on `port` after the previous match.
    pub(crate) fn expect(
        &mut self,
        port: Port,
        regex: &Regex,
        within: Duration,
    ) -> Result<(), StepFailure> {
        self.expect_from(port, SearchFrom::Previous, regex, within)
    }

    fn expect_from(
        &mut self,
        port: Port,
        after: SearchFrom,
        regex: &Regex,
        within: Duration,
    ) -> Result<(), StepFailure> {
        let from = self.search_start(port, after);
        let found = self.wait(within, |o| {
            o.port(port).find(from, regex).map(|(_, past)| past)
        })?;
        if let Some(past) = found {
            let cursors = self.cursors.entry(port_name(port)).or_default();
            cursors.matched = cursors.matched.max(past);
            return Ok(());
        }
        let observed = self.observations.lock();
        let lines = observed.port(port).lines_from(from);
        let tail: Vec<String> = lines
            .iter()
            .rev()
            .take(12)
            .rev()
            .map(|l| l.text.clone())
            .collect();
        let order = match after {
            SearchFrom::Previous if from > self.search_start(port, SearchFrom::Send) => {
                " after the previous match"
            }
            _ => "",
        };
        Err(fail(
            format!(
                "expected /{}/ on the {} port{order} within {} ms",
                regex.as_str(),
                port_name(port),
                within.as_millis()
            ),
            tail,
        ))
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
            &snapshot::normalise(&text, &self.env.snapshot_placeholders()),
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

/// Steps that act on the board or the broker: a `wait-event` after one looks at the events
/// since it began.
fn acts(step: &Step) -> bool {
    match step {
        Step::Flash(_)
        | Step::Provision(_)
        | Step::Reset(_)
        | Step::Send(_)
        | Step::Heap(_)
        | Step::Publish(_) => true,
        Step::Expect(_)
        | Step::ExpectNot(_)
        | Step::WaitEvent(_)
        | Step::Assert(_)
        | Step::Snapshot(_)
        | Step::Include(_) => false,
    }
}

fn bench_error(e: BenchError) -> StepFailure {
    StepFailure::Error(e.to_string())
}

/// A fact an `assert` step checks, from the ports and the services' events only.
fn fact(observed: &Observed, name: &str, time_scale: u32) -> Result<i64, StepFailure> {
    let facts = verdict::facts(observed, time_scale);
    let missing = |what: &str| StepFailure::Error(format!("{name}: {what}"));
    Ok(match name {
        "free-heap" | "heap-low-water" => {
            let (free, low) = facts.free_heap.zip(facts.heap_low_water).ok_or_else(|| {
                missing("the firmware has not reported its heap: send AT+SYSRAM? (ESP-AT) or have the app log `free heap: N` first")
            })?;
            i64::from(if name == "free-heap" { free } else { low })
        }
        "connect-attempts" => i64::from(facts.connect_attempts),
        "backoff-ms" => {
            i64::from(facts.last_backoff_ms.ok_or_else(|| {
                missing("the broker saw no connection followed by another attempt")
            })?)
        }
        "handshakes" => facts.handshakes as i64,
        "resent-packets" => verdict::resent_packets(&observed.events) as i64,
        other => {
            return Err(StepFailure::Error(format!(
                "unknown fact {other:?}; expected free-heap, heap-low-water, connect-attempts, backoff-ms, handshakes or resent-packets"
            )));
        }
    })
}

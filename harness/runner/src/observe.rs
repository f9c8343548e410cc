//! Everything observed during a scenario, in one place the steps wait on: the board's serial
//! ports (captured by reader threads) and the services' events. Waiting is on a condition
//! variable signalled by each new observation, never on a sleep.

use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sparring_services::events::{Direction, TlsOutcome};
use sparring_services::{Event, EventKind};

use crate::capture::Capture;
use crate::scenario::Port;

/// Observations so far.
#[derive(Debug, Default)]
pub struct Observed {
    pub log: Capture,
    pub at: Capture,
    pub events: Vec<Event>,
    /// Ports that went away while observed (`the log port: Input/output error`).
    pub lost: Vec<String>,
}

impl Observed {
    pub fn port(&self, port: Port) -> &Capture {
        match port {
            Port::Log => &self.log,
            Port::At => &self.at,
        }
    }
}

/// The shared store and its signal.
#[derive(Debug)]
pub struct Observations {
    state: Mutex<Observed>,
    changed: Condvar,
    started: Instant,
}

impl Observations {
    pub fn new() -> Arc<Observations> {
        Arc::new(Observations {
            state: Mutex::default(),
            changed: Condvar::new(),
            started: Instant::now(),
        })
    }

    fn since_start(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn push_serial(&self, port: Port, bytes: &[u8]) {
        let at = self.since_start();
        let mut state = lock(&self.state);
        match port {
            Port::Log => state.log.push(at, bytes),
            Port::At => state.at.push(at, bytes),
        }
        drop(state);
        self.changed.notify_all();
    }

    /// A reader lost its port: every wait ends, and the step says why.
    pub fn port_lost(&self, port: Port, error: String) {
        let name = match port {
            Port::Log => "log",
            Port::At => "AT",
        };
        lock(&self.state)
            .lost
            .push(format!("the {name} port went away: {error}"));
        self.changed.notify_all();
    }

    pub fn push_event(&self, event: Event) {
        lock(&self.state).events.push(event);
        self.changed.notify_all();
    }

    pub fn lock(&self) -> MutexGuard<'_, Observed> {
        lock(&self.state)
    }

    /// Waits until `found` returns `Some` or the deadline passes; returns the last answer.
    pub fn wait_for<T>(
        &self,
        deadline: Instant,
        mut found: impl FnMut(&Observed) -> Option<T>,
    ) -> Option<T> {
        let mut state = lock(&self.state);
        loop {
            if let Some(answer) = found(&state) {
                return Some(answer);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            state = self
                .changed
                .wait_timeout(state, deadline - now)
                .map(|(guard, _)| guard)
                .unwrap_or_else(|poisoned| poisoned.into_inner().0);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Where a port reader delivers: swapped to a fresh [`Observations`] at each scenario start,
/// so one reader per port serves the whole run and nothing a board prints is lost between.
pub type Sink = Arc<Mutex<Arc<Observations>>>;

/// One open serial port: a reader thread copying it into the observations until stopped, and
/// the handle steps write through. When the port goes away the reader closes both at once, so
/// a vanished device is not held open (the system may give its name to the next one).
pub struct PortReader {
    stop: Arc<AtomicBool>,
    alive: Arc<AtomicBool>,
    writer: Arc<Mutex<Option<serialport::TTYPort>>>,
    thread: Option<JoinHandle<()>>,
}

impl PortReader {
    /// Opens `path` and starts reading it (serial ports are opened exclusively, so reader and
    /// writer share one open).
    pub fn start(path: &Path, port: Port, sink: Sink) -> std::io::Result<PortReader> {
        // Short reads: dropping a reader (to hand its port to a flasher) waits for the
        // thread to notice, at most this long.
        let mut serial = serialport::new(path.to_string_lossy(), 115_200)
            .timeout(Duration::from_millis(5))
            .open_native()
            .map_err(std::io::Error::other)?;
        let writer = Arc::new(Mutex::new(Some(
            serial.try_clone_native().map_err(std::io::Error::other)?,
        )));
        let stop = Arc::new(AtomicBool::new(false));
        let alive = Arc::new(AtomicBool::new(true));
        let thread = {
            let stop = stop.clone();
            let alive = alive.clone();
            let device = path.to_owned();
            let writer = writer.clone();
            let lost_sink = sink.clone();
            let lose = move |error: String| {
                alive.store(false, Ordering::SeqCst);
                lock(&writer).take();
                lock(&lost_sink).port_lost(port, error);
            };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while !stop.load(Ordering::SeqCst) {
                    match serial.read(&mut buf) {
                        // End of file: a hung-up port (a pty whose master closed) reads 0
                        // after poll reports it ready; once its device node is gone it is lost.
                        Ok(0) if !device.exists() => {
                            return lose("the device is gone".into());
                        }
                        Ok(0) => {}
                        Ok(n) => lock(&sink).push_serial(port, &buf[..n]),
                        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                        // The board went away (a pty's master closed, a USB cable pulled).
                        Err(e) => return lose(e.to_string()),
                    }
                }
            })
        };
        Ok(PortReader {
            stop,
            alive,
            writer,
            thread: Some(thread),
        })
    }
}

impl PortReader {
    /// False once the port failed under the reader.
    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }

    /// Writes all of `bytes`; fails once the port is gone.
    pub fn write(&self, bytes: &[u8]) -> std::io::Result<()> {
        use std::io::Write;
        match lock(&self.writer).as_mut() {
            Some(port) => port.write_all(bytes).and_then(|()| port.flush()),
            None => Err(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                "the port went away",
            )),
        }
    }

    /// Runs `act` on the open port (DTR/RTS lines are driven on it); `None` once it is gone.
    pub fn with_port<T>(&self, act: impl FnOnce(&serialport::TTYPort) -> T) -> Option<T> {
        lock(&self.writer).as_ref().map(act)
    }
}

impl Drop for PortReader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
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
            let flag = |f: Option<bool>| f.map_or("-", |f| if f { "1" } else { "0" });
            // Fields after `fault=` were added later: scenarios match on the leading ones.
            let line = format!(
                "{:?} {} client_id={} topic={} qos={} size={} code={} fault={} id={} dup={} retain={} keep_alive={} clean_session={}",
                m.direction,
                m.packet,
                m.client_id.as_deref().unwrap_or("-"),
                m.topic.as_deref().unwrap_or("-"),
                m.qos.map_or("-".into(), |q| q.to_string()),
                m.payload_size.map_or("-".into(), |s| s.to_string()),
                m.return_code.as_deref().unwrap_or("-"),
                m.fault.as_deref().unwrap_or("-"),
                m.packet_id.map_or("-".into(), |i| i.to_string()),
                flag(m.dup),
                flag(m.retain),
                m.keep_alive.map_or("-".into(), |k| k.to_string()),
                flag(m.clean_session),
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
                    "{} {} status={} bytes={} complete={} range={}",
                    h.method,
                    h.path,
                    h.status,
                    h.bytes_sent,
                    h.body_complete,
                    h.range.as_deref().unwrap_or("none")
                ),
            )
        }
    }
}

/// Raw bytes and timestamped lines of both ports and the services' events into `dir` as
/// `<id>.<port>.log` / `.txt` and `<id>.events.jsonl`, whatever happened; returns what was
/// written, by port.
pub fn write_logs(
    dir: &Path,
    id: &str,
    observed: &Observed,
) -> std::collections::BTreeMap<String, String> {
    let mut written = std::collections::BTreeMap::new();
    if std::fs::create_dir_all(dir).is_err() {
        return written;
    }
    for (port, name) in [(Port::Log, "log"), (Port::At, "at")] {
        let capture = observed.port(port);
        let raw = dir.join(format!("{id}.{name}.log"));
        let lines = dir.join(format!("{id}.{name}.txt"));
        let text: String = capture
            .lines()
            .iter()
            .map(|l| format!("[{:>9.3}] {}\n", l.at.as_secs_f64(), l.text))
            .collect();
        if std::fs::write(&raw, capture.raw()).is_ok() && std::fs::write(&lines, text).is_ok() {
            written.insert(name.to_owned(), raw.display().to_string());
        }
    }
    // The services' events, one JSON object per line (serve's `--events` format).
    let events = dir.join(format!("{id}.events.jsonl"));
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

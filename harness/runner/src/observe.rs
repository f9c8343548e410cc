//! Everything observed during a scenario, in one place the steps wait on: the board's serial
//! ports (captured by reader threads) and the services' events. Waiting is on a condition
//! variable signalled by each new observation, never on a sleep.

use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sparring_services::Event;

use crate::capture::Capture;
use crate::scenario::Port;

/// Observations so far.
#[derive(Debug, Default)]
pub struct Observed {
    pub log: Capture,
    pub at: Capture,
    pub events: Vec<Event>,
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

/// A reader thread copying one serial port into the observations until stopped.
pub struct PortReader {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl PortReader {
    /// Starts reading `path`; also returns a handle for writing to the same port (serial
    /// ports are opened exclusively, so reader and writer share one open).
    pub fn start(
        path: &Path,
        port: Port,
        sink: Sink,
    ) -> std::io::Result<(PortReader, serialport::TTYPort)> {
        let mut serial = serialport::new(path.to_string_lossy(), 115_200)
            .timeout(Duration::from_millis(50))
            .open_native()
            .map_err(std::io::Error::other)?;
        let writer = serial.try_clone_native().map_err(std::io::Error::other)?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while !stop.load(Ordering::SeqCst) {
                    match serial.read(&mut buf) {
                        Ok(0) => {}
                        Ok(n) => lock(&sink).push_serial(port, &buf[..n]),
                        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                        // The board went away: nothing more will come.
                        Err(_) => return,
                    }
                }
            })
        };
        Ok((
            PortReader {
                stop,
                thread: Some(thread),
            },
            writer,
        ))
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

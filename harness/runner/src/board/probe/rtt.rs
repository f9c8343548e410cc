//! RTT up channel 0 as a log port.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use probe_rs::rtt::{Rtt, ScanRegion};

use super::rtt_text::RttText;
use super::session::ProbeSession;
use crate::board::LogReader;
use crate::observe::Sink;
use crate::scenario::Port;

/// How long the RTT reader waits after a poll that found nothing: RTT is a buffer in the
/// target's RAM, not an event source, so it is polled; 10 ms keeps a 1 KiB channel from
/// overflowing at UART-like rates without keeping the probe busy.
const RTT_IDLE_POLL: Duration = Duration::from_millis(10);

/// A thread polling RTT up channel 0 into the observations, the RTT counterpart of
/// [`PortReader`](crate::observe::PortReader).
pub struct RttReader {
    stop: Arc<AtomicBool>,
    alive: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl RttReader {
    pub(super) fn start(
        probe: ProbeSession,
        control_block: Option<u64>,
        mut text: RttText,
        sink: Sink,
    ) -> RttReader {
        let stop = Arc::new(AtomicBool::new(false));
        let alive = Arc::new(AtomicBool::new(true));
        let region = control_block.map_or(ScanRegion::Ram, ScanRegion::Exact);
        let thread = {
            let stop = stop.clone();
            let alive = alive.clone();
            std::thread::spawn(move || {
                let mut rtt: Option<Rtt> = None;
                let mut buf = [0u8; 1024];
                while !stop.load(Ordering::SeqCst) {
                    let read = {
                        let mut session = probe.session();
                        match session.core(0) {
                            // The probe or the target went away: the log is lost.
                            Err(e) => {
                                alive.store(false, Ordering::SeqCst);
                                lock_sink(&sink).port_lost(Port::Log, e.to_string());
                                return;
                            }
                            Ok(mut core) => {
                                // The firmware writes the control block at start-up: until it
                                // has (and after each reset), attaching fails; try again.
                                if rtt.is_none() {
                                    rtt = Rtt::attach_region(&mut core, &region).ok();
                                }
                                let read = rtt
                                    .as_mut()
                                    .and_then(|rtt| rtt.up_channel(0))
                                    .map(|channel| channel.read(&mut core, &mut buf));
                                if let Some(Err(_)) = read {
                                    rtt = None;
                                }
                                read.and_then(Result::ok).unwrap_or(0)
                            }
                        }
                    };
                    if read > 0 {
                        let lines = text.feed(&buf[..read]);
                        if !lines.is_empty() {
                            lock_sink(&sink).push_serial(Port::Log, &lines);
                        }
                    } else {
                        std::thread::sleep(RTT_IDLE_POLL);
                    }
                }
            })
        };
        RttReader {
            stop,
            alive,
            thread: Some(thread),
        }
    }
}

impl LogReader for RttReader {
    /// False once the probe failed under the reader.
    fn is_alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }
}

impl Drop for RttReader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn lock_sink(sink: &Sink) -> MutexGuard<'_, Arc<crate::observe::Observations>> {
    sink.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The `_SEGGER_RTT` address in an ELF, where the RTT reader looks first.
pub fn rtt_control_block(elf: &[u8]) -> Option<u64> {
    probe_rs::rtt::find_rtt_control_block_in_raw_file(elf)
        .ok()
        .flatten()
}

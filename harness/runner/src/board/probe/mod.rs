//! A board behind a debug probe (SWD or JTAG, probe-rs used as a library): identified by the
//! target probe-rs attached to, flashed from an ELF through `probe_rs::flashing` (ESP targets
//! through the ESP-IDF image format of the `probe-rs-espressif` plugin, which turns the ELF
//! into bootloader, partition table and app image), reset through the probe, its log read from
//! RTT up channel 0 into the same [`Observations`](crate::observe::Observations) stream serial
//! lines go to, or from a serial `log_port`. The probe is always named by its selector (never
//! "the first probe found") and held through a [`lock`] per board id, as serial boards are.
//!
//! RTT carries text, or defmt frames the [`rtt_text`] decoder turns into lines with the ELF's
//! defmt table.

mod rtt;
pub mod rtt_text;
mod select;
mod session;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use esp_formats::Chip;
use probe_rs::config::MemoryRegion;
use probe_rs::flashing::{FileDownloadError, FlashError};
use probe_rs::probe::DebugProbeError;

use super::Target;
use super::inventory::{InventoryError, ProbeEntry, ProbeLog};
use super::lock::{self, BoardLock};
use super::{Board, BoardError, Capability, FirmwareKind, FlashContent, LabFixture, LogReader};
use crate::flash::{ChipInfo, FlashOptions, FlashReport, Region};
use crate::observe::Sink;
use crate::scenario::Port;

pub use rtt::{RttReader, rtt_control_block};
pub use rtt_text::RttText;
pub use select::selector_text;
pub use select::{find_probe, known_target, list_probes, open_probe, parse_selector, registry};
pub use session::{ProbeFlashOptions, ProbeSession};

// What callers need to list and pick probes, without depending on probe-rs themselves.
pub use probe_rs::probe::DebugProbeInfo;
pub use probe_rs::probe::list::Lister;

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("no debug probe matches {selector} (found: {found})")]
    NoProbe { selector: String, found: String },
    #[error(
        "{count} debug probes match {selector}: {found} (add the serial number to tell them apart)"
    )]
    Ambiguous {
        selector: String,
        count: usize,
        found: String,
    },
    #[error("opening debug probe {selector}: {source}")]
    Open {
        selector: String,
        source: DebugProbeError,
    },
    #[error("attaching to {target} through {selector}: {source}")]
    Attach {
        target: String,
        selector: String,
        source: Box<probe_rs::Error>,
    },
    #[error("flashing {file} onto {target}: {source}")]
    FlashFile {
        file: PathBuf,
        target: String,
        source: Box<FileDownloadError>,
    },
    #[error("flashing {regions} onto {target}: {source}")]
    FlashRegions {
        regions: String,
        target: String,
        source: Box<FlashError>,
    },
    #[error("no image format {0:?} in probe-rs (is the Espressif plugin registered?)")]
    NoFormat(&'static str),
    #[error("resetting {target}: {source}")]
    Reset {
        target: String,
        source: Box<probe_rs::Error>,
    },
}

/// How a run finds debug probes: probe-rs's USB lister, or a lister a test injects (probe-rs's
/// `Lister::with_lister` around fake probes). A lister is made on the thread that opens the
/// board: probe-rs listers are not `Send`.
#[derive(Clone)]
pub struct ProbeFinder(Arc<dyn Fn() -> Lister + Send + Sync>);

impl ProbeFinder {
    pub fn new(make: impl Fn() -> Lister + Send + Sync + 'static) -> ProbeFinder {
        ProbeFinder(Arc::new(make))
    }

    pub fn lister(&self) -> Lister {
        (self.0)()
    }
}

impl Default for ProbeFinder {
    /// probe-rs's own lister: every USB probe driver it has.
    fn default() -> ProbeFinder {
        ProbeFinder::new(Lister::new)
    }
}

impl std::fmt::Debug for ProbeFinder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProbeFinder")
    }
}

/// What a probe-rs target name stands for: an ESP chip when it is one (`esp32c3`), else the
/// target as the registry spells it.
pub fn target_of(name: &str) -> Target {
    Chip::from_name(&name.to_ascii_lowercase())
        .map_or_else(|| Target::Other(name.to_owned()), Target::Esp)
}

/// A board behind a debug probe: flashed, reset and (with `log = "rtt"`) read through it.
pub struct ProbeBoard {
    entry: ProbeEntry,
    target: Target,
    probe: ProbeSession,
    _lock: BoardLock,
}

impl ProbeBoard {
    /// Takes the board (exclusive), opens its probe among `lister`'s and attaches.
    pub fn open(
        entry: &ProbeEntry,
        lister: &Lister,
        wait: bool,
        waiting: &mut dyn FnMut(&str),
    ) -> Result<ProbeBoard, BoardError> {
        let lock = lock::acquire(&entry.id, wait, waiting)?;
        let probe =
            ProbeSession::attach(lister, &entry.probe, &entry.target).map_err(|e| match e {
                // Not there (or not told apart): as a serial board whose port is absent.
                ProbeError::NoProbe { .. } | ProbeError::Ambiguous { .. } => {
                    BoardError::from(InventoryError::Absent {
                        id: entry.id.clone(),
                        what: format!("{e} ({})", entry.origin),
                    })
                }
                other => BoardError::Probe {
                    board: entry.id.clone(),
                    source: Box::new(other),
                },
            })?;
        Ok(ProbeBoard {
            entry: entry.clone(),
            target: target_of(&entry.target),
            probe,
            _lock: lock,
        })
    }

    fn failed(&self, source: ProbeError) -> BoardError {
        BoardError::Probe {
            board: self.entry.id.clone(),
            source: Box::new(source),
        }
    }

    fn probe_options(options: &FlashOptions) -> ProbeFlashOptions {
        ProbeFlashOptions {
            verify: true,
            dry_run: false,
            progress: options.progress,
        }
    }
}

impl Board for ProbeBoard {
    fn name(&self) -> &str {
        &self.entry.id
    }
    fn target(&self) -> Target {
        self.target.clone()
    }
    fn firmware(&self) -> FirmwareKind {
        self.entry.firmware
    }
    fn port(&self, port: Port) -> Option<PathBuf> {
        match (port, &self.entry.log) {
            (Port::Log, ProbeLog::Port(path)) => Some(path.clone()),
            _ => None,
        }
    }
    fn capabilities(&self) -> &[Capability] {
        &[]
    }

    /// The target probe-rs attached to (its debug port answered as that target) and the
    /// target's flash size from probe-rs's memory map. A probe does not read a MAC.
    fn identify(&mut self) -> Result<ChipInfo, BoardError> {
        let (name, flash) = self.probe.attached_target();
        let chip = match &self.target {
            // As espflash names ESP chips, so the inventory's check compares like with like.
            Target::Esp(chip) if name.eq_ignore_ascii_case(chip.name()) => chip.name().to_owned(),
            _ => name,
        };
        Ok(ChipInfo {
            chip,
            mac: "(not read through a debug probe)".into(),
            flash_size: size_text(flash),
        })
    }

    /// Bytes at their addresses through probe-rs's flash loader (an ESP target's flash starts
    /// at 0, as the ROM loader's offsets do); probe-rs verifies but cannot skip what matches.
    fn flash(
        &mut self,
        regions: &[Region],
        options: &FlashOptions,
    ) -> Result<FlashReport, BoardError> {
        self.probe
            .flash_regions(regions, Self::probe_options(options))
            .map_err(|e| self.failed(e))?;
        Ok(FlashReport {
            written: regions.iter().map(|r| r.name.clone()).collect(),
            ..FlashReport::default()
        })
    }

    fn flash_elf(&mut self, elf: &Path, options: &FlashOptions) -> Result<(), BoardError> {
        self.probe
            .flash_elf(elf, Self::probe_options(options))
            .map_err(|e| self.failed(e))
    }

    /// Through the probe; the log port's lines are not needed.
    fn reset_into_app(&mut self, _log: Option<&serialport::TTYPort>) -> Result<(), BoardError> {
        self.probe.reset().map_err(|e| self.failed(e))
    }

    /// RTT up channel 0, where the ELF's `_SEGGER_RTT` is (RAM scanned without one), defmt
    /// frames decoded when the ELF has a defmt table.
    fn open_log(&mut self, sink: Sink) -> Option<Box<dyn LogReader>> {
        if self.entry.log != ProbeLog::Rtt {
            return None;
        }
        // An unreadable ELF leaves the reader scanning RAM; flashing reports the file.
        let elf = std::fs::read(&self.entry.elf).ok();
        let control_block = elf.as_deref().and_then(rtt_control_block);
        let text = match elf.as_deref().map(RttText::for_elf) {
            Some(Ok(text)) => text,
            Some(Err(e)) => {
                eprintln!(
                    "warning: board {}: {} ({e}): its RTT bytes are taken as text",
                    self.entry.id,
                    self.entry.elf.display()
                );
                RttText::plain()
            }
            None => RttText::plain(),
        };
        Some(Box::new(self.probe.start_rtt(control_block, text, sink)))
    }

    fn fixture(&mut self) -> Option<&mut dyn LabFixture> {
        None
    }

    fn flash_content(&self) -> FlashContent {
        FlashContent::Elf(self.entry.elf.clone())
    }

    fn elf(&self) -> Option<&Path> {
        Some(&self.entry.elf)
    }
}

/// `4MB`, `512KB`: flash sizes as the ROM loader's identity prints them.
fn size_text(bytes: u64) -> String {
    if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
        format!("{}MB", bytes >> 20)
    } else {
        format!("{}KB", bytes >> 10)
    }
}

/// The bytes of non-volatile memory in a target's memory map (aliases counted once).
fn flash_bytes(memory_map: &[MemoryRegion]) -> u64 {
    memory_map
        .iter()
        .filter_map(|region| match region {
            MemoryRegion::Nvm(nvm) if !nvm.is_alias => Some(nvm.range.end - nvm.range.start),
            _ => None,
        })
        .sum()
}

#[cfg(test)]
mod tests;

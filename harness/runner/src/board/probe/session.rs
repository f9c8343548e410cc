//! An attached probe-rs session: flashing (ELF or regions) with progress and verify, reset.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use indicatif::{ProgressBar, ProgressStyle};
use probe_rs::flashing::{DownloadOptions, FileDownloadError, FlashError, FlashProgress};
use probe_rs::flashing::{ProgressEvent, image_format};
use probe_rs::probe::DebugProbeSelector;
use probe_rs::probe::list::Lister;
use probe_rs::{Permissions, Session};

use super::ProbeError;
use super::rtt::RttReader;
use super::rtt_text::RttText;
use super::select::open_probe;
use crate::flash::Region;
use crate::observe::Sink;

/// What flashing does besides writing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeFlashOptions {
    /// Read everything back after writing.
    pub verify: bool,
    /// Prepare everything (flash algorithm, layout) but write nothing.
    pub dry_run: bool,
    pub progress: bool,
}

/// An attached probe-rs session, shared by whoever flashes and resets and the RTT reader.
#[derive(Clone)]
pub struct ProbeSession {
    session: Arc<Mutex<Session>>,
    target: String,
}

impl ProbeSession {
    /// Opens the probe `selector` names through `lister` and attaches to `target`.
    pub fn attach(
        lister: &Lister,
        selector: &DebugProbeSelector,
        target: &str,
    ) -> Result<ProbeSession, ProbeError> {
        let probe = open_probe(lister, selector)?;
        let session = probe
            .attach(target, Permissions::default())
            .map_err(|source| ProbeError::Attach {
                target: target.to_owned(),
                selector: selector.to_string(),
                source: Box::new(source),
            })?;
        Ok(ProbeSession {
            session: Arc::new(Mutex::new(session)),
            target: target.to_owned(),
        })
    }

    /// The target's name as probe-rs attached to it, and its flash bytes by probe-rs's memory
    /// map.
    pub fn attached_target(&self) -> (String, u64) {
        let session = self.session();
        let target = session.target();
        (target.name.clone(), super::flash_bytes(&target.memory_map))
    }

    pub(super) fn session(&self) -> MutexGuard<'_, Session> {
        self.session
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Writes an ELF: as ESP-IDF images (bootloader, partition table, app) on Espressif
    /// targets, as its loadable segments elsewhere.
    pub fn flash_elf(&self, elf: &Path, options: ProbeFlashOptions) -> Result<(), ProbeError> {
        let format_name = if is_espressif(&self.target) {
            "idf"
        } else {
            "elf"
        };
        let format = image_format(format_name).ok_or(ProbeError::NoFormat(format_name))?;
        let failed = |source: FileDownloadError| ProbeError::FlashFile {
            file: elf.to_owned(),
            target: self.target.clone(),
            source: Box::new(source),
        };
        let mut session = self.session();
        let loader =
            probe_rs::flashing::build_loader(&mut session, elf, format.create_loader(None), None)
                .map_err(failed)?;
        let mut bars = ProgressBars::new(options.progress);
        loader
            .commit(&mut session, download_options(options, &mut bars))
            .map_err(|e| failed(FileDownloadError::Flash(e)))
    }

    /// Writes bytes at flash addresses (an ESP target's flash starts at 0, as the ROM
    /// loader's offsets do).
    pub fn flash_regions(
        &self,
        regions: &[Region],
        options: ProbeFlashOptions,
    ) -> Result<(), ProbeError> {
        let failed = |source: FlashError| ProbeError::FlashRegions {
            regions: regions
                .iter()
                .map(|r| format!("{} at 0x{:x}", r.name, r.offset))
                .collect::<Vec<_>>()
                .join(", "),
            target: self.target.clone(),
            source: Box::new(source),
        };
        let mut session = self.session();
        let mut loader = session.target().flash_loader();
        for region in regions {
            loader
                .add_data(u64::from(region.offset), &region.data)
                .map_err(failed)?;
        }
        let mut bars = ProgressBars::new(options.progress);
        loader
            .commit(&mut session, download_options(options, &mut bars))
            .map_err(failed)
    }

    /// Resets core 0 and lets it run.
    pub fn reset(&self) -> Result<(), ProbeError> {
        let failed = |source: probe_rs::Error| ProbeError::Reset {
            target: self.target.clone(),
            source: Box::new(source),
        };
        let mut session = self.session();
        session
            .core(0)
            .and_then(|mut core| core.reset())
            .map_err(failed)
    }

    /// Starts copying RTT up channel 0, as `text` renders it, into `sink` as the log port. `control_block` is the
    /// `_SEGGER_RTT` address from the ELF when it has one; otherwise the target's RAM is
    /// scanned for the control block.
    pub fn start_rtt(&self, control_block: Option<u64>, text: RttText, sink: Sink) -> RttReader {
        RttReader::start(self.clone(), control_block, text, sink)
    }
}

pub(super) fn is_espressif(target: &str) -> bool {
    target.to_ascii_lowercase().starts_with("esp32")
}

fn download_options<'p>(
    options: ProbeFlashOptions,
    bars: &'p mut ProgressBars,
) -> DownloadOptions<'p> {
    let mut download = DownloadOptions::new();
    download.verify = options.verify;
    download.dry_run = options.dry_run;
    download.progress = FlashProgress::new(move |event| bars.on(event));
    download
}

/// One progress bar per flashing operation (erase, program, verify), as probe-rs reports them.
struct ProgressBars {
    shown: bool,
    current: Option<ProgressBar>,
}

impl ProgressBars {
    fn new(shown: bool) -> ProgressBars {
        ProgressBars {
            shown,
            current: None,
        }
    }

    fn on(&mut self, event: ProgressEvent) {
        if !self.shown {
            return;
        }
        match event {
            ProgressEvent::AddProgressBar { operation, total } => {
                let bar = ProgressBar::new(total.unwrap_or(0));
                if let Ok(style) =
                    ProgressStyle::with_template("{msg:>10} [{bar:40}] {bytes}/{total_bytes}")
                {
                    bar.set_style(style);
                }
                bar.set_message(format!("{operation:?}"));
                self.current = Some(bar);
            }
            ProgressEvent::Progress { size, .. } => {
                if let Some(bar) = &self.current {
                    bar.inc(size);
                }
            }
            ProgressEvent::Finished(_) | ProgressEvent::Failed(_) => {
                if let Some(bar) = self.current.take() {
                    bar.finish();
                }
            }
            _ => {}
        }
    }
}

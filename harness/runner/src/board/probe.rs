//! A board behind a debug probe (SWD or JTAG, probe-rs used as a library): flashed from an ELF
//! through `probe_rs::flashing` (ESP targets through the ESP-IDF image format of the
//! `probe-rs-espressif` plugin, which turns the ELF into bootloader, partition table and app
//! image), reset through the probe, its log read from RTT up channel 0 into the same
//! [`Observations`](crate::observe::Observations) stream serial lines go to, or from a serial
//! `log_port`. The probe is always named by its selector (never "the first probe found") and
//! held through a [`lock`] per board id, as serial boards are.
//!
//! RTT text is taken raw: defmt frames are not decoded (that would need `defmt-decoder`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once};
use std::thread::JoinHandle;
use std::time::Duration;

use esp_formats::Chip;
use indicatif::{ProgressBar, ProgressStyle};
use probe_rs::config::{Registry, RegistryError};
use probe_rs::flashing::{DownloadOptions, FileDownloadError, FlashError, FlashProgress};
use probe_rs::flashing::{ProgressEvent, image_format};
use probe_rs::probe::{DebugProbeError, DebugProbeSelector, Probe};
use probe_rs::rtt::{Rtt, ScanRegion};
use probe_rs::{Permissions, Session};

use super::inventory::{InventoryError, ProbeEntry, ProbeLog};
use super::lock::{self, BoardLock};
use super::{Board, BoardError, Capability, FirmwareKind, LabFixture};
use crate::flash::{LoaderLink, Region};
use crate::observe::Sink;
use crate::scenario::Port;

// What callers need to list and pick probes, without depending on probe-rs themselves.
pub use probe_rs::probe::DebugProbeInfo;
pub use probe_rs::probe::list::Lister;

/// How long the RTT reader waits after a poll that found nothing: RTT is a buffer in the
/// target's RAM, not an event source, so it is polled; 10 ms keeps a 1 KiB channel from
/// overflowing at UART-like rates without keeping the probe busy.
const RTT_IDLE_POLL: Duration = Duration::from_millis(10);

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

/// probe-rs 0.32 keeps Espressif targets, the ESP USB-JTAG probe driver and the ESP-IDF image
/// format in a plugin; it must be registered (once) before targets are looked up or probes
/// listed.
fn register_espressif() {
    static REGISTERED: Once = Once::new();
    REGISTERED.call_once(probe_rs_espressif::register_plugin);
}

/// probe-rs's target registry, Espressif targets included.
pub fn registry() -> Registry {
    register_espressif();
    Registry::from_builtin_families()
}

/// probe-rs's own `VID:PID[:SERIAL]` parsing, with an error that says what was expected.
pub fn parse_selector(text: &str) -> Result<DebugProbeSelector, String> {
    text.parse().map_err(|e| {
        format!(
            "probe {text:?}: {e}; expected probe-rs's VID:PID:SERIAL in hex, like \"303a:1001:F4:12:FA:01:02:03\" or \"1366:1051:000683112345\""
        )
    })
}

/// The registry's spelling of a target name; unknown or ambiguous names list close ones.
pub fn known_target(name: &str) -> Result<String, String> {
    let registry = registry();
    match registry.get_target_by_name(name) {
        Ok(target) => Ok(target.name),
        Err(RegistryError::ChipNotUnique(_, matches)) => Err(format!(
            "target {name:?} names several probe-rs targets: {matches}"
        )),
        Err(_) => {
            let close = close_target_names(&registry, name);
            Err(if close.is_empty() {
                format!("target {name:?}: not a probe-rs target (see `probe-rs chip list`)")
            } else {
                format!(
                    "target {name:?}: not a probe-rs target; close names: {}",
                    close.join(", ")
                )
            })
        }
    }
}

/// Target names sharing the longest case-insensitive prefix (three characters at least) with
/// `name`: `esp32c7` → `esp32c2, esp32c3, ...`; `nRF52840` typos → the nRF52840 variants.
fn close_target_names(registry: &Registry, name: &str) -> Vec<String> {
    const SHOWN: usize = 12;
    let wanted = name.to_ascii_lowercase();
    let common = |candidate: &str| {
        candidate
            .to_ascii_lowercase()
            .bytes()
            .zip(wanted.bytes())
            .take_while(|(a, b)| a == b)
            .count()
    };
    let names: Vec<String> = registry
        .families()
        .iter()
        .flat_map(|family| family.variants.iter().map(|chip| chip.name.clone()))
        .collect();
    let best = names.iter().map(|n| common(n)).max().unwrap_or(0);
    if best < 3 {
        return Vec::new();
    }
    let mut close: Vec<String> = names.into_iter().filter(|n| common(n) == best).collect();
    close.sort();
    close.dedup();
    close.truncate(SHOWN);
    close
}

/// The debug probes `lister` finds, for `sparring boards`.
pub fn list_probes(lister: &Lister) -> Vec<DebugProbeInfo> {
    register_espressif();
    lister.list_all()
}

/// `VID:PID:SERIAL`, the selector that names this probe and no other with another serial.
pub fn selector_text(info: &DebugProbeInfo) -> String {
    format!(
        "{:04x}:{:04x}:{}",
        info.vendor_id,
        info.product_id,
        info.serial_number.as_deref().unwrap_or("")
    )
}

/// The one probe among `lister`'s that `selector` matches; none or several is an error naming
/// what was found.
pub fn find_probe(
    lister: &Lister,
    selector: &DebugProbeSelector,
) -> Result<DebugProbeInfo, ProbeError> {
    register_espressif();
    let describe = |probes: &[DebugProbeInfo]| {
        if probes.is_empty() {
            return "no debug probes".to_owned();
        }
        probes
            .iter()
            .map(|p| format!("{} {}", p.identifier, selector_text(p)))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let mut matching = lister.list(Some(selector));
    match matching.len() {
        0 => Err(ProbeError::NoProbe {
            selector: selector.to_string(),
            found: describe(&lister.list_all()),
        }),
        1 => Ok(matching.remove(0)),
        count => Err(ProbeError::Ambiguous {
            selector: selector.to_string(),
            count,
            found: describe(&matching),
        }),
    }
}

/// Opens the one probe `selector` matches (see [`find_probe`]).
pub fn open_probe(lister: &Lister, selector: &DebugProbeSelector) -> Result<Probe, ProbeError> {
    find_probe(lister, selector)?;
    lister
        .open(selector.clone())
        .map_err(|source| ProbeError::Open {
            selector: selector.to_string(),
            source,
        })
}

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

    fn session(&self) -> MutexGuard<'_, Session> {
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

    /// Starts copying RTT up channel 0 into `sink` as the log port. `control_block` is the
    /// `_SEGGER_RTT` address from the ELF when it has one; otherwise the target's RAM is
    /// scanned for the control block.
    pub fn start_rtt(&self, control_block: Option<u64>, sink: Sink) -> RttReader {
        RttReader::start(self.clone(), control_block, sink)
    }
}

fn is_espressif(target: &str) -> bool {
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

/// A thread polling RTT up channel 0 into the observations, the RTT counterpart of
/// [`PortReader`](crate::observe::PortReader).
pub struct RttReader {
    stop: Arc<AtomicBool>,
    alive: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl RttReader {
    fn start(probe: ProbeSession, control_block: Option<u64>, sink: Sink) -> RttReader {
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
                        lock_sink(&sink).push_serial(Port::Log, &buf[..read]);
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

    /// False once the probe failed under the reader.
    pub fn is_alive(&self) -> bool {
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

/// A debug-probe board as the [`Board`] trait sees it. The trait is ESP- and serial-shaped
/// (an ESP [`Chip`], a ROM loader to flash through, DTR/RTS on a log port), so this backend
/// serves Espressif targets only, and flashes and reads RTT through its own methods
/// ([`ProbeBoard::flash`], [`ProbeBoard::start_log`]) until the trait has them.
pub struct ProbeBoard {
    entry: ProbeEntry,
    chip: Chip,
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
        let chip = Chip::from_name(&entry.target.to_ascii_lowercase()).ok_or_else(|| {
            BoardError::NotEsp {
                board: entry.id.clone(),
                target: entry.target.clone(),
            }
        })?;
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
            chip,
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

    /// Writes the inventory's ELF, verified, then starts it.
    pub fn flash(&mut self, progress: bool) -> Result<(), BoardError> {
        let options = ProbeFlashOptions {
            verify: true,
            dry_run: false,
            progress,
        };
        self.probe
            .flash_elf(&self.entry.elf, options)
            .and_then(|()| self.probe.reset())
            .map_err(|e| self.failed(e))
    }

    /// The RTT log reader, for boards whose log is RTT (`None` for a serial `log_port`).
    pub fn start_log(&self, sink: Sink) -> Option<RttReader> {
        match self.entry.log {
            ProbeLog::Rtt => {
                // An unreadable ELF leaves the reader scanning RAM; flashing reports the file.
                let control_block = std::fs::read(&self.entry.elf)
                    .ok()
                    .and_then(|elf| rtt_control_block(&elf));
                Some(self.probe.start_rtt(control_block, sink))
            }
            ProbeLog::Port(_) => None,
        }
    }
}

impl Board for ProbeBoard {
    fn name(&self) -> &str {
        &self.entry.id
    }
    fn chip(&self) -> Chip {
        self.chip
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
    fn enter_loader(&mut self) -> Result<LoaderLink, BoardError> {
        Err(BoardError::NoLoader {
            board: self.entry.id.clone(),
        })
    }
    /// Through the probe; the log port's lines are not needed.
    fn reset_into_app(&mut self, _log: &serialport::TTYPort) -> Result<(), BoardError> {
        self.probe.reset().map_err(|e| self.failed(e))
    }
    fn fixture(&mut self) -> Option<&mut dyn LabFixture> {
        None
    }
    fn elf(&self) -> Option<&Path> {
        Some(&self.entry.elf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use probe_rs::integration::FakeProbe;
    use probe_rs::probe::list::{ProbeListItem, ProbeLister};
    use probe_rs::probe::{DebugProbe, ProbeFactory};

    /// Stands for a USB driver in listings; opening goes through [`FakeLister`].
    #[derive(Debug)]
    struct FakeDriver;

    impl std::fmt::Display for FakeDriver {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("fake")
        }
    }

    impl ProbeFactory for FakeDriver {
        fn open(&self, _: &DebugProbeSelector) -> Result<Box<dyn DebugProbe>, DebugProbeError> {
            Ok(Box::new(FakeProbe::with_mocked_core()))
        }
        fn list_probes(&self) -> Vec<ProbeListItem> {
            Vec::new()
        }
    }

    /// Probes "attached" to this machine: each opens as probe-rs's mocked ARM core, whose
    /// memory reads come from `memory`'s loadable segments when given (zeros otherwise).
    #[derive(Debug)]
    struct FakeLister {
        probes: Vec<DebugProbeInfo>,
        memory: Option<PathBuf>,
    }

    impl ProbeLister for FakeLister {
        fn open(&self, _: &DebugProbeSelector) -> Result<Probe, DebugProbeError> {
            let core = match &self.memory {
                Some(elf) => FakeProbe::with_mocked_core_and_binary(elf),
                None => FakeProbe::with_mocked_core(),
            };
            Ok(Probe::from_specific_probe(Box::new(core)))
        }
        fn list_with_access(&self, selector: Option<&DebugProbeSelector>) -> Vec<ProbeListItem> {
            self.probes
                .iter()
                .filter(|info| selector.is_none_or(|s| s.matches_probe(info)))
                .cloned()
                .map(ProbeListItem::accessible)
                .collect()
        }
    }

    fn lister(serials: &[&str]) -> Lister {
        lister_with_memory(serials, None)
    }

    fn lister_with_memory(serials: &[&str], memory: Option<PathBuf>) -> Lister {
        let probes = serials
            .iter()
            .map(|serial| {
                DebugProbeInfo::new(
                    "J-Link",
                    0x1366,
                    0x1051,
                    Some((*serial).to_owned()),
                    &FakeDriver,
                    None,
                    false,
                )
            })
            .collect();
        Lister::with_lister(Box::new(FakeLister { probes, memory }))
    }

    fn selector(text: &str) -> DebugProbeSelector {
        parse_selector(text).expect("a valid selector")
    }

    /// STM32F411's flash and RAM, where the test ELFs put code and the RTT control block.
    const FLASH: u64 = 0x0800_0000;
    const RAM: u64 = 0x2000_0000;
    const TARGET: &str = "STM32F411RETx";

    /// A minimal executable ARM ELF: one PT_LOAD segment per `(address, bytes)`, the first as
    /// `.text`, the others as `.data` (probe-rs's mocked core serves only segments holding a
    /// section), and, when `rtt` is given, a `_SEGGER_RTT` symbol there in a `.bss` section.
    fn arm_elf(segments: &[(u64, &[u8])], rtt: Option<u64>) -> Vec<u8> {
        use object::elf;
        use object::write::elf::{FileHeader, ProgramHeader, SectionHeader, Sym, Writer};
        const RTT_BLOCK_SIZE: u64 = 168;
        let (text_address, code) = segments[0];
        let mut out = Vec::new();
        let mut writer = Writer::new(object::Endianness::Little, false, &mut out);
        writer.reserve_file_header();
        writer.reserve_program_headers(u32::try_from(segments.len()).expect("few segments"));
        let offsets: Vec<u64> = segments
            .iter()
            .map(|(_, bytes)| writer.reserve(bytes.len() as u64, 4))
            .collect();
        writer.reserve_null_section_index();
        let text_name = writer.add_section_name(b".text");
        writer.reserve_section_index();
        let data_name = writer.add_section_name(b".data");
        for _ in &segments[1..] {
            writer.reserve_section_index();
        }
        let bss = rtt.map(|_| {
            let name = writer.add_section_name(b".bss");
            (name, writer.reserve_section_index())
        });
        let symbol_name = rtt.map(|_| writer.add_string(b"_SEGGER_RTT"));
        writer.reserve_null_symbol_index();
        if let Some((_, index)) = bss {
            writer.reserve_symbol_index(Some(index));
        }
        writer.reserve_symtab_section_index();
        writer.reserve_strtab_section_index();
        writer.reserve_shstrtab_section_index();
        writer.reserve_symtab();
        writer.reserve_strtab().expect("string table reserved");
        writer.reserve_shstrtab().expect("section names reserved");
        writer.reserve_section_headers();

        writer
            .write_file_header(&FileHeader {
                os_abi: elf::ELFOSABI_NONE,
                abi_version: 0,
                e_type: elf::ET_EXEC,
                e_machine: elf::EM_ARM,
                // Thumb entry point, as Cortex-M code has.
                e_entry: text_address | 1,
                e_flags: elf::FileFlags(0x0500_0000),
            })
            .expect("file header written");
        writer.write_align_program_headers();
        for ((address, bytes), offset) in segments.iter().zip(&offsets) {
            writer.write_program_header(&ProgramHeader {
                p_type: elf::PT_LOAD,
                p_flags: elf::ProgramFlags(elf::PF_R.0 | elf::PF_X.0),
                p_offset: *offset,
                p_vaddr: *address,
                p_paddr: *address,
                p_filesz: bytes.len() as u64,
                p_memsz: bytes.len() as u64,
                p_align: 4,
            });
        }
        for (_, bytes) in segments {
            writer.write_align(4);
            writer.write(bytes);
        }
        writer.write_null_symbol();
        if let (Some((_, index)), Some(address)) = (bss, rtt) {
            writer.write_symbol(&Sym {
                section: Some(index.0),
                st_name: writer.string_offset(symbol_name),
                st_info: elf::SymbolInfo::new(elf::STB_GLOBAL, elf::STT_OBJECT),
                st_other: elf::SymbolOther::default(),
                st_shndx: elf::SymbolSection::new(index.0),
                st_value: address,
                st_size: RTT_BLOCK_SIZE,
            });
        }
        writer.write_strtab();
        writer.write_shstrtab();
        writer.write_null_section_header();
        writer.write_section_header(&SectionHeader {
            sh_name: writer.section_name_offset(Some(text_name)),
            sh_type: elf::SHT_PROGBITS,
            sh_flags: elf::SectionFlags(elf::SHF_ALLOC.0 | elf::SHF_EXECINSTR.0),
            sh_addr: text_address,
            sh_offset: offsets[0],
            sh_size: code.len() as u64,
            sh_addralign: 4,
            ..Default::default()
        });
        for ((address, bytes), offset) in segments.iter().zip(&offsets).skip(1) {
            writer.write_section_header(&SectionHeader {
                sh_name: writer.section_name_offset(Some(data_name)),
                sh_type: elf::SHT_PROGBITS,
                sh_flags: elf::SectionFlags(elf::SHF_ALLOC.0 | elf::SHF_WRITE.0),
                sh_addr: *address,
                sh_offset: *offset,
                sh_size: bytes.len() as u64,
                sh_addralign: 4,
                ..Default::default()
            });
        }
        if let (Some((name, _)), Some(address)) = (bss, rtt) {
            writer.write_section_header(&SectionHeader {
                sh_name: writer.section_name_offset(Some(name)),
                sh_type: elf::SHT_NOBITS,
                sh_flags: elf::SectionFlags(elf::SHF_ALLOC.0 | elf::SHF_WRITE.0),
                sh_addr: address,
                sh_size: RTT_BLOCK_SIZE,
                sh_addralign: 4,
                ..Default::default()
            });
        }
        writer.write_symtab_section_header(1);
        writer.write_strtab_section_header();
        writer.write_shstrtab_section_header();
        out
    }

    /// RAM as the firmware leaves it once RTT is up: the control block at `at` with one up
    /// channel (SEGGER's layout, 32-bit) whose buffer, right after it, holds `text` unread.
    fn rtt_memory(at: u64, text: &[u8]) -> Vec<u8> {
        const HEADER: usize = 16 + 4 + 4;
        const CHANNEL: usize = 6 * 4;
        const BUFFER: usize = 256;
        let buffer_at = at + (HEADER + CHANNEL) as u64;
        let word = |value: u64| u32::try_from(value).expect("32-bit").to_le_bytes();
        let mut memory = Vec::new();
        memory.extend_from_slice(b"SEGGER RTT\0\0\0\0\0\0");
        memory.extend_from_slice(&word(1)); // up channels
        memory.extend_from_slice(&word(0)); // down channels
        memory.extend_from_slice(&word(0)); // name: none
        memory.extend_from_slice(&word(buffer_at));
        memory.extend_from_slice(&word(BUFFER as u64));
        memory.extend_from_slice(&word(text.len() as u64)); // write offset
        memory.extend_from_slice(&word(0)); // read offset
        memory.extend_from_slice(&word(0)); // flags
        memory.extend_from_slice(text);
        // The fake core reads a segment's bytes short of its very end: pad past the buffer.
        memory.resize(HEADER + CHANNEL + BUFFER + 16, 0);
        memory
    }

    fn elf_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, bytes).expect("ELF written");
        path
    }

    fn dry_run() -> ProbeFlashOptions {
        ProbeFlashOptions {
            verify: false,
            dry_run: true,
            progress: false,
        }
    }

    #[test]
    fn a_selector_matching_no_probe_names_the_probes_found() {
        let error = open_probe(&lister(&["000111"]), &selector("1366:1051:999999"))
            .expect_err("no probe has serial 999999");
        let said = error.to_string();
        assert!(matches!(error, ProbeError::NoProbe { .. }), "{said}");
        assert!(said.contains("1366:1051:000111"), "{said}");
    }

    #[test]
    fn two_probes_matching_a_selector_are_refused_naming_both() {
        let error = open_probe(&lister(&["000111", "000222"]), &selector("1366:1051"))
            .expect_err("two J-Links match VID:PID alone");
        let said = error.to_string();
        assert!(
            matches!(error, ProbeError::Ambiguous { count: 2, .. }),
            "{said}"
        );
        assert!(said.contains("000111") && said.contains("000222"), "{said}");
    }

    #[test]
    fn the_serial_number_picks_one_of_two_probes() {
        open_probe(
            &lister(&["000111", "000222"]),
            &selector("1366:1051:000222"),
        )
        .expect("exactly one probe has serial 000222");
    }

    #[test]
    fn selector_text_that_is_not_vid_pid_is_refused() {
        let said = parse_selector("jlink").expect_err("not VID:PID");
        assert!(said.contains("VID:PID:SERIAL"), "{said}");
        // An ESP USB-JTAG serial number is a MAC: colons after the PID belong to it.
        let esp = selector("303a:1001:F4:12:FA:01:02:03");
        assert_eq!(esp.serial_number.as_deref(), Some("F4:12:FA:01:02:03"));
    }

    #[test]
    fn an_elf_in_flash_dry_run_flashes_and_one_outside_flash_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let probe = ProbeSession::attach(&lister(&["000111"]), &selector("1366:1051"), TARGET)
            .expect("the mocked core attaches as an STM32F411");
        // A vector table's worth of bytes: initial SP, then the reset vector.
        let code: Vec<u8> = (0u8..64).collect();
        let in_flash = elf_file(
            dir.path(),
            "in-flash.elf",
            &arm_elf(&[(FLASH, &code)], None),
        );
        probe
            .flash_elf(&in_flash, dry_run())
            .expect("an ELF at the flash address is accepted");
        let nowhere = elf_file(
            dir.path(),
            "nowhere.elf",
            &arm_elf(&[(0x9000_0000, &code)], None),
        );
        let error = probe
            .flash_elf(&nowhere, dry_run())
            .expect_err("no flash or RAM at 0x90000000 on an STM32F411");
        assert!(matches!(error, ProbeError::FlashFile { .. }), "{error}");
    }

    #[test]
    fn regions_dry_run_flash_at_flash_addresses_only() {
        let probe = ProbeSession::attach(&lister(&["000111"]), &selector("1366:1051"), TARGET)
            .expect("the mocked core attaches as an STM32F411");
        let region = |offset: u64| Region {
            offset: u32::try_from(offset).expect("32-bit address"),
            data: vec![0xa5; 256],
            name: "app.bin".into(),
        };
        probe
            .flash_regions(&[region(FLASH)], dry_run())
            .expect("bytes at the flash address are accepted");
        let error = probe
            .flash_regions(&[region(0x9000_0000)], dry_run())
            .expect_err("no flash at 0x90000000");
        assert!(
            error.to_string().contains("app.bin at 0x90000000"),
            "{error}"
        );
    }

    #[test]
    fn the_rtt_control_block_is_found_through_the_segger_symbol() {
        let with = arm_elf(&[(FLASH, &[0; 16])], Some(RAM + 0x100));
        assert_eq!(rtt_control_block(&with), Some(RAM + 0x100));
        let without = arm_elf(&[(FLASH, &[0; 16])], None);
        assert_eq!(rtt_control_block(&without), None);
    }

    #[test]
    fn rtt_text_arrives_in_the_observations_as_log_lines() {
        let dir = tempfile::tempdir().expect("temp dir");
        let block = RAM + 0x100;
        let memory = rtt_memory(block, b"app: sensor ready\n");
        let elf = arm_elf(&[(FLASH, &[0; 16]), (block, &memory)], Some(block));
        let path = elf_file(dir.path(), "rtt.elf", &elf);
        let lister = lister_with_memory(&["000111"], Some(path));
        let probe = ProbeSession::attach(&lister, &selector("1366:1051"), TARGET)
            .expect("the mocked core attaches as an STM32F411");
        let observations = crate::observe::Observations::new();
        let sink: Sink = Arc::new(Mutex::new(observations.clone()));
        let reader = probe.start_rtt(rtt_control_block(&elf), sink);
        // The mocked core ignores the reader's write of the read offset, so the same text
        // comes again at each poll; what counts is that it arrives as lines of the log port.
        let seen = observations.wait_for(
            std::time::Instant::now() + Duration::from_secs(10),
            |observed| {
                observed
                    .log
                    .lines()
                    .iter()
                    .any(|line| line.text == "app: sensor ready")
                    .then_some(())
            },
        );
        assert!(
            seen.is_some(),
            "no RTT line in the log: {:?}",
            observations.lock().log.lines()
        );
        assert!(reader.is_alive());
        assert!(
            observations.lock().at.lines().is_empty(),
            "RTT is the log port only"
        );
    }

    #[test]
    fn an_arm_target_is_not_opened_as_a_board() {
        let entry = ProbeEntry {
            id: "nrf".into(),
            probe: selector("1366:1051"),
            target: "nRF52840_xxAA".into(),
            log: ProbeLog::Rtt,
            elf: PathBuf::from("app.elf"),
            firmware: FirmwareKind::App,
            origin: "boards.toml:1".into(),
        };
        let error = ProbeBoard::open(&entry, &lister(&["000111"]), false, &mut |_| {})
            .err()
            .expect("the Board trait names boards by ESP chip");
        assert!(matches!(error, BoardError::NotEsp { .. }), "{error}");
    }

    #[test]
    fn targets_are_checked_against_the_registry_with_close_names() {
        assert_eq!(known_target("esp32c3").as_deref(), Ok("esp32c3"));
        assert_eq!(
            known_target("nRF52840_xxAA").as_deref(),
            Ok("nRF52840_xxAA")
        );
        let said = known_target("esp32c7").expect_err("there is no ESP32-C7");
        assert!(
            said.contains("esp32c3") && said.contains("esp32c6"),
            "{said}"
        );
    }
}

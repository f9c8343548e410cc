//! A board on the bench: the board, its open log (a serial port, or the board's own reader:
//! RTT), its AT port, and who it is — chip, MAC and flash size as its ROM loader or debug probe
//! says, the firmware as its boot log says. Ports that disappear (a cable, USB re-enumeration
//! on reset) are reopened within the lab's deadline.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use esp_formats::image::AppDescriptor;

use crate::board::{Board, BoardError, LogReader};
use crate::events::{BoardIdentity, FirmwareIdentity};
use crate::flash::{FlashOptions, FlashReport, Region};
use crate::observe::{Observations, Observed, PortReader, Sink};
use crate::scenario::Port;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Board(#[from] BoardError),
    #[error("board {board} is declared {declared} but its ROM loader or probe says {found}")]
    WrongChip {
        board: String,
        declared: String,
        found: String,
    },
    #[error("board {board}: the {port} port {path} {problem}")]
    Port {
        board: String,
        port: &'static str,
        path: String,
        problem: String,
    },
}

/// A board with its open ports.
pub struct Bench {
    pub board: Box<dyn Board>,
    sink: Sink,
    readers: BTreeMap<&'static str, PortReader>,
    /// The log when the board reads it itself (RTT) instead of a serial port.
    own_log: Option<Box<dyn LogReader>>,
    pub identity: BoardIdentity,
    /// The app descriptor of the last app flashed (its full ELF SHA-256).
    flashed_app: Option<AppDescriptor>,
    reopen_within: Duration,
    /// Why the board can no longer be used (its port went away for good).
    pub lost: Option<String>,
}

pub fn port_name(port: Port) -> &'static str {
    match port {
        Port::Log => "log",
        Port::At => "at",
    }
}

impl Bench {
    /// Asks the ROM loader or probe who the board is, opens its log and ports and starts its
    /// app.
    pub fn open(mut board: Box<dyn Board>, reopen_within: Duration) -> Result<Bench, BenchError> {
        let name = board.name().to_owned();
        let chip = board.identify()?;
        let declared = board.target();
        if chip.chip != declared.name() {
            return Err(BenchError::WrongChip {
                board: name,
                declared: declared.name().to_owned(),
                found: chip.chip,
            });
        }
        let sink: Sink = std::sync::Arc::new(std::sync::Mutex::new(Observations::new()));
        let mut bench = Bench {
            identity: BoardIdentity {
                name,
                chip: chip.chip,
                mac: chip.mac,
                flash_size: chip.flash_size,
                firmware: None,
            },
            board,
            sink,
            readers: BTreeMap::new(),
            own_log: None,
            flashed_app: None,
            reopen_within,
            lost: None,
        };
        bench.attach_log()?;
        if bench.board.port(Port::At).is_some() {
            bench.attach(Port::At)?;
        }
        bench.reset_into_app()?;
        Ok(bench)
    }

    /// From now on, what the ports carry goes to `observations`.
    pub fn observe_into(&self, observations: std::sync::Arc<Observations>) {
        *self.sink.lock().unwrap_or_else(|p| p.into_inner()) = observations;
    }

    fn port_error(&self, port: Port, path: &std::path::Path, problem: String) -> BenchError {
        BenchError::Port {
            board: self.identity.name.clone(),
            port: port_name(port),
            path: path.display().to_string(),
            problem,
        }
    }

    /// Opens (or reopens) a port: reader into the sink, writer kept.
    fn attach(&mut self, port: Port) -> Result<(), BenchError> {
        let Some(path) = self.board.port(port) else {
            return Err(self.port_error(port, &PathBuf::new(), "is not in the inventory".into()));
        };
        let reader = PortReader::start(&path, port, self.sink.clone())
            .map_err(|e| self.port_error(port, &path, format!("cannot be opened: {e}")))?;
        self.readers.insert(port_name(port), reader);
        Ok(())
    }

    /// The log: its serial port, or the board's own reader (RTT).
    fn attach_log(&mut self) -> Result<(), BenchError> {
        if self.board.port(Port::Log).is_some() {
            return self.attach(Port::Log);
        }
        self.own_log = self.board.open_log(self.sink.clone());
        Ok(())
    }

    /// Closes a port so a flasher can have it (ports open exclusively).
    fn detach(&mut self, port: Port) {
        self.readers.remove(port_name(port));
    }

    pub fn has_port(&self, port: Port) -> bool {
        self.readers.contains_key(port_name(port))
    }

    /// Reopens ports whose reader lost them, within the lab's deadline; a port that does not
    /// come back makes the board lost.
    pub fn ensure_ports(&mut self) -> Result<(), BenchError> {
        if let Some(reason) = &self.lost {
            return Err(self.port_error(Port::Log, &PathBuf::new(), reason.clone()));
        }
        if self.own_log.as_ref().is_some_and(|log| !log.is_alive()) {
            let problem = "stopped answering (the probe or the target went away)".into();
            let error = self.port_error(Port::Log, Path::new("(RTT)"), problem);
            self.lost = Some(error.to_string());
            return Err(error);
        }
        for port in [Port::Log, Port::At] {
            let Some(reader) = self.readers.get(port_name(port)) else {
                continue;
            };
            if reader.is_alive() {
                continue;
            }
            let path = self.board.port(port).unwrap_or_default();
            self.detach(port);
            let deadline = Instant::now() + self.reopen_within;
            // Nothing announces a port's return without udev: look again, bounded in time.
            let mut last = String::new();
            while Instant::now() < deadline {
                match self.attach(port) {
                    Ok(()) => break,
                    Err(BenchError::Port { problem, .. }) => last = problem,
                    Err(e) => last = e.to_string(),
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            if !self.has_port(port) {
                let tried = if last.is_empty() {
                    String::new()
                } else {
                    format!(" (last try: {last})")
                };
                let reason = format!(
                    "disappeared and did not come back within {} ms{tried}",
                    self.reopen_within.as_millis()
                );
                let error = self.port_error(port, &path, reason);
                self.lost = Some(error.to_string());
                return Err(error);
            }
        }
        Ok(())
    }

    pub fn write(&mut self, port: Port, bytes: &[u8]) -> Result<(), BenchError> {
        let path = self.board.port(port).unwrap_or_default();
        let Some(reader) = self.readers.get(port_name(port)) else {
            return Err(self.port_error(
                port,
                &path,
                "is not open (the board has no such port)".into(),
            ));
        };
        let written = reader.write(bytes);
        written.map_err(|e| self.port_error(port, &path, format!("cannot be written: {e}")))
    }

    /// Flash (ROM loader or probe), then back into the app; the log is closed meanwhile.
    pub fn flash(&mut self, regions: &[Region]) -> Result<(), BenchError> {
        self.flash_with(regions, &FlashOptions::default())?;
        self.reset_into_app()
    }

    /// An ELF the board's loader writes as it is (a probe board's), then back into the app.
    pub fn flash_elf(&mut self, elf: &Path) -> Result<(), BenchError> {
        self.with_log_closed(|board| board.flash_elf(elf, &FlashOptions::default()))?;
        self.flashed_app = None;
        self.reset_into_app()
    }

    /// Flash with `options`; the board stays stopped (in its loader) until
    /// [`Bench::reset_into_app`].
    pub fn flash_with(
        &mut self,
        regions: &[Region],
        options: &FlashOptions,
    ) -> Result<FlashReport, BenchError> {
        let report = self.with_log_closed(|board| board.flash(regions, options))?;
        self.flashed_app = regions.iter().find_map(|r| {
            esp_formats::image::parse(&r.data)
                .ok()
                .and_then(|image| image.descriptor)
        });
        Ok(report)
    }

    /// Firmware is written with the log closed (a flasher holds the port exclusively; RTT's
    /// control block moves); the log opens again whether writing worked or not.
    fn with_log_closed<T>(
        &mut self,
        write: impl FnOnce(&mut dyn Board) -> Result<T, BoardError>,
    ) -> Result<T, BenchError> {
        self.detach(Port::Log);
        self.own_log = None;
        let written = write(self.board.as_mut());
        self.attach_log()?;
        Ok(written?)
    }

    pub fn reset_into_app(&mut self) -> Result<(), BenchError> {
        let board = &mut self.board;
        let reset = match self.readers.get(port_name(Port::Log)) {
            Some(log) => log.with_port(|port| board.reset_into_app(Some(port))),
            // No serial log (RTT): the board resets by other means (its probe).
            None if board.port(Port::Log).is_none() => Some(board.reset_into_app(None)),
            None => None,
        };
        match reset {
            Some(done) => Ok(done?),
            None => {
                let path = self.board.port(Port::Log).unwrap_or_default();
                Err(self.port_error(Port::Log, &path, "is not open".into()))
            }
        }
    }

    /// The firmware as the last boot in `observed` announced it (ESP-IDF's app_init lines),
    /// with the full ELF SHA-256 when it is the app sparring flashed.
    pub fn note_firmware(&mut self, observed: &Observed) {
        let Some(booted) = booted_firmware(observed) else {
            return;
        };
        let full = self.flashed_app.as_ref().and_then(|app| {
            let hex = hex::encode(app.app_elf_sha256);
            (app.project_name == booted.project
                && app.version == booted.version
                && hex.starts_with(booted.elf_sha256.trim_end_matches('.')))
            .then_some(hex)
        });
        self.identity.firmware = Some(FirmwareIdentity {
            elf_sha256: full.unwrap_or(booted.elf_sha256),
            ..booted
        });
    }
}

/// `Project name:`, `App version:`, `ELF file SHA256:` of the last boot on the log port
/// (ESP-IDF `components/esp_system/startup.c` / `app_init`: printed at every app start).
fn booted_firmware(observed: &Observed) -> Option<FirmwareIdentity> {
    let value =
        |line: &str, key: &str| line.split_once(key).map(|(_, rest)| rest.trim().to_owned());
    let mut firmware: Option<FirmwareIdentity> = None;
    for line in observed.log.lines() {
        let text = &line.text;
        if let Some(project) = value(text, "Project name:") {
            firmware = Some(FirmwareIdentity {
                project,
                version: String::new(),
                elf_sha256: String::new(),
            });
        } else if let Some(f) = firmware.as_mut() {
            if let Some(version) = value(text, "App version:") {
                f.version = version;
            } else if let Some(sha) = value(text, "ELF file SHA256:") {
                f.elf_sha256 = sha;
            }
        }
    }
    firmware.filter(|f| !f.version.is_empty())
}

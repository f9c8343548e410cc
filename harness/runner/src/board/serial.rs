//! A board on serial ports, as a CI runner has them: a log port with the ROM loader behind it,
//! perhaps an AT port, and a reset that is DTR/RTS (espflash's own sequences), lab commands,
//! or nothing. It offers no lab capability: what a scenario learns comes from its ports and
//! the services.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use espflash::connection::ResetBeforeOperation;
use wait_timeout::ChildExt;

use super::inventory::{BoardEntry, FoundPort, PortSelector, ResetMethod, enumerate};
use super::lock::{self, BoardLock};
use super::{Board, BoardError, Capability, FirmwareKind, FlashContent, LabFixture};
use super::{Target, flash_through_loader, identify_through_loader};
use crate::flash::{ChipInfo, FlashError, FlashOptions, FlashReport, LoaderLink, Region};
use crate::flash::{hard_reset, probe};
use crate::scenario::Port;

/// How long a reset command may run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);

pub struct SerialBoard {
    entry: BoardEntry,
    /// The log port as found at open; USB-selected ports are looked up again on each use.
    log: FoundPort,
    at: Option<FoundPort>,
    _lock: BoardLock,
}

impl SerialBoard {
    /// Takes the board (exclusive) and finds its ports.
    pub fn open(
        entry: &BoardEntry,
        wait: bool,
        waiting: &mut dyn FnMut(&str),
    ) -> Result<SerialBoard, BoardError> {
        let lock = lock::acquire(&entry.id, wait, waiting)?;
        let ports = enumerate();
        let absent = |what: String| super::inventory::InventoryError::Absent {
            id: entry.id.clone(),
            what: format!("{what} ({})", entry.origin),
        };
        let log = match &entry.log {
            PortSelector::Mac(mac) => find_by_mac(entry, mac, &ports).map_err(absent)?,
            selector => selector
                .resolve(&ports)
                .map_err(|e| absent(format!("log port: {e}")))?,
        };
        let at = entry
            .at
            .as_ref()
            .map(|s| s.resolve(&ports))
            .transpose()
            .map_err(|e| absent(format!("AT port: {e}")))?;
        Ok(SerialBoard {
            entry: entry.clone(),
            log,
            at,
            _lock: lock,
        })
    }

    fn run_command(&self, command: &[String]) -> Result<(), BoardError> {
        let shown = command.join(" ");
        let problem = |problem: String| BoardError::Command {
            board: self.entry.id.clone(),
            command: shown.clone(),
            problem,
        };
        let (program, args) = command
            .split_first()
            .ok_or_else(|| problem("is empty".into()))?;
        let mut child = Command::new(program)
            .args(args)
            .stdout(std::process::Stdio::null())
            .spawn()
            .map_err(|e| problem(format!("could not start: {e}")))?;
        match child.wait_timeout(COMMAND_TIMEOUT) {
            Ok(Some(status)) if status.success() => Ok(()),
            Ok(Some(status)) => Err(problem(format!("failed ({status})"))),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(problem(format!(
                    "did not finish within {} s",
                    COMMAND_TIMEOUT.as_secs()
                )))
            }
            Err(e) => Err(problem(format!("waiting for it: {e}"))),
        }
    }

    /// A USB port may have a new path after re-enumeration: look it up again.
    fn current(&self, selector: &PortSelector, found: &FoundPort) -> PathBuf {
        match selector {
            PortSelector::Usb(_) => selector
                .resolve(&enumerate())
                .map_or_else(|_| found.path.clone(), |p| p.path),
            _ => found.path.clone(),
        }
    }

    /// Into the ROM loader by the entry's reset method; how espflash reaches it then.
    fn enter_loader(&mut self) -> Result<LoaderLink, BoardError> {
        let before = match &self.entry.reset {
            // espflash picks classic or USB-JTAG-serial from the port's PID.
            ResetMethod::DtrRts => ResetBeforeOperation::DefaultReset,
            ResetMethod::None => ResetBeforeOperation::NoReset,
            ResetMethod::Commands { download, .. } => {
                self.run_command(download)?;
                ResetBeforeOperation::NoReset
            }
        };
        let mut log = self.log.clone();
        log.path = self.current(&self.entry.log, &self.log);
        Ok(loader_link(&log, before))
    }
}

/// Probes every USB serial port's ROM loader (DTR/RTS reset) for the MAC.
fn find_by_mac(entry: &BoardEntry, mac: &str, ports: &[FoundPort]) -> Result<FoundPort, String> {
    let mut asked = Vec::new();
    for port in ports.iter().filter(|p| p.usb.is_some()) {
        let link = loader_link(port, ResetBeforeOperation::DefaultReset);
        match probe(&link) {
            Ok(info) if info.mac.eq_ignore_ascii_case(mac) => return Ok(port.clone()),
            Ok(info) => asked.push(format!("{} has {}", port.path.display(), info.mac)),
            Err(e) => asked.push(format!("{}: {e}", port.path.display())),
        }
    }
    Err(format!(
        "no port's ROM loader reports MAC {mac} for {} ({})",
        entry.chip.name(),
        if asked.is_empty() {
            "no USB serial ports".to_owned()
        } else {
            asked.join("; ")
        }
    ))
}

/// Probes a port no inventory entry describes (see [`unlisted_link`]).
pub fn probe_unlisted(port: &FoundPort) -> Result<ChipInfo, FlashError> {
    probe(&unlisted_link(port))
}

/// How to reach the loader behind a port no inventory entry describes: espflash's DTR/RTS
/// reset where the port is USB (it has the lines), none elsewhere (a pty, a bare UART).
pub fn unlisted_link(port: &FoundPort) -> LoaderLink {
    let before = match port.usb {
        Some(_) => ResetBeforeOperation::DefaultReset,
        None => ResetBeforeOperation::NoReset,
    };
    loader_link(port, before)
}

fn loader_link(port: &FoundPort, before: ResetBeforeOperation) -> LoaderLink {
    let mut link = LoaderLink::plain(port.path.clone(), before);
    if let Some(usb) = &port.usb {
        link.usb = usb.clone();
    }
    link
}

impl Board for SerialBoard {
    fn name(&self) -> &str {
        &self.entry.id
    }
    fn target(&self) -> Target {
        Target::Esp(self.entry.chip)
    }
    fn firmware(&self) -> FirmwareKind {
        self.entry.firmware
    }
    fn port(&self, port: Port) -> Option<PathBuf> {
        match port {
            Port::Log => Some(self.current(&self.entry.log, &self.log)),
            Port::At => match (&self.entry.at, &self.at) {
                (Some(selector), Some(found)) => Some(self.current(selector, found)),
                _ => None,
            },
        }
    }
    fn capabilities(&self) -> &[Capability] {
        &[]
    }

    fn identify(&mut self) -> Result<ChipInfo, BoardError> {
        let link = self.enter_loader()?;
        identify_through_loader(&link, &self.entry.id)
    }

    fn flash(
        &mut self,
        regions: &[Region],
        options: &FlashOptions,
    ) -> Result<FlashReport, BoardError> {
        let link = self.enter_loader()?;
        flash_through_loader(&link, self.entry.chip, &self.entry.id, regions, options)
    }

    fn reset_into_app(&mut self, log: Option<&serialport::TTYPort>) -> Result<(), BoardError> {
        match &self.entry.reset {
            ResetMethod::DtrRts => {
                let port_name = self.log.path.display().to_string();
                let Some(log) = log else {
                    return Err(BoardError::LogPortClosed {
                        board: self.entry.id.clone(),
                        port: port_name,
                    });
                };
                let lines = |source: espflash::Error| BoardError::Lines {
                    board: self.entry.id.clone(),
                    port: port_name.clone(),
                    source: Box::new(source),
                };
                let handle = log
                    .try_clone_native()
                    .map_err(|e| lines(espflash::Error::from(e)))?;
                let usb = loader_link(&self.log, ResetBeforeOperation::NoReset).usb;
                hard_reset(handle, usb).map_err(lines)
            }
            ResetMethod::None => Err(BoardError::NoReset {
                board: self.entry.id.clone(),
            }),
            ResetMethod::Commands { run, .. } => self.run_command(run),
        }
    }

    fn fixture(&mut self) -> Option<&mut dyn LabFixture> {
        None
    }

    fn flash_content(&self) -> FlashContent {
        self.entry
            .firmware_files
            .clone()
            .map_or(FlashContent::Held, FlashContent::Files)
    }

    fn elf(&self) -> Option<&std::path::Path> {
        self.entry.elf.as_deref()
    }
}

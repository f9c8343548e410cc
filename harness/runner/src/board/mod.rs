//! Boards behind one small trait, so a scenario never knows what its board is: every board has
//! an identity something outside its firmware tells (a ROM loader, a debug probe), a way to
//! write firmware and a way back into its app, and a log (a serial port, or RTT through a
//! probe) plus an optional AT port. What only some boards or labs have — a network the harness can shape, heap it can take
//! away, firmware defect switches, a power switch — are [`Capability`]s the backend declares and
//! reaches through [`LabFixture`]. A fixture is like a USB relay or an access point: it acts on
//! the board, it never reports facts about it (those come from the ports and the services).
//!
//! Backends: [`virtual_board`] (the in-process virtual ESP32, every capability), [`serial`]
//! (any board on serial ports, named in a `boards.toml` [`inventory`]) and [`probe`] (a board
//! behind a debug probe, through probe-rs).

pub mod inventory;
pub mod lock;
pub mod probe;
pub mod serial;
pub mod virtual_board;

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use esp_formats::Chip;
use serde::{Deserialize, Serialize};

use crate::flash::{ChipInfo, FlashError, FlashOptions, FlashReport, LoaderLink, Region};
use crate::observe::Sink;
use crate::scenario::{AtStorage, Port};

/// What a board or its lab offers beyond flashing, resetting and its ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Capability {
    /// The harness shapes the board's network: access points, a hosts table (lab names resolve
    /// to the services), port redirects (SNTP's 123).
    LabNetwork,
    /// Heap can be taken away from the firmware (low-heap scenarios).
    HeapControl,
    /// Defect switches built into the (virtual) firmware.
    Defects,
    /// Power off and on.
    Power,
    /// The firmware's own waits can run faster than real time (virtual boards).
    TimeScale,
}

impl Capability {
    pub const ALL: [Capability; 5] = [
        Capability::LabNetwork,
        Capability::HeapControl,
        Capability::Defects,
        Capability::Power,
        Capability::TimeScale,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Capability::LabNetwork => "lab-network",
            Capability::HeapControl => "heap-control",
            Capability::Defects => "defects",
            Capability::Power => "power",
            Capability::TimeScale => "time-scale",
        }
    }

    pub fn from_name(name: &str) -> Option<Capability> {
        Capability::ALL.into_iter().find(|c| c.name() == name)
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which scenario library a board's firmware speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FirmwareKind {
    #[default]
    EspAt,
    App,
}

impl FirmwareKind {
    /// The scenario `[board] personality` this kind runs.
    pub fn personality(self) -> &'static str {
        match self {
            FirmwareKind::EspAt => "esp-at",
            FirmwareKind::App => "app",
        }
    }
}

/// What a board is built around.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// An ESP chip: ROM loader, ESP-IDF images, the ESP-AT catalog.
    Esp(Chip),
    /// Another chip a debug probe serves, by probe-rs's target name (`STM32F411RETx`).
    Other(String),
}

impl Target {
    /// `esp32c3`, `STM32F411RETx`: what `--each chip` groups by and `[board] chips` names.
    pub fn name(&self) -> &str {
        match self {
            Target::Esp(chip) => chip.name(),
            Target::Other(name) => name,
        }
    }

    pub fn esp(&self) -> Option<Chip> {
        match self {
            Target::Esp(chip) => Some(*chip),
            Target::Other(_) => None,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a scenario's `flash` step writes on a board, as its backend decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlashContent {
    /// sparring's generated ESP-AT image set, at the step's `version`, in the scenario's
    /// `at_storage` layout: a virtual board holds no other firmware.
    GeneratedEspAt,
    /// The user's firmware, as the board's inventory entry names it (`firmware_files`).
    Files(inventory::FirmwareFiles),
    /// An ELF the board's own loader writes as it is ([`Board::flash_elf`]: a debug probe).
    Elf(PathBuf),
    /// Nothing: the board is reset into the firmware it holds. A real module is never
    /// overwritten with the generated image, an app without code.
    Held,
}

/// The network a board shares with the services, as a lab fixture sets it up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabNetwork {
    /// Names the board resolves (`broker.sparring.test` → the services' address).
    pub hosts: BTreeMap<String, IpAddr>,
    /// Destination port → where the service really listens (SNTP's 123).
    pub ports: BTreeMap<u16, u16>,
    pub wifi: Wifi,
}

/// The access point ESP-AT modules join (`AT+CWJAP`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Wifi {
    pub ssid: String,
    pub password: String,
}

/// Acts on a board the way lab equipment does; each method needs its [`Capability`].
pub trait LabFixture {
    fn set_network(&mut self, network: &LabNetwork) -> Result<(), BoardError>;
    fn reserve_heap(&mut self, bytes: u32) -> Result<(), BoardError>;
    /// Defect switch names as the virtual firmware knows them (`skip-cn-check`).
    fn set_defects(&mut self, defects: &[String]) -> Result<(), BoardError>;
    /// Makes the firmware's own waits (reconnect, keep-alive, retransmit) run `scale` times
    /// faster; facts measured broker-side are multiplied back into board time.
    fn set_time_scale(&mut self, scale: u32) -> Result<(), BoardError>;
}

/// A board the executor can drive.
pub trait Board: Send {
    /// How reports and `--board` name it: the inventory id, or `virtual:esp32c3#0`.
    fn name(&self) -> &str;
    /// The chip the inventory declares (checked when the board is identified).
    fn target(&self) -> Target;
    fn firmware(&self) -> FirmwareKind;
    /// Where a serial port is now; `None` when the board has no such port. A backend may look
    /// again (a USB-JTAG board re-enumerates on reset).
    fn port(&self, port: Port) -> Option<PathBuf>;
    fn capabilities(&self) -> &[Capability];
    /// Who the board is, as something outside its firmware says: its ROM loader (chip, MAC,
    /// flash size) or its debug probe (the target it attached to). The bench has closed the log
    /// port; [`Board::reset_into_app`] follows.
    fn identify(&mut self) -> Result<ChipInfo, BoardError>;
    /// Writes `regions` at their flash offsets, verified, skipping what the board already
    /// holds where the backend can tell; the bench has closed the log port and resets after.
    fn flash(
        &mut self,
        regions: &[Region],
        options: &FlashOptions,
    ) -> Result<FlashReport, BoardError>;
    /// Writes an ELF as it is, for boards whose loader takes ELFs ([`FlashContent::Elf`]).
    fn flash_elf(&mut self, elf: &Path, _options: &FlashOptions) -> Result<(), BoardError> {
        Err(BoardError::NoElfLoader {
            board: self.name().to_owned(),
            elf: elf.to_owned(),
        })
    }
    /// Resets the board into its app. `log` is the open serial log port, when there is one:
    /// DTR/RTS lines are driven on it (ports are opened exclusively, so nobody else can).
    fn reset_into_app(&mut self, log: Option<&serialport::TTYPort>) -> Result<(), BoardError>;
    /// A log the board offers besides its serial ports (RTT through a probe), copied into
    /// `sink` as the log port; `None` when the log is `port(Port::Log)`.
    fn open_log(&mut self, _sink: Sink) -> Option<Box<dyn LogReader>> {
        None
    }
    /// The lab equipment around the board, for the capabilities it declares.
    fn fixture(&mut self) -> Option<&mut dyn LabFixture>;
    /// What a scenario's `flash` step writes: unless the backend knows better, nothing.
    fn flash_content(&self) -> FlashContent {
        FlashContent::Held
    }
    /// The app ELF the board runs, when known: crash excerpts are decoded with it.
    fn elf(&self) -> Option<&Path> {
        None
    }
    /// Whether the board declares `capability`.
    fn has(&self, capability: Capability) -> bool {
        self.capabilities().contains(&capability)
    }
}

/// A log reader a backend runs itself (RTT), the counterpart of a serial port's reader.
pub trait LogReader: Send {
    /// False once the source failed under the reader (the probe went away).
    fn is_alive(&self) -> bool;
}

/// Identity through a ROM loader (serial and virtual boards): `link` reaches it.
fn identify_through_loader(link: &LoaderLink, board: &str) -> Result<ChipInfo, BoardError> {
    crate::flash::probe(link).map_err(|source| BoardError::Loader {
        board: board.to_owned(),
        source,
    })
}

/// Flashing through a ROM loader with espflash (serial and virtual boards).
fn flash_through_loader(
    link: &LoaderLink,
    chip: Chip,
    board: &str,
    regions: &[Region],
    options: &FlashOptions,
) -> Result<FlashReport, BoardError> {
    crate::flash::flash(link, chip, regions, options).map_err(|source| BoardError::Loader {
        board: board.to_owned(),
        source,
    })
}

/// A board as a run's plan sees it, before it is opened (so `--list` touches no hardware).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoardDescriptor {
    pub name: String,
    pub target: Target,
    pub firmware: FirmwareKind,
    pub capabilities: Vec<Capability>,
    /// Where the board's ESP-AT firmware keeps certificates; `None` when the run generates
    /// the firmware in the layout each scenario names (virtual boards).
    pub at_storage: Option<AtStorage>,
}

/// A `--board` resolved: what it is, and how to open it.
#[derive(Debug, Clone)]
pub struct BoardSpec {
    pub descriptor: BoardDescriptor,
    source: Source,
}

#[derive(Debug, Clone)]
enum Source {
    /// Started by the run, its flash file in `dir`.
    Virtual {
        chip: Chip,
        dir: PathBuf,
    },
    Inventory(Box<inventory::BoardEntry>),
    Probe(Box<inventory::ProbeEntry>),
}

/// `virtual:esp32c3` (one virtual board), `virtual:esp32c3*4` (four, each with its own flash
/// file and services), or an inventory id. Virtual boards' files go under `dir`.
pub fn resolve_specs(
    specs: &[String],
    inventory: Option<&inventory::Inventory>,
    dir: &std::path::Path,
) -> Result<Vec<BoardSpec>, BoardError> {
    let mut resolved = Vec::new();
    for spec in specs {
        let (base, count) = match spec.rsplit_once('*') {
            Some((base, count)) => (
                base,
                count
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=64).contains(n))
                    .ok_or_else(|| BoardError::Spec(spec.clone()))?,
            ),
            None => (spec.as_str(), 1),
        };
        if let Some(chip) = virtual_board::parse_spec(base) {
            let same = specs
                .iter()
                .filter(|s| s.split('*').next() == Some(base))
                .count();
            for _ in 0..count {
                let index = resolved.len();
                let name = if count > 1 || same > 1 {
                    format!("{base}#{index}")
                } else {
                    base.to_owned()
                };
                resolved.push(BoardSpec {
                    descriptor: BoardDescriptor {
                        name,
                        target: Target::Esp(chip),
                        firmware: FirmwareKind::EspAt,
                        capabilities: Capability::ALL.to_vec(),
                        at_storage: None,
                    },
                    source: Source::Virtual {
                        chip,
                        dir: dir.join(format!("{index}")),
                    },
                });
            }
            continue;
        }
        if count > 1 || base.starts_with("virtual:") {
            return Err(BoardError::Spec(spec.clone()));
        }
        let inventory =
            inventory.ok_or_else(|| inventory::InventoryError::NoInventory(spec.clone()))?;
        if let Some(entry) = inventory.probe_board(spec) {
            resolved.push(BoardSpec {
                descriptor: BoardDescriptor {
                    name: entry.id.clone(),
                    target: probe::target_of(&entry.target),
                    firmware: entry.firmware,
                    capabilities: Vec::new(),
                    at_storage: Some(AtStorage::default()),
                },
                source: Source::Probe(Box::new(entry.clone())),
            });
            continue;
        }
        let entry = inventory.board(spec)?;
        resolved.push(BoardSpec {
            descriptor: BoardDescriptor {
                name: entry.id.clone(),
                target: Target::Esp(entry.chip),
                firmware: entry.firmware,
                capabilities: Vec::new(),
                at_storage: Some(entry.at_storage),
            },
            source: Source::Inventory(Box::new(entry.clone())),
        });
    }
    Ok(resolved)
}

impl BoardSpec {
    /// Starts the virtual board, or takes the inventory's (its lock; `wait` for another run).
    /// Debug probes are looked for through `probes` (probe-rs's lister).
    pub fn open(&self, wait: bool, probes: &probe::Lister) -> Result<Box<dyn Board>, BoardError> {
        let name = &self.descriptor.name;
        let mut waiting = |holder: &str| {
            eprintln!("waiting for board {name} (held by pid {holder})");
        };
        Ok(match &self.source {
            Source::Virtual { chip, dir } => {
                Box::new(virtual_board::VirtualBoard::start(*chip, name, dir)?)
            }
            Source::Inventory(entry) => {
                Box::new(serial::SerialBoard::open(entry, wait, &mut waiting)?)
            }
            Source::Probe(entry) => {
                Box::new(probe::ProbeBoard::open(entry, probes, wait, &mut waiting)?)
            }
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BoardError {
    #[error(
        "board {0:?}: expected virtual:esp32c3, virtual:esp32, virtual:CHIP*N (N from 1 to 64) or an inventory id"
    )]
    Spec(String),
    #[error("starting the virtual board: {0}")]
    Start(#[from] sparring_vboard::board::BoardError),
    #[error("creating the board's directory {0}: {1}")]
    Dir(PathBuf, std::io::Error),
    #[error("the virtual board does not answer its control channel (gone?)")]
    Gone,
    #[error("board {board}: {capability} is not available on this board")]
    Missing {
        board: String,
        capability: Capability,
    },
    #[error("board {board} has no way to reset it (reset = \"none\" in its inventory entry)")]
    NoReset { board: String },
    #[error("board {board}: reset command `{command}` {problem}")]
    Command {
        board: String,
        command: String,
        problem: String,
    },
    #[error("board {board} resets through DTR/RTS on its log port {port}, which is not open")]
    LogPortClosed { board: String, port: String },
    #[error("board {board}: resetting through DTR/RTS on {port}: {source}")]
    Lines {
        board: String,
        port: String,
        source: Box<espflash::Error>,
    },
    #[error("board {board}: {source}")]
    Loader { board: String, source: FlashError },
    #[error(
        "board {board} writes images through its ROM loader, not ELF files as they are ({elf}): name the ELF in its firmware_files"
    )]
    NoElfLoader { board: String, elf: PathBuf },

    #[error("board {board}: {source}")]
    Probe {
        board: String,
        source: Box<probe::ProbeError>,
    },
    #[error(transparent)]
    Inventory(#[from] inventory::InventoryError),
    #[error(transparent)]
    Lock(#[from] lock::LockError),
}

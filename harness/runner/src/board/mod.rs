//! Boards behind one small trait, so a scenario never knows what its board is: every board has
//! an identity, two serial ports by role, a ROM loader to flash through and a way back into its
//! app. What only some boards or labs have — a network the harness can shape, heap it can take
//! away, firmware defect switches, a power switch — are [`Capability`]s the backend declares and
//! reaches through [`LabFixture`]. A fixture is like a USB relay or an access point: it acts on
//! the board, it never reports facts about it (those come from the ports and the services).
//!
//! Backends: [`virtual_board`] (the in-process virtual ESP32, every capability), [`serial`]
//! (any board on serial ports, named in a `boards.toml` [`inventory`]) and [`probe`] (a board
//! behind a debug probe, through probe-rs; flashing and RTT through its own methods so far).

pub mod inventory;
pub mod lock;
pub mod probe;
pub mod rtt_text;
pub mod serial;
pub mod virtual_board;

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use esp_formats::Chip;
use serde::{Deserialize, Serialize};

use crate::flash::LoaderLink;
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

/// What a scenario's `flash` step writes on a board, as its backend decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlashContent {
    /// sparring's generated ESP-AT image set, at the step's `version`, in the scenario's
    /// `at_storage` layout: a virtual board holds no other firmware.
    GeneratedEspAt,
    /// The user's firmware, as the board's inventory entry names it (`firmware_files`).
    Files(inventory::FirmwareFiles),
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
    /// The chip the inventory declares (checked against the ROM loader when probed).
    fn chip(&self) -> Chip;
    fn firmware(&self) -> FirmwareKind;
    /// Where a port is now; `None` when the board has no such port. A backend may look again
    /// (a USB-JTAG board re-enumerates on reset).
    fn port(&self, port: Port) -> Option<PathBuf>;
    fn capabilities(&self) -> &[Capability];
    /// Puts the board into its ROM loader; returns how espflash connects to it.
    fn enter_loader(&mut self) -> Result<LoaderLink, BoardError>;
    /// Resets the board into its app. `log` is the open log port: DTR/RTS lines are driven on
    /// it (ports are opened exclusively, so nobody else can).
    fn reset_into_app(&mut self, log: &serialport::TTYPort) -> Result<(), BoardError>;
    /// The lab equipment around the board, for the capabilities it declares.
    fn fixture(&mut self) -> Option<&mut dyn LabFixture>;
    /// What a scenario's `flash` step writes: unless the backend knows better, nothing.
    fn flash_content(&self) -> FlashContent {
        FlashContent::Held
    }
    /// The app ELF the board runs, when known: crash excerpts are decoded with it.
    fn elf(&self) -> Option<&std::path::Path> {
        None
    }
    /// Whether the board declares `capability`.
    fn has(&self, capability: Capability) -> bool {
        self.capabilities().contains(&capability)
    }
}

/// A board as a run's plan sees it, before it is opened (so `--list` touches no hardware).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoardDescriptor {
    pub name: String,
    pub chip: Chip,
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
        dir: PathBuf,
    },
    Inventory(Box<inventory::BoardEntry>),
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
                        chip,
                        firmware: FirmwareKind::EspAt,
                        capabilities: Capability::ALL.to_vec(),
                        at_storage: None,
                    },
                    source: Source::Virtual {
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
        let entry = inventory.board(spec)?;
        resolved.push(BoardSpec {
            descriptor: BoardDescriptor {
                name: entry.id.clone(),
                chip: entry.chip,
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
    pub fn open(&self, wait: bool) -> Result<Box<dyn Board>, BoardError> {
        let name = &self.descriptor.name;
        Ok(match &self.source {
            Source::Virtual { dir } => Box::new(virtual_board::VirtualBoard::start(
                self.descriptor.chip,
                name,
                dir,
            )?),
            Source::Inventory(entry) => {
                let mut waiting = |holder: &str| {
                    eprintln!("waiting for board {name} (held by pid {holder})");
                };
                Box::new(serial::SerialBoard::open(entry, wait, &mut waiting)?)
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
    #[error("board {board}: resetting through DTR/RTS on {port}: {source}")]
    Lines {
        board: String,
        port: String,
        source: Box<espflash::Error>,
    },
    #[error(
        "board {board}: target {target} is not an ESP32 chip; the Board trait names boards by ESP chip, so only its probe backend's own flashing and RTT serve it"
    )]
    NotEsp { board: String, target: String },
    #[error("board {board} is flashed through its debug probe, not through a ROM loader")]
    NoLoader { board: String },
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

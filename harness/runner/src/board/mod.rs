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
pub mod serial;
pub mod virtual_board;

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use esp_formats::Chip;
use serde::{Deserialize, Serialize};

use crate::flash::LoaderLink;
use crate::scenario::Port;

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
}

impl Capability {
    pub const ALL: [Capability; 4] = [
        Capability::LabNetwork,
        Capability::HeapControl,
        Capability::Defects,
        Capability::Power,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Capability::LabNetwork => "lab-network",
            Capability::HeapControl => "heap-control",
            Capability::Defects => "defects",
            Capability::Power => "power",
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
    /// Whether the board declares `capability`.
    fn has(&self, capability: Capability) -> bool {
        self.capabilities().contains(&capability)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BoardError {
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

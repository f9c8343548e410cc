//! `boards.toml`: the lab (where services listen, the Wi-Fi boards join, SNTP's port) and the
//! boards in it: serial boards, each found by a port path, by USB identity (serial number,
//! VID:PID, location) or by the MAC its ROM loader reports; and debug-probe boards, found by
//! their probe's `VID:PID:SERIAL` (a `[[board]]` with `probe = ...`). Every error names the
//! file, line and column.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use esp_formats::Chip;
use probe_rs::probe::DebugProbeSelector;
use serde::Deserialize;
use serialport::{SerialPortInfo, SerialPortType, UsbPortInfo};
use toml::Spanned;

use super::{FirmwareKind, Wifi};
use crate::firmware::{self, ElfCompanions, Firmware, FirmwareError};
use crate::scenario::{self, AtStorage, LoadError, line_column};

/// Where `sparring` looks for the inventory when `--boards` is not given.
pub const DEFAULT_FILE: &str = "boards.toml";
/// Environment variable naming the inventory.
pub const ENV_VAR: &str = "SPARRING_BOARDS";

#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    /// Unreadable, or `file:line:column: what was expected` — as scenario files report it.
    #[error(transparent)]
    File(#[from] LoadError),
    #[error("board {id}: {what}")]
    Absent { id: String, what: String },
    #[error(
        "board {0:?} ({1}) is a debug-probe board: sparring flash writes through ROM loaders; a probe board is flashed with its `elf` by a scenario's flash step in sparring run"
    )]
    ProbeBoard(String, String),
    #[error("no board {0:?} in the inventory {1} (known: {2})")]
    Unknown(String, PathBuf, String),
    #[error(
        "board {0:?}: no inventory (looked for --boards, ${ENV_VAR} and ./{DEFAULT_FILE}); boards other than virtual:esp32c3 / virtual:esp32 are named in one"
    )]
    NoInventory(String),
}

/// The whole file.
#[derive(Debug, Clone)]
pub struct Inventory {
    pub path: PathBuf,
    pub lab: Lab,
    pub boards: Vec<BoardEntry>,
    /// Boards behind debug probes (`probe = ...`).
    pub probe_boards: Vec<ProbeEntry>,
}

/// Where the services are and what the boards are told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lab {
    /// Where sparring's services listen = the address boards reach.
    pub bind: IpAddr,
    pub wifi: Wifi,
    /// The UDP port SNTP listens on (real boards ask 123).
    pub sntp_port: u16,
    /// How long a port that disappeared (USB re-enumeration, a cable) may take to come back.
    pub reopen_ms: u64,
}

impl Default for Lab {
    /// The loopback lab of virtual boards: SNTP on any port (the board's network redirects 123).
    fn default() -> Lab {
        Lab {
            bind: IpAddr::from([127, 0, 0, 1]),
            wifi: Wifi {
                ssid: "sparring-lab".into(),
                password: "correct horse".into(),
            },
            sntp_port: 0,
            reopen_ms: 5000,
        }
    }
}

/// One `[[board]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoardEntry {
    pub id: String,
    pub chip: Chip,
    pub log: PortSelector,
    pub at: Option<PortSelector>,
    pub reset: ResetMethod,
    pub firmware: FirmwareKind,
    /// The app ELF the board runs, to decode its panics in reports.
    pub elf: Option<PathBuf>,
    /// What a scenario's `flash` step writes (`firmware_files`); without it the step keeps the
    /// firmware the board holds.
    pub firmware_files: Option<FirmwareFiles>,
    /// Where its ESP-AT firmware keeps certificates: scenarios for the other storage skip it.
    pub at_storage: AtStorage,
    /// `file:line` of the entry, for messages.
    pub origin: String,
}

/// A board's `firmware_files`: the user's firmware, in any form [`firmware::resolve`] takes
/// (an ESP-IDF build directory, an app ELF, a merged binary, a flash set, `offset=file` pairs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirmwareFiles {
    /// As written in the inventory.
    pub inputs: Vec<String>,
    /// The inventory's directory: relative inputs are taken from there.
    pub dir: PathBuf,
    /// `file:line` of the key, for messages.
    pub origin: String,
}

impl FirmwareFiles {
    /// The regions to flash, validated for `chip` (read again at each call: a rebuild between
    /// scenarios is flashed).
    pub fn resolve(&self, chip: Chip) -> Result<Firmware, FirmwareError> {
        firmware::resolve(&self.inputs, &self.dir, chip, &ElfCompanions::default())
    }
}

/// One `[[board]]` with `probe = ...`: flashed, reset and (with `log = "rtt"`) read through a
/// debug probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeEntry {
    pub id: String,
    /// probe-rs's `VID:PID[:SERIAL]`.
    pub probe: DebugProbeSelector,
    /// A probe-rs target name, as its registry spells it (`nRF52840_xxAA`, `esp32c3`).
    pub target: String,
    pub log: ProbeLog,
    /// What to flash, relative paths resolved against the inventory's directory.
    pub elf: PathBuf,
    pub firmware: FirmwareKind,
    /// `file:line` of the entry, for messages.
    pub origin: String,
}

/// Where a debug-probe board's log comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeLog {
    /// RTT up channel 0, read through the probe.
    Rtt,
    /// A serial port (a UART bridge, the ESP USB-JTAG-serial's CDC port).
    Port(PathBuf),
}

/// How a port is found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortSelector {
    Path(PathBuf),
    Usb(UsbMatch),
    /// The port whose ROM loader reports this MAC (lower-case, colon-separated).
    Mac(String),
}

/// USB identity to match; every given field must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsbMatch {
    pub serial: Option<String>,
    /// `10c4:ea60`.
    pub vid_pid: Option<String>,
    /// `1-1.2`: bus, then the hub port chain, as Linux names USB devices.
    pub location: Option<String>,
}

/// How the board is reset into its app and into its ROM loader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResetMethod {
    /// DTR/RTS on the log port, with espflash's sequences (classic, or USB-JTAG-serial by PID).
    DtrRts,
    /// Nothing can reset it: the board must already be in its loader to flash.
    None,
    /// Commands the harness runs (a relay, a programmable supply, a virtual board's `ctl`).
    Commands {
        run: Vec<String>,
        download: Vec<String>,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    lab: Option<Spanned<LabFile>>,
    #[serde(default)]
    board: Vec<Spanned<BoardFile>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LabFile {
    bind: Option<Spanned<String>>,
    wifi: Option<Wifi>,
    sntp_port: Option<u16>,
    reopen_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BoardFile {
    id: Spanned<String>,
    chip: Option<Spanned<String>>,
    log_port: Option<PathBuf>,
    usb: Option<UsbMatch>,
    mac: Option<Spanned<String>>,
    at_port: Option<PathBuf>,
    at_usb: Option<UsbMatch>,
    #[serde(default)]
    reset: Option<Spanned<ResetFile>>,
    #[serde(default)]
    firmware: FirmwareKind,
    elf: Option<Spanned<PathBuf>>,
    firmware_files: Option<Spanned<OneOrMany>>,
    at_storage: Option<AtStorage>,
    // Debug-probe boards only.
    probe: Option<Spanned<String>>,
    target: Option<Spanned<String>>,
    log: Option<Spanned<String>>,
}

/// A string, or a list of strings each with its own position (an untagged enum would lose
/// the positions: serde buffers its input).
#[derive(Debug)]
enum OneOrMany {
    One(String),
    Many(Vec<Spanned<String>>),
}

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany::One(text.to_owned()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<OneOrMany, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(OneOrMany::Many(items))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ResetFile {
    Named(String),
    Commands {
        run: Vec<String>,
        download: Vec<String>,
    },
}

impl Inventory {
    /// `--boards FILE`, else `$SPARRING_BOARDS`, else `./boards.toml` if it exists.
    pub fn find(explicit: Option<&Path>) -> Result<Option<Inventory>, InventoryError> {
        let path = match explicit {
            Some(path) => path.to_owned(),
            None => match std::env::var_os(ENV_VAR) {
                Some(path) => PathBuf::from(path),
                None if Path::new(DEFAULT_FILE).exists() => PathBuf::from(DEFAULT_FILE),
                None => return Ok(None),
            },
        };
        Inventory::load(&path).map(Some)
    }

    pub fn load(path: &Path) -> Result<Inventory, InventoryError> {
        let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
            path: path.to_owned(),
            source,
        })?;
        Inventory::parse(path, &text)
    }

    /// Parses and checks `text`; `path` only names it in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Inventory, InventoryError> {
        let invalid = |offset: usize, message: String| {
            InventoryError::File(scenario::invalid(path, text, offset, message))
        };
        let file: File = toml::from_str(text).map_err(|e| {
            invalid(
                e.span().map_or(0, |s| s.start),
                e.message().trim_end().to_owned(),
            )
        })?;
        let mut lab = Lab {
            // A real lab's boards ask SNTP's well-known port.
            sntp_port: 123,
            ..Lab::default()
        };
        if let Some(lab_file) = file.lab {
            let lab_file = lab_file.into_inner();
            if let Some(bind) = lab_file.bind {
                lab.bind = bind.get_ref().parse().map_err(|_| {
                    invalid(
                        bind.span().start,
                        format!(
                            "bind {:?}: expected an IP address of this machine that the boards reach, e.g. \"192.168.1.20\"",
                            bind.get_ref()
                        ),
                    )
                })?;
            }
            lab.wifi = lab_file.wifi.unwrap_or(lab.wifi);
            lab.sntp_port = lab_file.sntp_port.unwrap_or(lab.sntp_port);
            lab.reopen_ms = lab_file.reopen_ms.unwrap_or(lab.reopen_ms);
        }
        let mut boards: Vec<BoardEntry> = Vec::new();
        let mut probe_boards: Vec<ProbeEntry> = Vec::new();
        for spanned in file.board {
            let start = spanned.span().start;
            let board = spanned.into_inner();
            let id = board.id.get_ref().clone();
            if id.is_empty() || id.starts_with("virtual:") || id.contains(['/', ' ']) {
                return Err(invalid(
                    board.id.span().start,
                    format!(
                        "id {id:?}: expected a short name without spaces or slashes, not starting with virtual:"
                    ),
                ));
            }
            if boards.iter().any(|b| b.id == id) || probe_boards.iter().any(|b| b.id == id) {
                return Err(invalid(
                    board.id.span().start,
                    format!("id {id:?} is used by an earlier board"),
                ));
            }
            if board.probe.is_some() {
                let entry =
                    probe_entry(path, text, start, id, board).map_err(|(at, m)| invalid(at, m))?;
                probe_boards.push(entry);
                continue;
            }
            let probe_keys = given_keys([
                ("target", board.target.is_some()),
                ("log", board.log.is_some()),
            ]);
            if !probe_keys.is_empty() {
                return Err(invalid(
                    start,
                    format!(
                        "board {id}: a serial board takes no {} (debug-probe board keys: add probe = \"VID:PID:SERIAL\" for one)",
                        probe_keys.join(", ")
                    ),
                ));
            }
            let Some(chip_name) = &board.chip else {
                return Err(invalid(
                    start,
                    format!(
                        "board {id}: expected chip (a serial board) or probe (a debug-probe board)"
                    ),
                ));
            };
            let chip = Chip::from_name(chip_name.get_ref()).ok_or_else(|| {
                invalid(
                    chip_name.span().start,
                    format!(
                        "chip {:?}: expected esp32, esp32s2, esp32s3, esp32c2, esp32c3, esp32c6 or esp32h2",
                        chip_name.get_ref()
                    ),
                )
            })?;
            let mac = match &board.mac {
                Some(mac) => Some(normalise_mac(mac.get_ref()).ok_or_else(|| {
                    invalid(
                        mac.span().start,
                        format!(
                            "mac {:?}: expected six hex bytes like 34:85:18:01:02:03",
                            mac.get_ref()
                        ),
                    )
                })?),
                None => None,
            };
            let log = match (board.log_port, board.usb, mac) {
                (Some(path), None, None) => PortSelector::Path(path),
                (None, Some(usb), None) => {
                    PortSelector::Usb(check_usb(usb).map_err(|m| invalid(start, m))?)
                }
                (None, None, Some(mac)) => PortSelector::Mac(mac),
                _ => {
                    return Err(invalid(
                        start,
                        format!(
                            "board {id}: expected exactly one of log_port, usb or mac to find its log port"
                        ),
                    ));
                }
            };
            let at = match (board.at_port, board.at_usb) {
                (Some(path), None) => Some(PortSelector::Path(path)),
                (None, Some(usb)) => Some(PortSelector::Usb(
                    check_usb(usb).map_err(|m| invalid(start, m))?,
                )),
                (None, None) => None,
                (Some(_), Some(_)) => {
                    return Err(invalid(
                        start,
                        format!("board {id}: expected at most one of at_port or at_usb"),
                    ));
                }
            };
            let reset = match board.reset {
                None => ResetMethod::DtrRts,
                Some(reset) => {
                    let at = reset.span().start;
                    match reset.into_inner() {
                        ResetFile::Named(name) if name == "dtr-rts" => ResetMethod::DtrRts,
                        ResetFile::Named(name) if name == "none" => ResetMethod::None,
                        ResetFile::Named(name) => {
                            return Err(invalid(
                                at,
                                format!(
                                    "reset {name:?}: expected \"dtr-rts\", \"none\" or {{ run = [...], download = [...] }}"
                                ),
                            ));
                        }
                        ResetFile::Commands { run, download } => {
                            if run.is_empty() || download.is_empty() {
                                return Err(invalid(
                                    at,
                                    "reset: run and download each need a command (program first, then its arguments)".into(),
                                ));
                            }
                            ResetMethod::Commands { run, download }
                        }
                    }
                }
            };
            let elf = board
                .elf
                .map(|elf| existing_elf(path, &elf))
                .transpose()
                .map_err(|(at, m)| invalid(at, m))?;
            let firmware_files = board
                .firmware_files
                .map(|files| existing_firmware_files(path, text, files))
                .transpose()
                .map_err(|(at, m)| invalid(at, m))?;
            let (line, _) = line_column(text, start);
            boards.push(BoardEntry {
                id,
                chip,
                log,
                at,
                reset,
                firmware: board.firmware,
                elf,
                firmware_files,
                at_storage: board.at_storage.unwrap_or_default(),
                origin: format!("{}:{line}", path.display()),
            });
        }
        Ok(Inventory {
            path: path.to_owned(),
            lab,
            boards,
            probe_boards,
        })
    }

    /// The debug-probe board `id`, if the inventory has one.
    pub fn probe_board(&self, id: &str) -> Option<&ProbeEntry> {
        self.probe_boards.iter().find(|b| b.id == id)
    }

    /// The serial board `id`; a probe board of that id is refused (it has no ROM loader port).
    pub fn board(&self, id: &str) -> Result<&BoardEntry, InventoryError> {
        if let Some(probe_board) = self.probe_board(id) {
            return Err(InventoryError::ProbeBoard(
                id.to_owned(),
                probe_board.origin.clone(),
            ));
        }
        self.boards.iter().find(|b| b.id == id).ok_or_else(|| {
            let known: Vec<&str> = (self.boards.iter().map(|b| b.id.as_str()))
                .chain(self.probe_boards.iter().map(|b| b.id.as_str()))
                .collect();
            InventoryError::Unknown(id.to_owned(), self.path.clone(), known.join(", "))
        })
    }
}

/// A `[[board]]` with `probe = ...`; errors are (byte offset, what was expected).
fn probe_entry(
    path: &Path,
    text: &str,
    start: usize,
    id: String,
    board: BoardFile,
) -> Result<ProbeEntry, (usize, String)> {
    // Each of these finds, resets or names a serial board; a probe board has its own.
    let serial_keys = given_keys([
        ("chip (the target names the chip)", board.chip.is_some()),
        ("usb", board.usb.is_some()),
        ("mac", board.mac.is_some()),
        ("reset (the probe resets the board)", board.reset.is_some()),
        ("at_port", board.at_port.is_some()),
        ("at_usb", board.at_usb.is_some()),
        (
            "firmware_files (the probe flashes elf)",
            board.firmware_files.is_some(),
        ),
        ("at_storage", board.at_storage.is_some()),
    ]);
    if !serial_keys.is_empty() {
        return Err((
            start,
            format!(
                "board {id}: a debug-probe board (probe = ...) takes probe, target, log or log_port, elf and firmware; not {}",
                serial_keys.join(", ")
            ),
        ));
    }
    let selector_text = board.probe.as_ref().map_or("", |p| p.get_ref().as_str());
    let selector_at = board.probe.as_ref().map_or(start, |p| p.span().start);
    let probe = super::probe::parse_selector(selector_text).map_err(|m| (selector_at, m))?;
    let target_name = board.target.ok_or_else(|| {
        (
            start,
            format!(
                "board {id}: expected target = a probe-rs target name, e.g. \"esp32c3\" or \"nRF52840_xxAA\""
            ),
        )
    })?;
    let target = super::probe::known_target(target_name.get_ref())
        .map_err(|m| (target_name.span().start, m))?;
    let log = match (board.log, board.log_port) {
        (Some(log), None) if log.get_ref() == "rtt" => ProbeLog::Rtt,
        (None, Some(port)) => ProbeLog::Port(port),
        (Some(log), None) => {
            return Err((
                log.span().start,
                format!(
                    "log {:?}: expected \"rtt\" (or log_port = a serial port instead)",
                    log.get_ref()
                ),
            ));
        }
        _ => {
            return Err((
                start,
                format!("board {id}: expected exactly one of log = \"rtt\" or log_port"),
            ));
        }
    };
    let elf = board.elf.ok_or_else(|| {
        (
            start,
            format!("board {id}: expected elf = the firmware to flash"),
        )
    })?;
    let elf = existing_elf(path, &elf)?;
    let (line, _) = line_column(text, start);
    Ok(ProbeEntry {
        id,
        probe,
        target,
        log,
        elf,
        firmware: board.firmware,
        origin: format!("{}:{line}", path.display()),
    })
}

/// An `elf` key, relative to the inventory as the file's other paths are read by its author;
/// errors are (byte offset, what was expected).
fn existing_elf(inventory: &Path, elf: &Spanned<PathBuf>) -> Result<PathBuf, (usize, String)> {
    let resolved = inventory
        .parent()
        .unwrap_or(Path::new("."))
        .join(elf.get_ref());
    if !resolved.is_file() {
        return Err((
            elf.span().start,
            format!("elf {:?}: no such file", resolved.display().to_string()),
        ));
    }
    Ok(resolved)
}

/// `firmware_files`: each input's file or directory must exist (relative to the inventory);
/// whether it is firmware for the board's chip is checked when it is flashed. Errors are (byte
/// offset, what was expected).
fn existing_firmware_files(
    inventory: &Path,
    text: &str,
    files: Spanned<OneOrMany>,
) -> Result<FirmwareFiles, (usize, String)> {
    let key_at = files.span().start;
    let inputs: Vec<(usize, String)> = match files.into_inner() {
        OneOrMany::One(input) => vec![(key_at, input)],
        OneOrMany::Many(inputs) => inputs
            .into_iter()
            .map(|input| (input.span().start, input.into_inner()))
            .collect(),
    };
    if inputs.is_empty() {
        return Err((
            key_at,
            "firmware_files: expected a build directory, an ELF, a .bin, a flash set or offset=file pairs, not an empty list".into(),
        ));
    }
    let dir = inventory.parent().unwrap_or(Path::new("")).to_owned();
    for (at, input) in &inputs {
        let named = dir.join(firmware::named_path(input));
        if !named.exists() {
            return Err((
                *at,
                format!(
                    "firmware_files {input:?}: no such file or directory ({})",
                    named.display()
                ),
            ));
        }
    }
    let (line, _) = line_column(text, key_at);
    Ok(FirmwareFiles {
        inputs: inputs.into_iter().map(|(_, input)| input).collect(),
        dir,
        origin: format!("{}:{line}", inventory.display()),
    })
}

/// The keys of `keys` that the entry gives.
fn given_keys<const N: usize>(keys: [(&'static str, bool); N]) -> Vec<&'static str> {
    keys.into_iter()
        .filter_map(|(key, given)| given.then_some(key))
        .collect()
}

fn check_usb(usb: UsbMatch) -> Result<UsbMatch, String> {
    if usb.serial.is_none() && usb.vid_pid.is_none() && usb.location.is_none() {
        return Err("usb: expected at least one of serial, vid_pid, location".into());
    }
    if let Some(vid_pid) = &usb.vid_pid
        && parse_vid_pid(vid_pid).is_none()
    {
        return Err(format!(
            "usb.vid_pid {vid_pid:?}: expected two 4-digit hex numbers like \"10c4:ea60\""
        ));
    }
    Ok(usb)
}

fn parse_vid_pid(text: &str) -> Option<(u16, u16)> {
    let (vid, pid) = text.split_once(':')?;
    let hex = |s: &str| (s.len() == 4).then(|| u16::from_str_radix(s, 16).ok())?;
    Some((hex(vid)?, hex(pid)?))
}

/// `34-85-18-01-02-03` or `348518010203` → `34:85:18:01:02:03`.
pub fn normalise_mac(text: &str) -> Option<String> {
    let hex: String = text
        .chars()
        .filter(|c| !matches!(c, ':' | '-'))
        .collect::<String>()
        .to_ascii_lowercase();
    if hex.len() != 12 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let pairs: Vec<&str> = (0..6).filter_map(|i| hex.get(i * 2..i * 2 + 2)).collect();
    Some(pairs.join(":"))
}

/// `1-1.2` for a USB port's location.
pub fn location_name(usb: &UsbPortInfo) -> Option<String> {
    let location = usb.location.as_ref()?;
    let chain: Vec<String> = location
        .port_chain()
        .iter()
        .map(|p| p.to_string())
        .collect();
    Some(format!("{}-{}", location.bus_id(), chain.join(".")))
}

impl UsbMatch {
    pub fn matches(&self, usb: &UsbPortInfo) -> bool {
        let serial = self
            .serial
            .as_ref()
            .is_none_or(|s| usb.serial_number.as_deref() == Some(s.as_str()));
        let ids = self
            .vid_pid
            .as_deref()
            .and_then(parse_vid_pid)
            .is_none_or(|(vid, pid)| usb.vid == vid && usb.pid == pid);
        let location = self
            .location
            .as_ref()
            .is_none_or(|l| location_name(usb).as_deref() == Some(l.as_str()));
        serial && ids && location
    }

    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(s) = &self.serial {
            parts.push(format!("serial number {s}"));
        }
        if let Some(v) = &self.vid_pid {
            parts.push(format!("VID:PID {v}"));
        }
        if let Some(l) = &self.location {
            parts.push(format!("location {l}"));
        }
        parts.join(", ")
    }
}

/// A port found on this machine, with its USB identity when it has one.
#[derive(Debug, Clone)]
pub struct FoundPort {
    pub path: PathBuf,
    pub usb: Option<UsbPortInfo>,
}

/// The machine's serial ports (serialport's sysfs enumeration: no libudev).
pub fn enumerate() -> Vec<FoundPort> {
    serialport::available_ports()
        .unwrap_or_default()
        .into_iter()
        .map(
            |SerialPortInfo {
                 port_name,
                 port_type,
             }| FoundPort {
                path: PathBuf::from(port_name),
                usb: match port_type {
                    SerialPortType::UsbPort(usb) => Some(usb),
                    _ => None,
                },
            },
        )
        .collect()
}

impl PortSelector {
    /// Finds the port among `ports` (a path must exist). MAC selectors need the ROM loader and
    /// are resolved by the caller with `probe`.
    pub fn resolve(&self, ports: &[FoundPort]) -> Result<FoundPort, String> {
        match self {
            PortSelector::Path(path) => {
                if !path.exists() {
                    return Err(format!("port {} does not exist", path.display()));
                }
                // The enumerated entry carries the USB identity espflash's reset needs.
                Ok(ports
                    .iter()
                    .find(|p| same_file(&p.path, path))
                    .cloned()
                    .unwrap_or(FoundPort {
                        path: path.clone(),
                        usb: None,
                    }))
            }
            PortSelector::Usb(usb) => {
                let matching: Vec<&FoundPort> = ports
                    .iter()
                    .filter(|p| p.usb.as_ref().is_some_and(|u| usb.matches(u)))
                    .collect();
                match matching.as_slice() {
                    [one] => Ok((*one).clone()),
                    [] => Err(format!(
                        "no serial port with {} (found: {})",
                        usb.describe(),
                        describe_ports(ports)
                    )),
                    many => Err(format!(
                        "{} ports match {}: {} (add serial or location to tell them apart)",
                        many.len(),
                        usb.describe(),
                        many.iter()
                            .map(|p| p.path.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )),
                }
            }
            PortSelector::Mac(mac) => Err(format!(
                "MAC {mac} is found through the ROM loader, not by enumeration"
            )),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            PortSelector::Path(p) => p.display().to_string(),
            PortSelector::Usb(u) => format!("USB {}", u.describe()),
            PortSelector::Mac(m) => format!("MAC {m}"),
        }
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

fn describe_ports(ports: &[FoundPort]) -> String {
    if ports.is_empty() {
        return "no serial ports".into();
    }
    ports
        .iter()
        .map(|p| match &p.usb {
            Some(u) => format!(
                "{} {:04x}:{:04x} serial {}",
                p.path.display(),
                u.vid,
                u.pid,
                u.serial_number.as_deref().unwrap_or("-")
            ),
            None => p.path.display().to_string(),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_are_normalised() {
        assert_eq!(
            normalise_mac("34-85-18-0A-02-03").as_deref(),
            Some("34:85:18:0a:02:03")
        );
        assert_eq!(normalise_mac("348518"), None);
    }

    #[test]
    fn usb_identity_matches_every_given_field() {
        let usb = UsbPortInfo {
            vid: 0x303a,
            pid: 0x1001,
            serial_number: Some("34:85:18:01:02:03".into()),
            manufacturer: None,
            product: None,
            location: None,
            interface: None,
        };
        let by_ids = UsbMatch {
            vid_pid: Some("303a:1001".into()),
            ..Default::default()
        };
        assert!(by_ids.matches(&usb));
        let wrong_serial = UsbMatch {
            serial: Some("other".into()),
            ..by_ids.clone()
        };
        assert!(!wrong_serial.matches(&usb));
    }

    fn parse_error(text: &str) -> String {
        Inventory::parse(Path::new("lab/boards.toml"), text)
            .expect_err("an invalid inventory")
            .to_string()
    }

    #[test]
    fn a_probe_board_is_read_with_its_selector_target_log_and_elf() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("build")).expect("build dir");
        std::fs::write(dir.path().join("build/app.elf"), b"\x7fELF").expect("written");
        let text = "[[board]]\nid = \"nrf\"\nprobe = \"1366:1051:000683\"\ntarget = \"nRF52840_xxAA\"\nlog = \"rtt\"\nelf = \"build/app.elf\"\nfirmware = \"app\"\n";
        let inventory = Inventory::parse(&dir.path().join("boards.toml"), text).expect("valid");
        assert!(inventory.boards.is_empty());
        let [board] = inventory.probe_boards.as_slice() else {
            panic!("one probe board expected: {:?}", inventory.probe_boards);
        };
        assert_eq!(board.probe.vendor_id, 0x1366);
        assert_eq!(board.probe.serial_number.as_deref(), Some("000683"));
        assert_eq!(board.target, "nRF52840_xxAA");
        assert_eq!(board.log, ProbeLog::Rtt);
        assert_eq!(board.elf, dir.path().join("build/app.elf"));
        let said = inventory
            .board("nrf")
            .expect_err("not a serial board")
            .to_string();
        assert!(said.contains("debug-probe board"), "{said}");
    }

    #[test]
    fn probe_board_errors_name_line_column_and_the_conflict() {
        let said = parse_error(
            "[[board]]\nid = \"c3\"\nprobe = \"303a\"\ntarget = \"esp32c3\"\nlog = \"rtt\"\nelf = \"a.elf\"\n",
        );
        assert!(
            said.starts_with("lab/boards.toml:3:9: probe \"303a\""),
            "{said}"
        );
        let said = parse_error(
            "[[board]]\nid = \"c3\"\nprobe = \"303a:1001\"\ntarget = \"esp32c7\"\nlog = \"rtt\"\nelf = \"a.elf\"\n",
        );
        assert!(
            said.starts_with("lab/boards.toml:4:10: target \"esp32c7\""),
            "{said}"
        );
        assert!(said.contains("esp32c3"), "close names listed: {said}");
        let said = parse_error(
            "[[board]]\nid = \"c3\"\nprobe = \"303a:1001\"\nchip = \"esp32c3\"\nreset = \"none\"\ntarget = \"esp32c3\"\nlog = \"rtt\"\nelf = \"a.elf\"\n",
        );
        assert!(
            said.starts_with("lab/boards.toml:1:1: board c3: a debug-probe board"),
            "{said}"
        );
        assert!(said.contains("chip") && said.contains("reset"), "{said}");
        let said = parse_error(
            "[[board]]\nid = \"c3\"\nchip = \"esp32c3\"\nlog_port = \"/dev/ttyACM0\"\nlog = \"rtt\"\n",
        );
        assert!(
            said.contains("board c3: a serial board takes no log (debug-probe board keys"),
            "{said}"
        );
    }

    #[test]
    fn firmware_files_are_found_next_to_the_inventory_or_refused_with_their_position() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("build")).expect("build dir");
        std::fs::write(dir.path().join("app.bin"), b"\xe9").expect("written");
        let inventory = dir.path().join("boards.toml");
        let entry = |files: &str| {
            format!(
                "[[board]]\nid = \"desk\"\nchip = \"esp32c3\"\nlog_port = \"/dev/null\"\nfirmware_files = {files}\nat_storage = \"mfg-nvs\"\n"
            )
        };
        let parsed = Inventory::parse(&inventory, &entry("\"build\"")).expect("valid");
        let board = &parsed.boards[0];
        let files = board.firmware_files.as_ref().expect("firmware_files");
        assert_eq!(files.inputs, ["build"]);
        assert_eq!(files.dir, dir.path());
        assert_eq!(files.origin, format!("{}:5", inventory.display()));
        assert_eq!(board.at_storage, AtStorage::MfgNvs);
        let parsed = Inventory::parse(&inventory, &entry("[\"0x0=app.bin\", \"0x10000=app.bin\"]"))
            .expect("valid");
        let files = parsed.boards[0]
            .firmware_files
            .as_ref()
            .expect("firmware_files");
        assert_eq!(files.inputs, ["0x0=app.bin", "0x10000=app.bin"]);

        // A missing file: the position of the string naming it, in a list or alone.
        let error = Inventory::parse(&inventory, &entry("[\"build\", \"0x10000=gone.bin\"]"))
            .expect_err("refused")
            .to_string();
        let expected = format!(
            "{}:5:28: firmware_files \"0x10000=gone.bin\": ",
            inventory.display()
        );
        assert!(error.starts_with(&expected), "{error}");
        let missing = dir.path().join("gone.bin");
        assert!(
            error.ends_with(&format!(
                "no such file or directory ({})",
                missing.display()
            )),
            "{error}"
        );
        let error = Inventory::parse(&inventory, &entry("\"build/gone\""))
            .expect_err("refused")
            .to_string();
        let expected = format!(
            "{}:5:18: firmware_files \"build/gone\": no such file or directory",
            inventory.display()
        );
        assert!(error.starts_with(&expected), "{error}");
        let error = Inventory::parse(&inventory, &entry("[]"))
            .expect_err("refused")
            .to_string();
        assert!(error.contains(":5:18: firmware_files: expected"), "{error}");
        // Without the key, nothing is flashed; the storage is ESP-AT v2.x's.
        let bare = "[[board]]\nid = \"desk\"\nchip = \"esp32c3\"\nlog_port = \"/dev/null\"\n";
        let parsed = Inventory::parse(&inventory, bare).expect("valid");
        assert_eq!(parsed.boards[0].firmware_files, None);
        assert_eq!(parsed.boards[0].at_storage, AtStorage::PkiPartitions);
    }

    #[test]
    fn an_elf_is_found_next_to_the_inventory_or_refused_with_its_position() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("app.elf"), b"\x7fELF").expect("written");
        let inventory = dir.path().join("boards.toml");
        let entry = |elf: &str| {
            format!(
                "[[board]]\nid = \"desk\"\nchip = \"esp32c3\"\nlog_port = \"/dev/null\"\nelf = \"{elf}\"\n"
            )
        };
        let parsed = Inventory::parse(&inventory, &entry("app.elf")).expect("valid");
        assert_eq!(parsed.boards[0].elf, Some(dir.path().join("app.elf")));

        let error = Inventory::parse(&inventory, &entry("build/gone.elf"))
            .expect_err("refused")
            .to_string();
        let expected = format!("{}:5:7: elf ", inventory.display());
        assert!(error.starts_with(&expected), "{error}");
        assert!(error.ends_with("gone.elf\": no such file"), "{error}");
    }
}

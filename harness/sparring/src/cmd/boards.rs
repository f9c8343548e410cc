//! `sparring boards`: what is attached (serial ports, debug probes), which inventory entry each
//! is, and what the boards' ROM loaders say.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use sparring_runner::bench::Bench;
use sparring_runner::board::inventory::{
    self, BoardEntry, FoundPort, Inventory, PortSelector, ProbeEntry, location_name,
};
use sparring_runner::board::probe::{self, DebugProbeInfo, Lister};
use sparring_runner::board::serial::{SerialBoard, probe_unlisted};

/// List serial ports, debug probes and the inventory's boards; `--probe` asks each board's ROM
/// loader for chip, MAC and flash size; `sparring boards check` validates an inventory.
///
/// Each port is shown with VID:PID, serial number, manufacturer, product and USB location,
/// the USB-serial bridge it is (CP210x, CH340, CH9102, FTDI, Espressif USB-JTAG-serial — whose
/// serial number is the chip's MAC), and the `boards.toml` entry it belongs to. Ports the
/// inventory names by path are listed even when the system does not enumerate them (ptys).
/// Debug probes (probe-rs's drivers: J-Link, ST-Link, CMSIS-DAP, ESP USB-JTAG, ...) are listed
/// with their `VID:PID:SERIAL` selector and the `boards.toml` entry whose `probe` matches.
///
/// `--probe` resets each USB port or inventory board into its ROM loader (espflash's DTR/RTS
/// sequences; the entry's own reset commands, or no reset, where the inventory says so), reads
/// chip, MAC and flash size, and resets it back into its app; a port that does not answer is
/// reported, not fatal. Other ports (built-in UARTs, ptys) have no way to be reset: not probed.
///
/// Inventory: `--boards FILE`, else `$SPARRING_BOARDS`, else `./boards.toml`.
/// Exit codes: 0 fine, 1 an inventory entry's port is absent (check) or a probe failed,
/// 2 usage or inventory error (`file:line:column: what was expected`).
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    action: Option<Action>,
    /// The board inventory.
    #[arg(long = "boards", value_name = "FILE")]
    inventory: Option<PathBuf>,
    /// Ask each board's ROM loader for chip, MAC and flash size.
    #[arg(long)]
    probe: bool,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Validate an inventory and say which entries are present now.
    ///
    /// Errors are `file:line:column: what was expected`. Exit 1 when an entry's port is absent.
    Check {
        /// The inventory (default: $SPARRING_BOARDS, else ./boards.toml).
        file: Option<PathBuf>,
    },
}

/// USB-serial bridges found on ESP32 boards, by VID:PID.
const BRIDGES: [(u16, u16, &str); 8] = [
    (0x10c4, 0xea60, "CP210x"),
    (0x1a86, 0x7523, "CH340"),
    (0x1a86, 0x55d4, "CH9102"),
    (0x0403, 0x6001, "FTDI FT232R"),
    (0x0403, 0x6010, "FTDI FT2232"),
    (0x0403, 0x6014, "FTDI FT232H"),
    (0x0403, 0x6015, "FTDI FT230X"),
    (
        0x303a,
        0x1001,
        "Espressif USB-JTAG-serial (serial number = MAC)",
    ),
];

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if let Some(Action::Check { file }) = &args.action {
        return check(file.as_deref().or(args.inventory.as_deref()));
    }
    let inventory = Inventory::find(args.inventory.as_deref())?;
    let mut ports = inventory::enumerate();
    // Ports the inventory names by path but the system does not enumerate (ptys, odd drivers).
    for entry in inventory.iter().flat_map(|i| &i.boards) {
        for selector in std::iter::once(&entry.log).chain(&entry.at) {
            if let PortSelector::Path(path) = selector
                && path.exists()
                && !ports.iter().any(|p| &p.path == path)
            {
                ports.push(FoundPort {
                    path: path.clone(),
                    usb: None,
                });
            }
        }
    }
    if ports.is_empty() {
        println!("no serial ports found");
    }
    let mut failed = false;
    for port in &ports {
        let entry = inventory.as_ref().and_then(|i| owner(i, port));
        println!("{}", describe(port, entry));
        if !args.probe {
            continue;
        }
        let answer = match entry {
            // The log port of an entry: the entry's reset, its lock.
            Some((entry, "log")) => probe_entry(entry),
            Some((_, _)) => continue,
            None if port.usb.is_some() => probe_port(port),
            None => {
                println!(
                    "    not probed: no USB lines to reset it and no inventory entry saying how"
                );
                continue;
            }
        };
        match answer {
            Ok(line) => println!("    {line}"),
            Err(e) => {
                failed = true;
                println!("    no answer from the ROM loader: {e:#}");
            }
        }
    }
    let probes = probe::list_probes(&Lister::new());
    if probes.is_empty() {
        println!("no debug probes found");
    }
    for found in &probes {
        let entry = inventory
            .as_ref()
            .and_then(|i| i.probe_boards.iter().find(|b| b.probe.matches_probe(found)));
        println!("{}", describe_probe(found, entry));
    }
    Ok(if failed {
        super::exit_problem()
    } else {
        ExitCode::SUCCESS
    })
}

fn describe_probe(found: &DebugProbeInfo, entry: Option<&ProbeEntry>) -> String {
    let owner = match entry {
        Some(entry) => format!("= {} ({})", entry.id, entry.origin),
        None => "(not in the inventory)".to_owned(),
    };
    format!(
        "debug probe {}  {}  {owner}",
        probe::selector_text(found),
        found.identifier
    )
}

fn check(file: Option<&Path>) -> anyhow::Result<ExitCode> {
    let inventory = Inventory::find(file)?.with_context(|| {
        format!(
            "no inventory: pass FILE, or set ${}, or create ./{}",
            inventory::ENV_VAR,
            inventory::DEFAULT_FILE
        )
    })?;
    let ports = inventory::enumerate();
    let lab = &inventory.lab;
    println!(
        "{}: lab bind {}, Wi-Fi {:?}, SNTP port {}",
        inventory.path.display(),
        lab.bind,
        lab.wifi.ssid,
        lab.sntp_port
    );
    let mut absent = 0;
    for entry in &inventory.boards {
        let found = match &entry.log {
            PortSelector::Mac(mac) => Ok(format!(
                "found by MAC {mac} through the ROM loader at run time (see --probe)"
            )),
            selector => selector
                .resolve(&ports)
                .map(|p| format!("log port {}", p.path.display())),
        };
        let at = entry
            .at
            .as_ref()
            .map(|s| s.resolve(&ports).map(|p| p.path.display().to_string()));
        match (found, at) {
            (Ok(log), None) => println!("present  {} ({}): {log}", entry.id, entry.origin),
            (Ok(log), Some(Ok(at))) => println!(
                "present  {} ({}): {log}, AT port {at}",
                entry.id, entry.origin
            ),
            (Err(e), _) | (_, Some(Err(e))) => {
                absent += 1;
                println!("ABSENT   {} ({}): {e}", entry.id, entry.origin);
            }
        }
    }
    let lister = Lister::new();
    for entry in &inventory.probe_boards {
        match probe::find_probe(&lister, &entry.probe) {
            Ok(found) => println!(
                "present  {} ({}): debug probe {} {}",
                entry.id,
                entry.origin,
                probe::selector_text(&found),
                found.identifier
            ),
            Err(e) => {
                absent += 1;
                println!("ABSENT   {} ({}): {e}", entry.id, entry.origin);
            }
        }
    }
    let boards = inventory.boards.len() + inventory.probe_boards.len();
    println!(
        "{boards} board(s), {} present, {absent} absent",
        boards - absent
    );
    Ok(if absent == 0 {
        ExitCode::SUCCESS
    } else {
        super::exit_problem()
    })
}

/// The inventory entry a port belongs to, and as which port.
fn owner<'a>(inventory: &'a Inventory, port: &FoundPort) -> Option<(&'a BoardEntry, &'static str)> {
    let ports = std::slice::from_ref(port);
    inventory.boards.iter().find_map(|entry| {
        let is = |selector: &PortSelector| {
            !matches!(selector, PortSelector::Mac(_))
                && selector.resolve(ports).is_ok_and(|p| p.path == port.path)
        };
        if is(&entry.log) {
            Some((entry, "log"))
        } else if entry.at.as_ref().is_some_and(is) {
            Some((entry, "AT"))
        } else {
            None
        }
    })
}

fn describe(port: &FoundPort, entry: Option<(&BoardEntry, &str)>) -> String {
    let mut line = port.path.display().to_string();
    match &port.usb {
        Some(usb) => {
            line += &format!("  {:04x}:{:04x}", usb.vid, usb.pid);
            if let Some((_, _, bridge)) = BRIDGES
                .iter()
                .find(|(vid, pid, _)| *vid == usb.vid && *pid == usb.pid)
            {
                line += &format!(" [{bridge}]");
            }
            for (label, value) in [
                ("serial", usb.serial_number.clone()),
                ("manufacturer", usb.manufacturer.clone()),
                ("product", usb.product.clone()),
                ("location", location_name(usb)),
            ] {
                if let Some(value) = value {
                    line += &format!("  {label} {value}");
                }
            }
        }
        None => line += "  (no USB identity)",
    }
    match entry {
        Some((entry, role)) => line += &format!("  = {} {role} port ({})", entry.id, entry.origin),
        None => line += "  (not in the inventory)",
    }
    line
}

/// Through the entry's own reset and lock, as a run would.
fn probe_entry(entry: &BoardEntry) -> anyhow::Result<String> {
    let board = SerialBoard::open(entry, false, &mut |_| {})?;
    let bench = Bench::open(Box::new(board), Duration::from_secs(1))?;
    let id = &bench.identity;
    Ok(format!(
        "{}: chip {}, MAC {}, flash {}",
        id.name, id.chip, id.mac, id.flash_size
    ))
}

/// A port nobody described.
fn probe_port(port: &FoundPort) -> anyhow::Result<String> {
    let info = probe_unlisted(port)?;
    Ok(format!(
        "chip {}, MAC {}, flash {}",
        info.chip, info.mac, info.flash_size
    ))
}

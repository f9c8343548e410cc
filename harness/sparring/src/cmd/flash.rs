//! `sparring flash`: firmware from a build directory, an ELF, a merged binary, a flash set or
//! offset=file pairs onto an inventory board or a port, validated before anything is written.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::{Context, bail};
use esp_formats::Chip;
use sparring_runner::bench::Bench;
use sparring_runner::board::inventory::{self, FoundPort, Inventory};
use sparring_runner::board::serial::{SerialBoard, unlisted_link};
use sparring_runner::firmware::{self, ElfCompanions, Firmware};
use sparring_runner::flash::{self, FlashOptions, FlashReport, LoaderLink};

use super::image::parse_chip;

/// Flash firmware onto a board, skipping regions it already holds, verifying what is written.
///
/// INPUT is one of: an ESP-IDF build directory (its `flasher_args.json`: offsets, flash
/// settings; the app's ELF next to the app binary), or that `flasher_args.json`; an app ELF
/// (made into an app image by espflash, with espflash's bootloader and partition table unless
/// `--bootloader`/`--partition-table` are given); a merged binary (`esptool merge-bin`,
/// flashed at 0x0); a sparring flash set (a directory with `flash-set.json` from `sparring
/// image flash-set`, or the file); or `OFFSET=FILE` pairs (`0x10000=build/app.bin`).
///
/// Before anything is written, every input is validated for the board's chip: a file that is
/// none of these, an image built for another chip (its header's chip id), a broken partition
/// table, an app larger than its partition, or overlapping regions stop the command with one
/// line naming the file.
///
/// `--board ID` takes the inventory's board (its lock, ports and reset method, checked against
/// what its ROM loader says); `--port PATH` flashes the port directly, resetting it through
/// DTR/RTS where it is USB and expecting the board already in its loader otherwise (a pty, a
/// bare UART). A region whose MD5 on the board already matches is skipped; each written region
/// is verified by espflash against the board's MD5. At the end the board is reset into its app
/// unless `--no-reset`. Ctrl-C finishes the region being written, then stops and says which
/// regions were written.
///
/// Inventory: `--boards FILE`, else `$SPARRING_BOARDS`, else `./boards.toml`.
/// Exit codes: 0 flashed (or nothing to write), 1 the board failed (no answer, write or verify
/// failed), 2 usage error or an input refused, 130 stopped by Ctrl-C.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The inventory board to flash.
    #[arg(
        long,
        value_name = "ID",
        required_unless_present = "port",
        conflicts_with = "port"
    )]
    board: Option<String>,
    /// A serial port to flash without an inventory entry.
    #[arg(long, value_name = "PATH")]
    port: Option<PathBuf>,
    /// The board inventory.
    #[arg(long = "boards", value_name = "FILE")]
    inventory: Option<PathBuf>,
    /// The board's chip (default: the inventory's, or with --port what the ROM loader says).
    #[arg(long, value_parser = parse_chip)]
    chip: Option<Chip>,
    /// Baud rate to flash at once connected (the ROM loader starts at 115200).
    #[arg(long)]
    baud: Option<u32>,
    /// Leave the board in its ROM loader after flashing.
    #[arg(long)]
    no_reset: bool,
    /// Bootloader to flash with an app ELF (default: espflash's for the chip).
    #[arg(long, value_name = "FILE")]
    bootloader: Option<PathBuf>,
    /// Partition table to flash with an app ELF (default: espflash's: nvs, phy_init, factory).
    #[arg(long, value_name = "FILE")]
    partition_table: Option<PathBuf>,
    /// What to flash (see above).
    #[arg(required = true, value_name = "INPUT")]
    inputs: Vec<String>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let companions = ElfCompanions {
        bootloader: args.bootloader.clone(),
        partition_table: args.partition_table.clone(),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let options = || FlashOptions {
        progress: true,
        baud: args.baud,
        stop: Some(stop.clone()),
        ..FlashOptions::default()
    };
    match (&args.board, &args.port) {
        (Some(id), _) => {
            let inventory = Inventory::find(args.inventory.as_deref())?
                .ok_or_else(|| inventory::InventoryError::NoInventory(id.clone()))?;
            let entry = inventory.board(id)?;
            if let Some(chip) = args.chip.filter(|c| *c != entry.chip) {
                bail!(
                    "--chip {chip}, but board {id} is declared {} ({})",
                    entry.chip,
                    entry.origin
                );
            }
            let firmware = firmware::resolve(&args.inputs, Path::new(""), entry.chip, &companions)?;
            let board = SerialBoard::open(entry, false, &mut |_| {})?;
            let reopen_within = Duration::from_millis(inventory.lab.reopen_ms);
            let mut bench = match Bench::open(Box::new(board), reopen_within) {
                Ok(bench) => bench,
                Err(e) => return failed(&e),
            };
            // The handler is in place before the first line: a Ctrl-C after it is never lost.
            super::watch_ctrl_c(stop.clone(), Some(STOPPING));
            announce(&firmware, &format!("board {id}"));
            let flashed = bench.flash_with(&firmware.regions, &options());
            let report = match flashed {
                Ok(report) => report,
                Err(e) => return failed(&e),
            };
            let code = summarise(&report);
            if !args.no_reset && report.not_written.is_empty() {
                if let Err(e) = bench.reset_into_app() {
                    return failed(&format!("resetting the board into its app: {e}"));
                }
                println!("reset into the app");
            }
            Ok(code)
        }
        (None, Some(path)) => {
            let link = port_link(path)?;
            let chip = match args.chip {
                Some(chip) => chip,
                // Asking the loader writes nothing: the inputs are still validated first.
                None => detected_chip(&link)?,
            };
            let firmware = firmware::resolve(&args.inputs, Path::new(""), chip, &companions)?;
            // The handler is in place before the first line: a Ctrl-C after it is never lost.
            super::watch_ctrl_c(stop.clone(), Some(STOPPING));
            announce(&firmware, &path.display().to_string());
            let report = match flash::flash(&link, chip, &firmware.regions, &options()) {
                Ok(report) => report,
                Err(e) => return failed(&e),
            };
            let code = summarise(&report);
            if !args.no_reset
                && report.not_written.is_empty()
                && let Err(e) = reset_port(&link, path)
            {
                return failed(&format!("{e:#}"));
            }
            Ok(code)
        }
        (None, None) => bail!("--board or --port is required"),
    }
}

const STOPPING: &str = "Ctrl-C: finishing the region being written, then stopping";

/// The port as the system enumerates it (its USB identity picks espflash's reset), or as given.
fn port_link(path: &std::path::Path) -> anyhow::Result<LoaderLink> {
    if !path.exists() {
        bail!("--port {}: no such port", path.display());
    }
    let found = inventory::enumerate()
        .into_iter()
        .find(|p| p.path == path)
        .unwrap_or(FoundPort {
            path: path.to_owned(),
            usb: None,
        });
    Ok(unlisted_link(&found))
}

fn detected_chip(link: &LoaderLink) -> anyhow::Result<Chip> {
    let info = flash::probe(link).with_context(|| {
        format!(
            "asking {} which chip it is (or give --chip)",
            link.path.display()
        )
    })?;
    Chip::from_name(&info.chip).with_context(|| {
        format!(
            "the ROM loader says {}, a chip sparring does not know",
            info.chip
        )
    })
}

fn reset_port(link: &LoaderLink, path: &std::path::Path) -> anyhow::Result<()> {
    if link.usb.vid == 0 {
        println!(
            "{}: no reset lines (not a USB port): reset the board into its app yourself",
            path.display()
        );
        return Ok(());
    }
    link.reset_into_app()
        .context("resetting the board into its app")?;
    println!("reset into the app");
    Ok(())
}

fn announce(firmware: &Firmware, target: &str) {
    println!(
        "flashing {} onto {target}: {} region(s)",
        firmware.kind,
        firmware.regions.len()
    );
    for region in &firmware.regions {
        println!(
            "  0x{:06x} {} ({} bytes)",
            region.offset,
            region.name,
            region.data.len()
        );
    }
    if let Some(settings) = &firmware.flash_settings {
        println!("  flash settings: {settings}");
    }
    if let Some(elf) = &firmware.elf {
        println!("  app ELF: {}", elf.display());
    }
}

/// The board, not the inputs, failed: exit 1.
fn failed(error: &dyn std::fmt::Display) -> anyhow::Result<ExitCode> {
    eprintln!("flash failed: {error}");
    Ok(super::exit_problem())
}

fn summarise(report: &FlashReport) -> ExitCode {
    for name in &report.written {
        println!("written and verified: {name}");
    }
    for name in &report.skipped {
        println!("skipped (the board's MD5 already matches): {name}");
    }
    if report.not_written.is_empty() {
        return ExitCode::SUCCESS;
    }
    let list = |names: &[String]| {
        if names.is_empty() {
            "none".to_owned()
        } else {
            names.join(", ")
        }
    };
    eprintln!(
        "stopped by Ctrl-C: written {}; not written {}. The board now holds a mix of old and new \
         firmware: flash again before using it.",
        list(&report.written),
        list(&report.not_written)
    );
    ExitCode::from(130)
}

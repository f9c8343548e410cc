//! Flashing a board through the espflash library, with a progress bar, skipping regions the
//! board already holds.
//!
//! The ROM protocol can only hash flash with MD5 (SPI_FLASH_MD5, computed on the board), so
//! "already holds the same image" is decided by comparing that MD5 with the local one:
//! nothing has to be read back over the serial line.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use esp_formats::Chip;
use espflash::connection::{Connection, ResetAfterOperation, ResetBeforeOperation};
use espflash::flasher::Flasher;
use espflash::target::ProgressCallbacks;
use indicatif::{ProgressBar, ProgressStyle};
use md5::{Digest, Md5};
use serialport::UsbPortInfo;

/// Bytes to write at an offset.
#[derive(Debug, Clone)]
pub struct Region {
    pub offset: u32,
    pub data: Vec<u8>,
    /// Shown in progress and reports, e.g. "app.bin".
    pub name: String,
}

/// How to talk to the board.
#[derive(Debug, Clone)]
pub struct FlashOptions {
    /// Upload the flasher stub first (faster, compressed writes).
    pub use_stub: bool,
    pub progress: bool,
    /// Baud rate to switch to after connecting (the loader starts at 115200).
    pub baud: Option<u32>,
    /// Set (by Ctrl-C) to stop before the next region: a region is never left half-written
    /// by choice.
    pub stop: Option<Arc<AtomicBool>>,
}

/// With the stub, no progress bars, at 115200 baud.
impl Default for FlashOptions {
    fn default() -> FlashOptions {
        FlashOptions {
            use_stub: true,
            progress: false,
            baud: None,
            stop: None,
        }
    }
}

/// What was done for each region.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlashReport {
    pub written: Vec<String>,
    pub skipped: Vec<String>,
    /// Regions not reached because `stop` was set.
    pub not_written: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum FlashError {
    #[error("opening {port}: {source}")]
    Open {
        port: String,
        source: serialport::Error,
    },
    #[error("connecting to the ROM loader on {port}: {source}")]
    Connect {
        port: String,
        source: Box<espflash::Error>,
    },
    #[error("writing {region} at 0x{offset:x}: {source}")]
    Write {
        region: String,
        offset: u32,
        source: Box<espflash::Error>,
    },
}

/// How espflash reaches a board's ROM loader: the port, its USB identity (espflash picks its
/// reset sequence from the PID: USB-JTAG-serial or classic DTR/RTS) and whether to reset at all.
#[derive(Debug, Clone)]
pub struct LoaderLink {
    pub path: PathBuf,
    pub usb: UsbPortInfo,
    /// `DefaultReset` drives DTR/RTS as espflash does; `NoReset` when the board is already in
    /// its loader (a relay, a virtual board, a button).
    pub before: ResetBeforeOperation,
}

impl LoaderLink {
    /// A port without USB identity (a pty, a UART bridge we know nothing about).
    pub fn plain(path: PathBuf, before: ResetBeforeOperation) -> LoaderLink {
        // vid/pid 0: what espflash itself uses for ports without USB identity.
        let usb = UsbPortInfo {
            vid: 0,
            pid: 0,
            serial_number: None,
            manufacturer: None,
            product: None,
            location: None,
            interface: None,
        };
        LoaderLink { path, usb, before }
    }

    fn connect(
        &self,
        chip: Option<Chip>,
        use_stub: bool,
        baud: Option<u32>,
    ) -> Result<Flasher, FlashError> {
        let name = self.path.to_string_lossy().into_owned();
        let serial = serialport::new(&name, 115_200)
            .timeout(Duration::from_secs(3))
            .open_native()
            .map_err(|source| FlashError::Open {
                port: name.clone(),
                source,
            })?;
        let connection = Connection::new(
            serial,
            self.usb.clone(),
            ResetAfterOperation::NoReset,
            self.before,
            115_200,
        );
        let chip = chip.map(espflash_chip);
        // verify = true: espflash checks each written region's MD5 against the board's.
        Flasher::connect(connection, use_stub, true, false, chip, baud).map_err(|e| {
            FlashError::Connect {
                port: name,
                source: Box::new(e),
            }
        })
    }
}

/// What the ROM loader says about the chip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChipInfo {
    /// espflash's name (`esp32c3`).
    pub chip: String,
    pub mac: String,
    /// `4MB`.
    pub flash_size: String,
}

/// Connects to the ROM loader and reads chip, MAC and flash size.
pub fn probe(link: &LoaderLink) -> Result<ChipInfo, FlashError> {
    let mut flasher = link.connect(None, false, None)?;
    let info = flasher.device_info().map_err(|e| FlashError::Connect {
        port: link.path.display().to_string(),
        source: Box::new(e),
    })?;
    if link.before == ResetBeforeOperation::DefaultReset {
        // Back into the app with the lines that took it out (espflash's post-flash reset).
        let _ = flasher.connection().reset();
    }
    Ok(ChipInfo {
        chip: info.chip.to_string(),
        mac: info
            .mac_address
            .unwrap_or_else(|| "(secure download mode)".into()),
        flash_size: format!("{}MB", info.flash_size.size() >> 20),
    })
}

/// Flashes `regions` onto the `chip` behind `link`, skipping regions whose on-board MD5
/// already matches.
pub fn flash(
    link: &LoaderLink,
    chip: Chip,
    regions: &[Region],
    options: &FlashOptions,
) -> Result<FlashReport, FlashError> {
    let mut flasher = link.connect(Some(chip), options.use_stub, options.baud)?;
    let mut report = FlashReport::default();
    for region in regions {
        if options
            .stop
            .as_ref()
            .is_some_and(|s| s.load(Ordering::SeqCst))
        {
            report.not_written.push(region.name.clone());
            continue;
        }
        let local = u128::from_be_bytes(Md5::digest(&region.data).into());
        let len = region.data.len() as u32;
        if flasher
            .checksum_md5(region.offset, len)
            .is_ok_and(|on_board| on_board == local)
        {
            report.skipped.push(region.name.clone());
            continue;
        }
        let mut progress = Progress::new(options.progress, &region.name);
        flasher
            .write_bin_to_flash(region.offset, &region.data, &mut progress)
            .map_err(|e| FlashError::Write {
                region: region.name.clone(),
                offset: region.offset,
                source: Box::new(e),
            })?;
        report.written.push(region.name.clone());
    }
    Ok(report)
}

/// espflash's post-flash reset into the app on an open port: an RTS pulse, or the
/// USB-JTAG-serial sequence when `usb` has Espressif's PID.
pub fn hard_reset(port: serialport::TTYPort, usb: UsbPortInfo) -> Result<(), espflash::Error> {
    Connection::new(
        port,
        usb,
        ResetAfterOperation::HardReset,
        ResetBeforeOperation::NoReset,
        115_200,
    )
    .reset()
}

impl LoaderLink {
    /// Resets the board behind the link into its app with espflash's sequence.
    pub fn reset_into_app(&self) -> Result<(), FlashError> {
        let name = self.path.to_string_lossy().into_owned();
        let port = serialport::new(&name, 115_200)
            .open_native()
            .map_err(|source| FlashError::Open {
                port: name.clone(),
                source,
            })?;
        hard_reset(port, self.usb.clone()).map_err(|e| FlashError::Connect {
            port: name,
            source: Box::new(e),
        })
    }
}

pub(crate) fn espflash_chip(chip: Chip) -> espflash::target::Chip {
    use espflash::target::Chip as E;
    match chip {
        Chip::Esp32 => E::Esp32,
        Chip::Esp32S2 => E::Esp32s2,
        Chip::Esp32C3 => E::Esp32c3,
        Chip::Esp32S3 => E::Esp32s3,
        Chip::Esp32C2 => E::Esp32c2,
        Chip::Esp32C6 => E::Esp32c6,
        Chip::Esp32H2 => E::Esp32h2,
    }
}

/// An indicatif bar per region (hidden when progress is off, e.g. in tests and CI logs).
struct Progress {
    bar: ProgressBar,
    name: String,
}

impl Progress {
    fn new(visible: bool, name: &str) -> Progress {
        let bar = if visible {
            ProgressBar::new(0)
        } else {
            ProgressBar::hidden()
        };
        if let Ok(style) = ProgressStyle::with_template("{msg:20} [{bar:40}] {pos}/{len} blocks") {
            bar.set_style(style.progress_chars("=> "));
        }
        Progress {
            bar,
            name: name.to_owned(),
        }
    }
}

impl ProgressCallbacks for Progress {
    fn init(&mut self, addr: u32, total: usize) {
        self.bar.set_length(total as u64);
        self.bar.set_message(format!("{} @0x{addr:x}", self.name));
    }

    fn update(&mut self, current: usize) {
        self.bar.set_position(current as u64);
    }

    fn verifying(&mut self) {
        self.bar.set_message(format!("{} verifying", self.name));
    }

    fn finish(&mut self, skipped: bool) {
        let how = if skipped { "unchanged" } else { "written" };
        self.bar.finish_with_message(format!("{} {how}", self.name));
    }
}

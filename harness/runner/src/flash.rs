//! Flashing a board through the espflash library, with a progress bar, skipping regions the
//! board already holds.
//!
//! The ROM protocol can only hash flash with MD5 (SPI_FLASH_MD5, computed on the board), so
//! "already holds the same image" is decided by comparing that MD5 with the local one:
//! nothing has to be read back over the serial line.

use std::path::Path;
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
    pub chip: Chip,
    /// Upload the flasher stub first (faster, compressed writes).
    pub use_stub: bool,
    pub progress: bool,
}

/// What was done for each region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlashReport {
    pub written: Vec<String>,
    pub skipped: Vec<String>,
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
    #[error("chip {0} is not supported by the flasher")]
    Chip(Chip),
}

/// Flashes `regions` onto the board whose download port is `port` (already in download
/// mode: sparring resets boards through their own control channel, ptys have no DTR/RTS).
pub fn flash(
    port: &Path,
    regions: &[Region],
    options: &FlashOptions,
) -> Result<FlashReport, FlashError> {
    let name = port.to_string_lossy().into_owned();
    let serial = serialport::new(&name, 115_200)
        .timeout(Duration::from_secs(3))
        .open_native()
        .map_err(|source| FlashError::Open {
            port: name.clone(),
            source,
        })?;
    // vid/pid 0: what espflash itself uses for ports without USB identity.
    let info = UsbPortInfo {
        vid: 0,
        pid: 0,
        serial_number: None,
        manufacturer: None,
        product: None,
    };
    let connection = Connection::new(
        serial,
        info,
        ResetAfterOperation::NoReset,
        ResetBeforeOperation::NoReset,
        115_200,
    );
    let chip = espflash_chip(options.chip)?;
    let mut flasher = Flasher::connect(connection, options.use_stub, true, false, Some(chip), None)
        .map_err(|e| FlashError::Connect {
            port: name.clone(),
            source: Box::new(e),
        })?;
    let mut report = FlashReport {
        written: Vec::new(),
        skipped: Vec::new(),
    };
    for region in regions {
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

fn espflash_chip(chip: Chip) -> Result<espflash::target::Chip, FlashError> {
    use espflash::target::Chip as E;
    Ok(match chip {
        Chip::Esp32 => E::Esp32,
        Chip::Esp32S2 => E::Esp32s2,
        Chip::Esp32C3 => E::Esp32c3,
        Chip::Esp32S3 => E::Esp32s3,
        Chip::Esp32C2 => E::Esp32c2,
        Chip::Esp32C6 => E::Esp32c6,
        Chip::Esp32H2 => E::Esp32h2,
    })
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

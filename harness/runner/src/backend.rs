//! Boards behind one trait, so a scenario never knows whether its board is virtual: flash,
//! reset, the two serial ports, and (virtual boards only) the lab conditions a scenario sets —
//! network, defect switches, heap.

use std::path::{Path, PathBuf};

use esp_formats::Chip;
use esp_formats::flash_set::FlashFile;
use sparring_vboard::board::{Board, BoardConfig, BoardState, Control};
use sparring_vboard::personality::{Defect, NetworkConfig};

use crate::flash::{FlashOptions, Region, flash};
use crate::scenario::Port;

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error(
        "board spec {0:?}: expected virtual:esp32 or virtual:esp32c3 (serial boards are not supported yet)"
    )]
    BadSpec(String),
    #[error("starting the virtual board: {0}")]
    Start(#[from] sparring_vboard::board::BoardError),
    #[error("creating the board's directory: {0}")]
    Dir(std::io::Error),
    #[error("flashing: {0}")]
    Flash(String),
    #[error("the board does not answer its control channel (gone?)")]
    Gone,
}

/// The lab conditions a scenario asks for.
#[derive(Debug, Clone, Default)]
pub struct LabSetup {
    pub network: NetworkConfig,
    pub defects: Vec<Defect>,
    pub reserve_heap: u32,
}

/// A board the executor can drive.
pub trait BoardBackend {
    /// What the user gave on the command line (`virtual:esp32c3`).
    fn spec(&self) -> &str;
    fn chip(&self) -> Chip;
    fn mac(&self) -> &str;
    fn flash_size(&self) -> usize;
    fn port(&self, port: Port) -> &Path;
    fn flash(&mut self, files: &[FlashFile]) -> Result<(), BackendError>;
    fn reset(&mut self) -> Result<(), BackendError>;
    fn configure(&mut self, lab: &LabSetup) -> Result<(), BackendError>;
    fn reserve_heap(&mut self, bytes: u32) -> Result<(), BackendError>;
    fn state(&self) -> Result<BoardState, BackendError>;
}

/// A virtual ESP32 on pseudo-terminals.
pub struct VirtualBoard {
    spec: String,
    chip: Chip,
    board: Option<Board>,
    mac: String,
    uart0: PathBuf,
    uart1: PathBuf,
    flash_size: usize,
}

impl VirtualBoard {
    /// `virtual:esp32c3` → a board whose flash file lives in `dir`.
    pub fn start(spec: &str, dir: &Path) -> Result<VirtualBoard, BackendError> {
        let chip = match spec.strip_prefix("virtual:") {
            Some("esp32") => Chip::Esp32,
            Some("esp32c3") => Chip::Esp32C3,
            _ => return Err(BackendError::BadSpec(spec.to_owned())),
        };
        std::fs::create_dir_all(dir).map_err(BackendError::Dir)?;
        let mut config = BoardConfig::new(chip, dir.join("flash.bin"), dir.to_path_buf());
        config.download = true;
        let flash_size = config.flash_size;
        let board = Board::start(config)?;
        Ok(VirtualBoard {
            spec: spec.to_owned(),
            chip,
            mac: board.info.mac.clone(),
            uart0: board.info.uart0.clone(),
            uart1: board.info.uart1.clone(),
            flash_size,
            board: Some(board),
        })
    }

    fn control(&self, request: Control) -> Result<BoardState, BackendError> {
        self.board
            .as_ref()
            .and_then(|b| b.control(request))
            .ok_or(BackendError::Gone)
    }
}

impl Drop for VirtualBoard {
    fn drop(&mut self) {
        if let Some(board) = self.board.take() {
            board.power_off();
        }
    }
}

impl BoardBackend for VirtualBoard {
    fn spec(&self) -> &str {
        &self.spec
    }
    fn chip(&self) -> Chip {
        self.chip
    }
    fn mac(&self) -> &str {
        &self.mac
    }
    fn flash_size(&self) -> usize {
        self.flash_size
    }
    fn port(&self, port: Port) -> &Path {
        match port {
            Port::Log => &self.uart0,
            Port::At => &self.uart1,
        }
    }

    /// Into download mode, through espflash (stub, compressed, MD5-skipping), then boot.
    fn flash(&mut self, files: &[FlashFile]) -> Result<(), BackendError> {
        self.control(Control::Download)?;
        let regions: Vec<Region> = files
            .iter()
            .map(|f| Region {
                offset: f.offset,
                data: f.bytes.clone(),
                name: f.name.to_owned(),
            })
            .collect();
        let options = FlashOptions {
            chip: self.chip,
            use_stub: true,
            progress: false,
        };
        flash(&self.uart0, &regions, &options).map_err(|e| BackendError::Flash(e.to_string()))?;
        Ok(())
    }

    fn reset(&mut self) -> Result<(), BackendError> {
        self.control(Control::Reset).map(drop)
    }

    fn configure(&mut self, lab: &LabSetup) -> Result<(), BackendError> {
        self.control(Control::SetNetwork {
            network: lab.network.clone(),
        })?;
        self.control(Control::SetDefects {
            defects: lab.defects.clone(),
        })?;
        self.reserve_heap(lab.reserve_heap)
    }

    fn reserve_heap(&mut self, bytes: u32) -> Result<(), BackendError> {
        self.control(Control::ReserveHeap { bytes }).map(drop)
    }

    fn state(&self) -> Result<BoardState, BackendError> {
        self.control(Control::State)
    }
}

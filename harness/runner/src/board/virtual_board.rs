//! The in-process virtual ESP32: its ports are ptys, its buttons and its lab (access point,
//! hosts table, heap, defect switches, power) are the board's control channel — a lab fixture,
//! never a source of facts.

use std::path::{Path, PathBuf};

use esp_formats::Chip;
use espflash::connection::ResetBeforeOperation;
use sparring_backtrace::elf_builder::{Architecture, TestElf, at};
use sparring_vboard::board::{BoardConfig, Control};
use sparring_vboard::esp_at::CRASH_FRAMES;
use sparring_vboard::personality::{AccessPoint, Defect, NetworkConfig};

use super::{Board, BoardError, Capability, FirmwareKind, FlashContent, LabFixture, LabNetwork};
use super::{Target, flash_through_loader, identify_through_loader};
use crate::flash::{ChipInfo, FlashOptions, FlashReport, LoaderLink, Region};
use crate::scenario::Port;

/// A virtual ESP32 on pseudo-terminals, started by the run.
pub struct VirtualBoard {
    name: String,
    chip: Chip,
    board: Option<sparring_vboard::board::Board>,
    uart0: PathBuf,
    uart1: PathBuf,
    /// The ESP-AT firmware's ELF, written next to the flash file.
    elf: PathBuf,
}

impl VirtualBoard {
    /// `virtual:esp32c3` → a board whose flash file lives in `dir`, named `name`.
    pub fn start(chip: Chip, name: &str, dir: &Path) -> Result<VirtualBoard, BoardError> {
        std::fs::create_dir_all(dir).map_err(|e| BoardError::Dir(dir.to_owned(), e))?;
        let mut config = BoardConfig::new(chip, dir.join("flash.bin"), dir.to_path_buf());
        config.download = true;
        let board = sparring_vboard::board::Board::start(config)?;
        let elf = dir.join("esp-at.elf");
        std::fs::write(&elf, esp_at_elf()).map_err(|e| BoardError::Dir(elf.clone(), e))?;
        Ok(VirtualBoard {
            name: name.to_owned(),
            chip,
            uart0: board.info.uart0.clone(),
            uart1: board.info.uart1.clone(),
            board: Some(board),
            elf,
        })
    }

    fn control(&self, request: Control) -> Result<(), BoardError> {
        self.board
            .as_ref()
            .and_then(|b| b.control(request))
            .map(drop)
            .ok_or(BoardError::Gone)
    }
}

/// The ELF of the virtual ESP-AT firmware: the functions its crash dump runs through, at the
/// addresses the dump prints (Xtensa code, as the dump is), so its panics decode as a real
/// build's do.
pub fn esp_at_elf() -> Vec<u8> {
    let elf = TestElf::new(Architecture::Xtensa)
        .code_section(".iram0.text", 0x4008_0000..0x400a_0000)
        .code_section(".flash.text", 0x400d_0000..0x400e_0000);
    CRASH_FRAMES
        .iter()
        .fold(elf, |elf, frame| {
            elf.function(
                frame.function,
                u64::from(frame.code.0)..u64::from(frame.code.1),
                at(frame.file, u64::from(frame.line)),
            )
        })
        .build()
}

/// The chip a `virtual:CHIP` spec names.
pub fn parse_spec(spec: &str) -> Option<Chip> {
    match spec.strip_prefix("virtual:")? {
        "esp32" => Some(Chip::Esp32),
        "esp32c3" => Some(Chip::Esp32C3),
        _ => None,
    }
}

impl VirtualBoard {
    /// BOOT held, EN pressed — through the control channel (ptys have no DTR/RTS).
    fn enter_loader(&mut self) -> Result<LoaderLink, BoardError> {
        self.control(Control::Download)?;
        Ok(LoaderLink::plain(
            self.uart0.clone(),
            ResetBeforeOperation::NoReset,
        ))
    }
}

impl Drop for VirtualBoard {
    fn drop(&mut self) {
        if let Some(board) = self.board.take() {
            board.power_off();
        }
    }
}

impl Board for VirtualBoard {
    fn name(&self) -> &str {
        &self.name
    }
    fn target(&self) -> Target {
        Target::Esp(self.chip)
    }
    fn firmware(&self) -> FirmwareKind {
        FirmwareKind::EspAt
    }
    fn port(&self, port: Port) -> Option<PathBuf> {
        Some(match port {
            Port::Log => self.uart0.clone(),
            Port::At => self.uart1.clone(),
        })
    }
    fn capabilities(&self) -> &[Capability] {
        &Capability::ALL
    }

    fn identify(&mut self) -> Result<ChipInfo, BoardError> {
        let link = self.enter_loader()?;
        identify_through_loader(&link, &self.name)
    }

    fn flash(
        &mut self,
        regions: &[Region],
        options: &FlashOptions,
    ) -> Result<FlashReport, BoardError> {
        let link = self.enter_loader()?;
        flash_through_loader(&link, self.chip, &self.name, regions, options)
    }

    fn reset_into_app(&mut self, _log: Option<&serialport::TTYPort>) -> Result<(), BoardError> {
        self.control(Control::Reset)
    }

    fn fixture(&mut self) -> Option<&mut dyn LabFixture> {
        Some(self)
    }

    fn flash_content(&self) -> FlashContent {
        FlashContent::GeneratedEspAt
    }

    fn elf(&self) -> Option<&Path> {
        Some(&self.elf)
    }
}

impl LabFixture for VirtualBoard {
    fn set_network(&mut self, network: &LabNetwork) -> Result<(), BoardError> {
        self.control(Control::SetNetwork {
            network: NetworkConfig {
                access_points: vec![AccessPoint {
                    ssid: network.wifi.ssid.clone(),
                    password: network.wifi.password.clone(),
                    rssi: -45,
                    fault: None,
                }],
                hosts: network.hosts.clone(),
                ports: network.ports.clone(),
            },
        })
    }

    fn reserve_heap(&mut self, bytes: u32) -> Result<(), BoardError> {
        self.control(Control::ReserveHeap { bytes })
    }

    fn set_defects(&mut self, defects: &[String]) -> Result<(), BoardError> {
        let defects = defects
            .iter()
            .filter_map(|d| d.parse::<Defect>().ok())
            .collect();
        self.control(Control::SetDefects { defects })
    }

    fn set_time_scale(&mut self, scale: u32) -> Result<(), BoardError> {
        self.control(Control::SetTimeScale { scale })
    }
}

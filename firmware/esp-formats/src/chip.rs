//! ESP chips sparring knows, with the facts that differ between them.

use std::fmt;

/// A chip of the ESP32 family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Chip {
    Esp32,
    Esp32S2,
    Esp32C3,
    Esp32S3,
    Esp32C2,
    Esp32C6,
    Esp32H2,
}

impl Chip {
    pub const ALL: [Chip; 7] = [
        Chip::Esp32,
        Chip::Esp32S2,
        Chip::Esp32C3,
        Chip::Esp32S3,
        Chip::Esp32C2,
        Chip::Esp32C6,
        Chip::Esp32H2,
    ];

    /// The chip id of the image header (offset 12) and of GET_SECURITY_INFO.
    pub fn id(self) -> u16 {
        match self {
            Chip::Esp32 => 0x0000,
            Chip::Esp32S2 => 0x0002,
            Chip::Esp32C3 => 0x0005,
            Chip::Esp32S3 => 0x0009,
            Chip::Esp32C2 => 0x000C,
            Chip::Esp32C6 => 0x000D,
            Chip::Esp32H2 => 0x0010,
        }
    }

    pub fn from_id(id: u16) -> Option<Chip> {
        Chip::ALL.into_iter().find(|c| c.id() == id)
    }

    /// The name esptool and espflash use (`esp32c3`).
    pub fn name(self) -> &'static str {
        match self {
            Chip::Esp32 => "esp32",
            Chip::Esp32S2 => "esp32s2",
            Chip::Esp32C3 => "esp32c3",
            Chip::Esp32S3 => "esp32s3",
            Chip::Esp32C2 => "esp32c2",
            Chip::Esp32C6 => "esp32c6",
            Chip::Esp32H2 => "esp32h2",
        }
    }

    pub fn from_name(name: &str) -> Option<Chip> {
        let name = name.to_ascii_lowercase().replace('-', "");
        Chip::ALL.into_iter().find(|c| c.name() == name)
    }

    /// Where the second-stage bootloader lives in flash.
    pub fn bootloader_offset(self) -> u32 {
        match self {
            Chip::Esp32 | Chip::Esp32S2 => 0x1000,
            _ => 0x0,
        }
    }

    /// Xtensa chips print a `Backtrace:` line on a panic; RISC-V chips dump the stack.
    pub fn is_riscv(self) -> bool {
        !matches!(self, Chip::Esp32 | Chip::Esp32S2 | Chip::Esp32S3)
    }

    /// Load addresses of a minimal app: (flash-mapped data, instruction RAM).
    pub(crate) fn app_addresses(self) -> (u32, u32) {
        match self {
            Chip::Esp32 => (0x3F40_0020, 0x4008_0000),
            Chip::Esp32S2 => (0x3F00_0020, 0x4002_2000),
            Chip::Esp32S3 => (0x3C00_0020, 0x4037_8000),
            Chip::Esp32C3 => (0x3C00_0020, 0x4038_0000),
            Chip::Esp32C2 => (0x3C00_0020, 0x4038_0000),
            Chip::Esp32C6 | Chip::Esp32H2 => (0x4200_0020, 0x4080_0000),
        }
    }
}

impl fmt::Display for Chip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

//! The virtual ESP32 board: a host process that behaves, on its serial ports, like an ESP32 /
//! ESP32-C3 module — ROM loader, flash, bootloader, firmware personalities.

pub mod board;
pub mod boot;
pub mod esp_at;
pub mod flash;
pub mod personality;
pub mod rom;

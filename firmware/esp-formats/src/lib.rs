//! Byte formats of the ESP world, shared by the harness and the virtual board so that
//! both read and write exactly the same bytes.

pub mod atpki;
pub mod chip;
pub mod flash_set;
pub mod image;
pub mod loader;
pub mod nvs;
pub mod otadata;
pub mod partition;
pub mod slip;

pub use chip::Chip;

//! The ESP-AT firmware personality (issue 5). So far: the AT command layer as a pure engine —
//! bytes from the AT UART in, bytes for the AT UART out — with no I/O of its own, so it can be
//! tested and fuzzed without a board. Networking, flash-backed provisioning and the
//! [`crate::personality::Personality`] glue build on [`engine::AtEngine`].

pub mod engine;
pub mod framing;
pub mod parse;

pub use engine::{AtEngine, BoardAction, FirmwareInfo};
pub use framing::{FrameEvent, LineFramer, MAX_LINE_LEN};
pub use parse::{AtCommand, AtError, CommandKind, Param, parse_line};

//! The ESP-AT firmware personality (issue 5). The AT command layer is a pure engine — bytes
//! from the AT UART in, bytes for the AT UART out — with no I/O of its own, so it can be tested
//! and fuzzed without a board; [`EspAt`] wires it to the board's [`crate::personality::AppContext`].

pub mod board_glue;
mod cert_profile;
mod cert_store;
pub mod clock;
mod console;
pub mod costs;
pub mod engine;
pub mod framing;
mod mqtt_client;
mod ota;
pub mod parse;
mod sntp_client;
mod socket_client;
pub mod tls;

pub use board_glue::EspAt;
pub use engine::{
    AtEngine, BoardAction, FirmwareInfo, LastWill, MemoryFlash, Module, MqttConnect, MqttMessage,
    MqttUserConfig, SntpConfig, SocketOpen, mqtt_error,
};
pub use framing::{FrameEvent, LineFramer, MAX_LINE_LEN};
pub use mqtt_client::{CRASH_FRAMES, CrashFrame};
pub use parse::{AtCommand, AtError, CommandKind, Param, parse_line};

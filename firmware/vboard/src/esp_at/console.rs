//! Output from the module's background tasks (MQTT session, SNTP, reconnects): they cannot
//! own the UARTs, so they queue lines that the AT task writes between commands.

use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::Instant;

use crate::personality::LogLevel;

/// Something a background task wants printed.
#[derive(Debug)]
pub enum Output {
    /// A formatted ESP-IDF log line for UART0.
    Log(String),
    /// Bytes for the AT port (UART1): `+MQTTSUBRECV`, `+TIME_UPDATED`, ...
    At(Vec<u8>),
    /// A panic dump for UART0, after which the board reboots.
    Panic(String),
}

/// A cloneable handle for queueing output, with the boot time log lines count from.
#[derive(Debug, Clone)]
pub struct Console {
    booted: Instant,
    tx: Sender<Output>,
}

impl Console {
    pub fn new(booted: Instant) -> (Console, Receiver<Output>) {
        let (tx, rx) = channel();
        (Console { booted, tx }, rx)
    }

    /// `E (1547) esp-tls: message` with the board's uptime.
    pub fn log(&self, level: LogLevel, tag: &str, message: &str) {
        let line = format!(
            "{} ({}) {tag}: {message}\r\n",
            level.letter(),
            self.booted.elapsed().as_millis()
        );
        // The AT task is gone only when the app stops: nothing left to print to.
        let _ = self.tx.send(Output::Log(line));
    }

    /// A log line given its level letter (the mbedTLS failure table's form).
    pub fn log_letter(&self, letter: char, tag: &str, message: &str) {
        self.log(LogLevel::from_letter(letter), tag, message);
    }

    pub fn at(&self, bytes: impl Into<Vec<u8>>) {
        let _ = self.tx.send(Output::At(bytes.into()));
    }

    pub fn panic(&self, dump: String) {
        let _ = self.tx.send(Output::Panic(dump));
    }
}

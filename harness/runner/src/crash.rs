//! Crash and reset signatures on a board's log port, after ESP-IDF's panic handler,
//! task watchdog, brownout detector and the ROM's reset banner (facts sheet §5.7).
//!
//! The executor checks every captured log line against [`detect`] all the time;
//! a match fails the scenario with the excerpt unless the scenario expects it.

use std::fmt;

/// What a log line says happened to the board.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incident {
    /// `Guru Meditation Error: Core  0 panic'ed (...)`.
    Panic,
    /// `abort() was called at PC ...`.
    Abort,
    /// `Stack smashing protect failure!`.
    StackSmashing,
    /// `task_wdt: Task watchdog got triggered`.
    TaskWatchdog,
    /// `Brownout detector was triggered` (with or without the `BOD:` tag).
    Brownout,
    /// A ROM reset banner `rst:0x..`: a reset, which is a crash unless the scenario caused it.
    RomReset,
}

impl fmt::Display for Incident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Incident::Panic => "panic (Guru Meditation Error)",
            Incident::Abort => "abort() was called",
            Incident::StackSmashing => "stack smashing detected",
            Incident::TaskWatchdog => "task watchdog triggered",
            Incident::Brownout => "brownout detector triggered",
            Incident::RomReset => "unexpected reset (ROM banner)",
        })
    }
}

/// Signatures, checked in order; each is a fixed substring the firmware prints verbatim.
const SIGNATURES: [(&str, Incident); 6] = [
    ("Guru Meditation Error", Incident::Panic),
    ("abort() was called", Incident::Abort),
    ("Stack smashing protect failure", Incident::StackSmashing),
    ("Task watchdog got triggered", Incident::TaskWatchdog),
    ("Brownout detector was triggered", Incident::Brownout),
    ("rst:0x", Incident::RomReset),
];

/// The incident a log line reports, if any.
pub fn detect(line: &str) -> Option<Incident> {
    SIGNATURES
        .iter()
        .find(|(needle, _)| line.contains(needle))
        .map(|&(_, incident)| incident)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_signature_is_recognised_in_real_lines() {
        let cases = [
            (
                "Guru Meditation Error: Core  0 panic'ed (LoadProhibited). Exception was unhandled.",
                Incident::Panic,
            ),
            (
                "abort() was called at PC 0x400d1a2b on core 0",
                Incident::Abort,
            ),
            ("Stack smashing protect failure!", Incident::StackSmashing),
            (
                "E (10347) task_wdt: Task watchdog got triggered. The following tasks/users did not reset the watchdog in time:",
                Incident::TaskWatchdog,
            ),
            ("E BOD: Brownout detector was triggered", Incident::Brownout),
            ("Brownout detector was triggered", Incident::Brownout),
            (
                "rst:0xc (RTC_SW_CPU_RST),boot:0xc (SPI_FAST_FLASH_BOOT)",
                Incident::RomReset,
            ),
        ];
        for (line, incident) in cases {
            assert_eq!(detect(line), Some(incident), "{line}");
        }
    }

    #[test]
    fn ordinary_lines_are_not_incidents() {
        for line in [
            "I (312) cpu_start: Starting scheduler.",
            "E (1547) esp-tls: mbedtls_ssl_handshake returned -0x2700",
            "+MQTTDISCONNECTED:0",
            "ready",
        ] {
            assert_eq!(detect(line), None, "{line}");
        }
    }
}

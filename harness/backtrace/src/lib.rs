//! ESP-IDF panic output decoded against the app ELF, in Rust: no toolchain `addr2line`.
//!
//! [`Symbolizer`] loads an app ELF (DWARF through `addr2line`/`gimli`, the symbol table as
//! fallback) and turns an address into [`Frame`]s, inlined ones first. [`PanicDecoder`]
//! finds the code addresses in ESP-IDF console lines and prints them the way `idf.py
//! monitor` (esp-idf-monitor with esp-idf-panic-decoder) does:
//!
//! ```text
//! Backtrace: 0x400e37f4:0x3ffb5db0 0x400d0c2e:0x3ffb5dd0
//! 0x400e37f4: write_register at /app/main/regs.h:12
//!  (inlined by) app_main at /app/main/main.c:36
//! 0x400d0c2e: main_task at /idf/components/freertos/app_startup.c:208
//! ```
//!
//! What is decoded:
//! - `Backtrace: PC:SP PC:SP …` (Xtensa panics and the task watchdog's per-CPU backtraces,
//!   with or without the `|<-CORRUPTED` ending; RISC-V with `CONFIG_ESP_SYSTEM_USE_EH_FRAME`):
//!   every PC;
//! - register dumps: RISC-V `MEPC` and `RA`, Xtensa `PC`;
//! - `abort() was called at PC 0x… on core N`;
//! - any other `0x%08x` number that lies in an executable section and that the ELF names,
//!   which covers the RISC-V `Stack memory:` dump (return addresses among the words) and
//!   registers holding code addresses, exactly as idf.py monitor does.
//!
//! Headers (`Guru Meditation Error: Core 0 panic'ed (…)`, `task_wdt: Task watchdog got
//! triggered`) carry no address; the lines after them do. A PC the ELF does not know (ROM,
//! another build) prints as `0x…: ?? ??:0` and decoding goes on.
//!
//! # API
//!
//! ```no_run
//! use sparring_backtrace::{PanicDecoder, Symbolizer, decode_transcript};
//! # fn main() -> Result<(), sparring_backtrace::ElfError> {
//! let symbolizer = Symbolizer::from_path("build/app.elf".as_ref())?;
//! let decoder = PanicDecoder::new(&symbolizer);
//! for line in ["Backtrace: 0x400d1234:0x3ffb0000"] {
//!     println!("{line}");
//!     for decoded in decoder.feed(line) {
//!         println!("{decoded}");
//!     }
//! }
//! // Or a whole saved log at once: each line followed by its decoded frames.
//! let printed: Vec<String> = decode_transcript(&symbolizer, &["…".to_owned()]);
//! # Ok(()) }
//! ```

mod decoder;
#[cfg(feature = "elf-builder")]
pub mod elf_builder;
mod symbolizer;

pub use decoder::{PanicDecoder, decode_transcript, format_frames};
pub use symbolizer::{ElfError, Frame, Symbolizer};

//! Finding code addresses in ESP-IDF console output, line by line, and printing them as
//! `idf.py monitor` does.

use std::sync::LazyLock;

use regex::Regex;

use crate::symbolizer::{Frame, Symbolizer};

/// Any 32-bit hex number: idf.py monitor decodes each one that falls in an executable
/// section (register dumps, `Stack memory:` words, `ESP_ERROR_CHECK failed … at 0x…`).
/// Source: esp-idf-panic-decoder, esp_idf_panic_decoder/pc_address_decoder.py, `ADDRESS_RE`.
static ADDRESS: LazyLock<Regex> = LazyLock::new(|| regex_or_panic(r"0x[0-9a-fA-F]{8}"));

/// The PCs of a backtrace's `PC:SP` pairs, printed after `Backtrace:` (hex in either case,
/// with or without a space after the colon, ` |<-CORRUPTED` at the end when the unwinding
/// stopped). Source: esp-idf components/esp_system/port/arch/xtensa/debug_helpers.c
/// (`esp_backtrace_print_from_frame`, called by …/xtensa/panic_arch.c and the task
/// watchdog; components/xtensa/debug_helpers.c in v4.x, `doBacktrace` in
/// components/esp32/panic.c before).
static BACKTRACE: LazyLock<Regex> = LazyLock::new(|| regex_or_panic(r"Backtrace:(.*)"));
static BACKTRACE_PC: LazyLock<Regex> =
    LazyLock::new(|| regex_or_panic(r"(0x[0-9a-fA-F]{8}):0x[0-9a-fA-F]{8}"));

/// The program counter and return address of a register dump: `MEPC    : 0x…  RA      : 0x…`
/// (RISC-V) and `PC      : 0x…` (Xtensa). Source: esp-idf
/// components/esp_system/port/arch/riscv/panic_arch.c and …/xtensa/panic_arch.c
/// (`panic_print_registers`: the register name padded to 8, then `": 0x"`).
/// The space before the colon keeps the ROM's `Saved PC:0x…` boot line out.
static REGISTER_PC: LazyLock<Regex> =
    LazyLock::new(|| regex_or_panic(r"\b(?:MEPC|RA|PC)\s+: (0x[0-9a-fA-F]{8})"));

/// Source: esp-idf components/newlib/abort.c (v4.3+; components/esp32/panic.c before):
/// `"abort() was called at PC 0x%08x on core %d"`, printed by components/esp_system/panic.c.
static ABORT_PC: LazyLock<Regex> =
    LazyLock::new(|| regex_or_panic(r"abort\(\) was called at PC (0x[0-9a-fA-F]{8})"));

fn regex_or_panic(pattern: &str) -> Regex {
    Regex::new(pattern).expect("built-in patterns are valid")
}

/// Decodes ESP-IDF console lines against one app ELF.
///
/// Each line is decoded on its own, as idf.py monitor does, so a decoder can sit in any
/// stream of lines (a serial port, a saved log, a test runner's observations).
#[derive(Debug, Clone, Copy)]
pub struct PanicDecoder<'elf> {
    symbolizer: &'elf Symbolizer,
}

impl<'elf> PanicDecoder<'elf> {
    pub fn new(symbolizer: &'elf Symbolizer) -> Self {
        PanicDecoder { symbolizer }
    }

    /// The lines to print after `line`: for each code address in it, in order,
    /// `0x400d1234: app_main at /path/main.c:42` and one ` (inlined by) caller at …` line per
    /// inlining level.
    ///
    /// Addresses where the panic handler puts a PC (backtrace PCs, MEPC, RA, PC, the abort
    /// PC) are always printed, as `0x…: ?? ??:0` when the ELF does not know them (ROM code,
    /// another build). Any other number is printed only when it lies in an executable
    /// section and the ELF names it, as idf.py monitor does.
    pub fn feed(&self, line: &str) -> Vec<String> {
        let program_counters = program_counter_offsets(line);
        let mut out = Vec::new();
        for found in ADDRESS.find_iter(line) {
            let Ok(address) = u64::from_str_radix(&found.as_str()[2..], 16) else {
                continue;
            };
            let is_program_counter = program_counters.contains(&found.start());
            if !is_program_counter && !self.symbolizer.is_executable(address) {
                continue;
            }
            let frames = self.symbolizer.resolve(address);
            if frames.is_empty() && !is_program_counter {
                continue;
            }
            out.extend(format_frames(address, &frames));
        }
        out
    }
}

/// Where in `line` the numbers that are program counters start.
fn program_counter_offsets(line: &str) -> Vec<usize> {
    let mut offsets: Vec<usize> = [&*REGISTER_PC, &*ABORT_PC]
        .iter()
        .flat_map(|regex| regex.captures_iter(line))
        .filter_map(|captures| captures.get(1))
        .map(|pc| pc.start())
        .collect();
    if let Some(pairs) = BACKTRACE.captures(line).and_then(|c| c.get(1)) {
        offsets.extend(
            BACKTRACE_PC
                .captures_iter(pairs.as_str())
                .filter_map(|captures| captures.get(1))
                .map(|pc| pairs.start() + pc.start()),
        );
    }
    offsets
}

/// `addr2line -pfiaC` output for one address, which is what idf.py monitor prints.
pub fn format_frames(address: u64, frames: &[Frame]) -> Vec<String> {
    let Some((innermost, callers)) = frames.split_first() else {
        return vec![format!("0x{address:08x}: ?? ??:0")];
    };
    let mut lines = vec![format!("0x{address:08x}: {}", format_frame(innermost))];
    lines.extend(
        callers
            .iter()
            .map(|caller| format!(" (inlined by) {}", format_frame(caller))),
    );
    lines
}

fn format_frame(frame: &Frame) -> String {
    let line = frame
        .line
        .map_or_else(|| "?".to_owned(), |line| line.to_string());
    format!(
        "{} at {}:{line}",
        frame.function.as_deref().unwrap_or("??"),
        frame.file.as_deref().unwrap_or("??"),
    )
}

/// A whole log decoded: each line followed by the frames of the addresses it carries.
pub fn decode_transcript(symbolizer: &Symbolizer, lines: &[String]) -> Vec<String> {
    let decoder = PanicDecoder::new(symbolizer);
    lines
        .iter()
        .flat_map(|line| std::iter::once(line.clone()).chain(decoder.feed(line)))
        .collect()
}

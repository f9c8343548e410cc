//! The real ESP-IDF transcripts under `harness/backtrace/tests/fixtures/`, each with an app ELF
//! that places known functions at the addresses the transcript prints. The function names
//! and paths are plausible, not the original builds' (those ELF files are not public).

use std::path::PathBuf;

use object::Architecture;

use super::{TestElf, at};

/// A transcript file and the ELF to decode it with.
#[derive(Debug)]
pub struct Fixture {
    pub transcript: PathBuf,
    pub elf: Vec<u8>,
}

impl Fixture {
    fn new(file: &str, elf: TestElf<'_>) -> Self {
        Fixture {
            transcript: [env!("CARGO_MANIFEST_DIR"), "tests", "fixtures", file]
                .iter()
                .collect(),
            elf: elf.build(),
        }
    }

    /// The transcript's lines after its first, which names its source.
    pub fn lines(&self) -> Vec<String> {
        let text = std::fs::read_to_string(&self.transcript)
            .unwrap_or_else(|e| panic!("{}: {e}", self.transcript.display()));
        text.lines().skip(1).map(str::to_owned).collect()
    }
}

const PORT_COMMON: &str = "/idf/components/freertos/port/port_common.c";

/// ESP32 StoreProhibited panic: register dump (PC), `Backtrace:`, and a boot line whose
/// entry point only the symbol table names.
pub fn xtensa_panic() -> Fixture {
    let elf = TestElf::new(Architecture::Xtensa)
        .code_section(".iram0.text", 0x4008_0000..0x400a_0000)
        .code_section(".flash.text", 0x400d_0000..0x4010_0000)
        .symbol("call_start_cpu1", 0x4008_1010..0x4008_1080)
        .function(
            "vPortTaskWrapper",
            0x4008_7000..0x4008_7040,
            at("/idf/components/freertos/port/xtensa/port.c", 168),
        )
        .function("main_task", 0x400d_0c00..0x400d_0c40, at(PORT_COMMON, 133))
        .function(
            "app_main",
            0x400e_37e0..0x400e_3800,
            at("/app/main/main.c", 30),
        )
        .inlined(
            "write_register",
            0x400e_37f0..0x400e_37fa,
            at("/app/main/registers.h", 12),
            at("/app/main/main.c", 36),
        );
    Fixture::new("xtensa_panic.txt", elf)
}

/// ESP32-C3 illegal instruction: MEPC/RA register dump, a code address in A6 and MTVEC,
/// and a `Stack memory:` dump holding return addresses.
pub fn riscv_panic() -> Fixture {
    let elf = TestElf::new(Architecture::Riscv32)
        .code_section(".iram0.text", 0x4038_0000..0x4039_0000)
        .code_section(".flash.text", 0x4200_0000..0x4202_0000)
        .symbol("_vector_table", 0x4038_0000..0x4038_0100)
        .function(
            "vPortTaskWrapper",
            0x4038_4200..0x4038_4220,
            at("/idf/components/freertos/port/riscv/port.c", 130),
        )
        .function(
            "_ZN8firmware4uart5write17h6f1c2d3e4a5b6c7dE",
            0x4200_19e0..0x4200_1a00,
            at("/app/src/uart.rs", 44),
        )
        .function(
            "test_illegal_instruction",
            0x4200_37c0..0x4200_37e0,
            at("/app/main/test_panic.c", 40),
        )
        .function(
            "app_main",
            0x4200_3a00..0x4200_3a40,
            at("/app/main/test_panic_main.c", 50),
        )
        .inlined(
            "run_test",
            0x4200_3a10..0x4200_3a20,
            at("/app/main/test_panic_main.c", 30),
            at("/app/main/test_panic_main.c", 55),
        )
        .function("main_task", 0x4201_2e80..0x4201_2ec0, at(PORT_COMMON, 141));
    Fixture::new("riscv_panic.txt", elf)
}

/// ESP32 (Arduino) `abort()` from C++ code: mangled names, and PCs the ELF does not know.
pub fn abort() -> Fixture {
    const EH_TERMINATE: &str = "/gcc/libstdc++-v3/libsupc++/eh_terminate.cc";
    const PANIC: &str = "/idf/components/esp32/panic.c";
    const SKETCH: &str = "/sketch/homey_ble.ino";
    let elf = TestElf::new(Architecture::Xtensa)
        .code_section(".iram0.text", 0x4008_0000..0x400a_0000)
        .code_section(".flash.text", 0x400d_0000..0x401c_0000)
        .function("invoke_abort", 0x4008_f3a0..0x4008_f3c8, at(PANIC, 156))
        .function("abort", 0x4008_f610..0x4008_f640, at(PANIC, 171))
        .function(
            "vPortTaskWrapper",
            0x4009_06a0..0x4009_06c0,
            at("/idf/components/freertos/port.c", 143),
        )
        .function(
            "_Z8loopTaskPv",
            0x400d_0e90..0x400d_0ec0,
            at("/arduino/cores/esp32/main.cpp", 19),
        )
        .function(
            "_ZN9BLEDevice4initEv",
            0x400d_6240..0x400d_6280,
            at(SKETCH, 20),
        )
        .function("setup", 0x400d_7380..0x400d_73c0, at(SKETCH, 64))
        .function("_Z4loopv", 0x400d_73d0..0x400d_7400, at(SKETCH, 80))
        .function(
            "__cxa_throw",
            0x401b_df50..0x401b_df80,
            at("/gcc/libstdc++-v3/libsupc++/eh_throw.cc", 95),
        )
        .function(
            "_Znwj",
            0x401b_e290..0x401b_e2c0,
            at("/gcc/libstdc++-v3/libsupc++/new_op.cc", 54),
        )
        .function(
            "_ZN10__cxxabiv111__terminateEPFvvE",
            0x401b_e850..0x401b_e870,
            at(EH_TERMINATE, 47),
        )
        .function(
            "_ZSt9terminatev",
            0x401b_e890..0x401b_e8b0,
            at(EH_TERMINATE, 57),
        );
    Fixture::new("abort.txt", elf)
}

/// ESP32-S3 task watchdog: two per-CPU backtraces ending in ROM and `|<-CORRUPTED`.
pub fn task_wdt() -> Fixture {
    let elf = TestElf::new(Architecture::Xtensa)
        .code_section(".iram0.text", 0x4037_0000..0x4038_0000)
        .code_section(".flash.text", 0x4200_0000..0x4201_0000)
        .function(
            "task_wdt_isr",
            0x4037_e080..0x4037_e0c0,
            at("/idf/components/esp_system/task_wdt.c", 183),
        )
        .symbol("_xt_lowint1", 0x4037_b4e0..0x4037_b520);
    Fixture::new("task_wdt.txt", elf)
}

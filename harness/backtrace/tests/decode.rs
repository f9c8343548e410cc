//! Real ESP-IDF transcripts decoded against ELF files whose every function is known: each
//! address must print exactly the function, file and line placed there, and `??` where the
//! ELF has nothing.

use sparring_backtrace::elf_builder::fixtures::{self, Fixture};
use sparring_backtrace::elf_builder::{Architecture, TestElf, at};
use sparring_backtrace::{ElfError, PanicDecoder, Symbolizer, decode_transcript};

/// The decoded lines of a whole transcript, without the transcript itself.
fn decoded(fixture: &Fixture) -> Vec<String> {
    let symbolizer = Symbolizer::from_elf_bytes(&fixture.elf).expect("the test ELF loads");
    let decoder = PanicDecoder::new(&symbolizer);
    fixture
        .lines()
        .iter()
        .flat_map(|line| decoder.feed(line))
        .collect()
}

#[test]
fn xtensa_register_dump_and_backtrace() {
    assert_eq!(
        decoded(&fixtures::xtensa_panic()),
        [
            // `entry point is 0x40081010`: a code address only the symbol table names
            "0x40081010: call_start_cpu1 at ??:?",
            // PC of the register dump, in code inlined into app_main
            "0x400e37f7: write_register at /app/main/registers.h:12",
            " (inlined by) app_main at /app/main/main.c:36",
            // Backtrace PCs; the SPs are not code
            "0x400e37f4: write_register at /app/main/registers.h:12",
            " (inlined by) app_main at /app/main/main.c:36",
            "0x400d0c2e: main_task at /idf/components/freertos/port/port_common.c:133",
            "0x40087015: vPortTaskWrapper at /idf/components/freertos/port/xtensa/port.c:168",
        ]
    );
}

#[test]
fn riscv_register_dump_and_stack_memory() {
    assert_eq!(
        decoded(&fixtures::riscv_panic()),
        [
            "0x420037ce: test_illegal_instruction at /app/main/test_panic.c:40",
            "0x42003a18: run_test at /app/main/test_panic_main.c:30",
            " (inlined by) app_main at /app/main/test_panic_main.c:55",
            // A6 holds a code address: a Rust function, demangled
            "0x420019ee: firmware::uart::write at /app/src/uart.rs:44",
            // MTVEC: the vector table, an assembly symbol
            "0x40380001: _vector_table at ??:?",
            // Stack memory words in code. 0x42005b6c lies past app_main's end with no
            // function after it: the nearest symbol before it names it, as binutils does
            "0x42012ea6: main_task at /idf/components/freertos/port/port_common.c:141",
            "0x40384206: vPortTaskWrapper at /idf/components/freertos/port/riscv/port.c:130",
            "0x42005b6c: app_main at ??:?",
        ]
    );
}

#[test]
fn abort_with_cpp_backtrace() {
    const EH_TERMINATE: &str = "/gcc/libstdc++-v3/libsupc++/eh_terminate.cc";
    assert_eq!(
        decoded(&fixtures::abort()),
        [
            format!("0x401be85b: __cxxabiv1::__terminate(void (*)()) at {EH_TERMINATE}:47"),
            "0x4008f3bc: invoke_abort at /idf/components/esp32/panic.c:156".to_owned(),
            "0x4008f639: abort at /idf/components/esp32/panic.c:171".to_owned(),
            format!("0x401be85b: __cxxabiv1::__terminate(void (*)()) at {EH_TERMINATE}:47"),
            format!("0x401be8a2: std::terminate() at {EH_TERMINATE}:57"),
            "0x401bdf77: __cxa_throw at /gcc/libstdc++-v3/libsupc++/eh_throw.cc:95".to_owned(),
            "0x401be2b2: operator new(unsigned int) at /gcc/libstdc++-v3/libsupc++/new_op.cc:54"
                .to_owned(),
            // backtrace PCs in code no DWARF covers: the nearest symbol before them
            "0x401be015: __cxa_throw at ??:?".to_owned(),
            "0x400d625f: BLEDevice::init() at /sketch/homey_ble.ino:20".to_owned(),
            "0x400d7398: setup at /sketch/homey_ble.ino:64".to_owned(),
            "0x400d73e0: loop() at /sketch/homey_ble.ino:80".to_owned(),
            "0x400d0ead: loopTask(void*) at /arduino/cores/esp32/main.cpp:19".to_owned(),
            "0x400d8434: loop() at ??:?".to_owned(),
            "0x400906ae: vPortTaskWrapper at /idf/components/freertos/port.c:143".to_owned(),
            // the boot lines after the reset (`load:0x40080400`, `entry 0x400806b4`) are in
            // IRAM but before its first function: skipped, as idf.py monitor skips them
        ]
    );
}

#[test]
fn task_watchdog_backtraces_end_in_rom() {
    let one_report = [
        "0x4037e0a6: task_wdt_isr at /idf/components/esp_system/task_wdt.c:183",
        "0x4037b4fd: _xt_lowint1 at ??:?",
        // a ROM address, outside the ELF: printed, and decoding goes on
        "0x400559dd: ?? ??:0",
    ];
    assert_eq!(
        decoded(&fixtures::task_wdt()),
        [one_report, one_report].concat()
    );
}

#[test]
fn transcript_keeps_each_line_before_its_frames() {
    let fixture = fixtures::task_wdt();
    let symbolizer = Symbolizer::from_elf_bytes(&fixture.elf).expect("the test ELF loads");
    let lines = fixture.lines();
    let printed = decode_transcript(&symbolizer, &lines);
    let backtrace = lines
        .iter()
        .position(|l| l.starts_with("Backtrace:"))
        .expect("the fixture has a backtrace");
    assert_eq!(printed[..=backtrace], lines[..=backtrace]);
    assert_eq!(
        printed[backtrace + 1],
        "0x4037e0a6: task_wdt_isr at /idf/components/esp_system/task_wdt.c:183"
    );
    assert_eq!(printed.len(), lines.len() + 6);
}

#[test]
fn lines_without_code_addresses_decode_to_nothing() {
    let fixture = fixtures::xtensa_panic();
    let symbolizer = Symbolizer::from_elf_bytes(&fixture.elf).expect("the test ELF loads");
    let decoder = PanicDecoder::new(&symbolizer);
    for line in [
        "Guru Meditation Error: Core  0 panic'ed (StoreProhibited). Exception was unhandled.",
        "E (5852) task_wdt: Task watchdog got triggered.",
        // data addresses, and the ROM loader's `Saved PC:` which is no panic PC
        "A14     : 0x3ffb7d80  A15     : 0x00000000  SAR     : 0x00000014",
        "Saved PC:0x40381f24",
        // too short to be an address
        "value 0x400e37f",
    ] {
        assert_eq!(decoder.feed(line), Vec::<String>::new(), "{line}");
    }
}

#[test]
fn addresses_before_any_function_or_outside_the_elf_resolve_to_no_frame() {
    let elf = TestElf::new(Architecture::Riscv32)
        .code_section(".text", 0x4200_0000..0x4200_1000)
        .function("f", 0x4200_0100..0x4200_0110, at("/a/f.c", 1))
        .build();
    let symbolizer = Symbolizer::from_elf_bytes(&elf).expect("the test ELF loads");
    assert_eq!(symbolizer.resolve(0x4200_00ff), []);
    assert_eq!(symbolizer.resolve(0x1234_5678), []);
    assert!(symbolizer.is_executable(0x4200_0fff));
    assert!(!symbolizer.is_executable(0x4200_1000));
    assert_eq!(
        PanicDecoder::new(&symbolizer).feed("abort() was called at PC 0x12345678 on core 0"),
        ["0x12345678: ?? ??:0"]
    );
}

#[test]
fn a_file_that_is_no_elf_is_refused_with_the_reason() {
    let error = Symbolizer::from_elf_bytes(b"MZ\x90\x00 not an ELF").expect_err("refused");
    assert!(matches!(error, ElfError::NotElf(_)), "{error:?}");
    assert!(
        error.to_string().starts_with("not an ELF file ("),
        "{error}"
    );

    let missing = std::env::temp_dir().join("sparring-backtrace-no-such.elf");
    let error = Symbolizer::from_path(&missing).expect_err("refused");
    assert!(matches!(error, ElfError::Read(_)), "{error:?}");
}

#[test]
fn truncated_elf_files_load_or_fail_but_never_panic() {
    let elf = fixtures::riscv_panic().elf;
    let mut loaded = 0;
    for length in (0..elf.len()).step_by(97) {
        if let Ok(symbolizer) = Symbolizer::from_elf_bytes(&elf[..length]) {
            loaded += 1;
            // whatever survived, decoding goes on
            let _ =
                PanicDecoder::new(&symbolizer).feed("MEPC    : 0x420037ce  RA      : 0x42003a18");
        }
    }
    assert!(
        loaded < elf.len() / 97,
        "a file cut short is refused at least sometimes"
    );
}

use super::*;
use probe_rs::integration::FakeProbe;
use probe_rs::probe::list::{ProbeListItem, ProbeLister};
use probe_rs::probe::{DebugProbe, ProbeFactory};
use probe_rs::probe::{DebugProbeSelector, Probe};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

/// Stands for a USB driver in listings; opening goes through [`FakeLister`].
#[derive(Debug)]
struct FakeDriver;

impl std::fmt::Display for FakeDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("fake")
    }
}

impl ProbeFactory for FakeDriver {
    fn open(&self, _: &DebugProbeSelector) -> Result<Box<dyn DebugProbe>, DebugProbeError> {
        Ok(Box::new(FakeProbe::with_mocked_core()))
    }
    fn list_probes(&self) -> Vec<ProbeListItem> {
        Vec::new()
    }
}

/// Probes "attached" to this machine: each opens as probe-rs's mocked ARM core, whose
/// memory reads come from `memory`'s loadable segments when given (zeros otherwise).
#[derive(Debug)]
struct FakeLister {
    probes: Vec<DebugProbeInfo>,
    memory: Option<PathBuf>,
}

impl ProbeLister for FakeLister {
    fn open(&self, _: &DebugProbeSelector) -> Result<Probe, DebugProbeError> {
        let core = match &self.memory {
            Some(elf) => FakeProbe::with_mocked_core_and_binary(elf),
            None => FakeProbe::with_mocked_core(),
        };
        Ok(Probe::from_specific_probe(Box::new(core)))
    }
    fn list_with_access(&self, selector: Option<&DebugProbeSelector>) -> Vec<ProbeListItem> {
        self.probes
            .iter()
            .filter(|info| selector.is_none_or(|s| s.matches_probe(info)))
            .cloned()
            .map(ProbeListItem::accessible)
            .collect()
    }
}

fn lister(serials: &[&str]) -> Lister {
    lister_with_memory(serials, None)
}

fn lister_with_memory(serials: &[&str], memory: Option<PathBuf>) -> Lister {
    let probes = serials
        .iter()
        .map(|serial| {
            DebugProbeInfo::new(
                "J-Link",
                0x1366,
                0x1051,
                Some((*serial).to_owned()),
                &FakeDriver,
                None,
                false,
            )
        })
        .collect();
    Lister::with_lister(Box::new(FakeLister { probes, memory }))
}

fn selector(text: &str) -> DebugProbeSelector {
    parse_selector(text).expect("a valid selector")
}

/// STM32F411's flash and RAM, where the test ELFs put code and the RTT control block.
const FLASH: u64 = 0x0800_0000;
const RAM: u64 = 0x2000_0000;
const TARGET: &str = "STM32F411RETx";

/// A minimal executable ARM ELF: one PT_LOAD segment per `(address, bytes)`, the first as
/// `.text`, the others as `.data` (probe-rs's mocked core serves only segments holding a
/// section), and, when `rtt` is given, a `_SEGGER_RTT` symbol there in a `.bss` section.
fn arm_elf(segments: &[(u64, &[u8])], rtt: Option<u64>) -> Vec<u8> {
    use object::elf;
    use object::write::elf::{FileHeader, ProgramHeader, SectionHeader, Sym, Writer};
    const RTT_BLOCK_SIZE: u64 = 168;
    let (text_address, code) = segments[0];
    let mut out = Vec::new();
    let mut writer = Writer::new(object::Endianness::Little, false, &mut out);
    writer.reserve_file_header();
    writer.reserve_program_headers(u32::try_from(segments.len()).expect("few segments"));
    let offsets: Vec<u64> = segments
        .iter()
        .map(|(_, bytes)| writer.reserve(bytes.len() as u64, 4))
        .collect();
    writer.reserve_null_section_index();
    let text_name = writer.add_section_name(b".text");
    writer.reserve_section_index();
    let data_name = writer.add_section_name(b".data");
    for _ in &segments[1..] {
        writer.reserve_section_index();
    }
    let bss = rtt.map(|_| {
        let name = writer.add_section_name(b".bss");
        (name, writer.reserve_section_index())
    });
    let symbol_name = rtt.map(|_| writer.add_string(b"_SEGGER_RTT"));
    writer.reserve_null_symbol_index();
    if let Some((_, index)) = bss {
        writer.reserve_symbol_index(Some(index));
    }
    writer.reserve_symtab_section_index();
    writer.reserve_strtab_section_index();
    writer.reserve_shstrtab_section_index();
    writer.reserve_symtab();
    writer.reserve_strtab().expect("string table reserved");
    writer.reserve_shstrtab().expect("section names reserved");
    writer.reserve_section_headers();

    writer
        .write_file_header(&FileHeader {
            os_abi: elf::ELFOSABI_NONE,
            abi_version: 0,
            e_type: elf::ET_EXEC,
            e_machine: elf::EM_ARM,
            // Thumb entry point, as Cortex-M code has.
            e_entry: text_address | 1,
            e_flags: elf::FileFlags(0x0500_0000),
        })
        .expect("file header written");
    writer.write_align_program_headers();
    for ((address, bytes), offset) in segments.iter().zip(&offsets) {
        writer.write_program_header(&ProgramHeader {
            p_type: elf::PT_LOAD,
            p_flags: elf::ProgramFlags(elf::PF_R.0 | elf::PF_X.0),
            p_offset: *offset,
            p_vaddr: *address,
            p_paddr: *address,
            p_filesz: bytes.len() as u64,
            p_memsz: bytes.len() as u64,
            p_align: 4,
        });
    }
    for (_, bytes) in segments {
        writer.write_align(4);
        writer.write(bytes);
    }
    writer.write_null_symbol();
    if let (Some((_, index)), Some(address)) = (bss, rtt) {
        writer.write_symbol(&Sym {
            section: Some(index.0),
            st_name: writer.string_offset(symbol_name),
            st_info: elf::SymbolInfo::new(elf::STB_GLOBAL, elf::STT_OBJECT),
            st_other: elf::SymbolOther::default(),
            st_shndx: elf::SymbolSection::new(index.0),
            st_value: address,
            st_size: RTT_BLOCK_SIZE,
        });
    }
    writer.write_strtab();
    writer.write_shstrtab();
    writer.write_null_section_header();
    writer.write_section_header(&SectionHeader {
        sh_name: writer.section_name_offset(Some(text_name)),
        sh_type: elf::SHT_PROGBITS,
        sh_flags: elf::SectionFlags(elf::SHF_ALLOC.0 | elf::SHF_EXECINSTR.0),
        sh_addr: text_address,
        sh_offset: offsets[0],
        sh_size: code.len() as u64,
        sh_addralign: 4,
        ..Default::default()
    });
    for ((address, bytes), offset) in segments.iter().zip(&offsets).skip(1) {
        writer.write_section_header(&SectionHeader {
            sh_name: writer.section_name_offset(Some(data_name)),
            sh_type: elf::SHT_PROGBITS,
            sh_flags: elf::SectionFlags(elf::SHF_ALLOC.0 | elf::SHF_WRITE.0),
            sh_addr: *address,
            sh_offset: *offset,
            sh_size: bytes.len() as u64,
            sh_addralign: 4,
            ..Default::default()
        });
    }
    if let (Some((name, _)), Some(address)) = (bss, rtt) {
        writer.write_section_header(&SectionHeader {
            sh_name: writer.section_name_offset(Some(name)),
            sh_type: elf::SHT_NOBITS,
            sh_flags: elf::SectionFlags(elf::SHF_ALLOC.0 | elf::SHF_WRITE.0),
            sh_addr: address,
            sh_size: RTT_BLOCK_SIZE,
            sh_addralign: 4,
            ..Default::default()
        });
    }
    writer.write_symtab_section_header(1);
    writer.write_strtab_section_header();
    writer.write_shstrtab_section_header();
    out
}

/// RAM as the firmware leaves it once RTT is up: the control block at `at` with one up
/// channel (SEGGER's layout, 32-bit) whose buffer, right after it, holds `text` unread.
fn rtt_memory(at: u64, text: &[u8]) -> Vec<u8> {
    const HEADER: usize = 16 + 4 + 4;
    const CHANNEL: usize = 6 * 4;
    const BUFFER: usize = 256;
    let buffer_at = at + (HEADER + CHANNEL) as u64;
    let word = |value: u64| u32::try_from(value).expect("32-bit").to_le_bytes();
    let mut memory = Vec::new();
    memory.extend_from_slice(b"SEGGER RTT\0\0\0\0\0\0");
    memory.extend_from_slice(&word(1)); // up channels
    memory.extend_from_slice(&word(0)); // down channels
    memory.extend_from_slice(&word(0)); // name: none
    memory.extend_from_slice(&word(buffer_at));
    memory.extend_from_slice(&word(BUFFER as u64));
    memory.extend_from_slice(&word(text.len() as u64)); // write offset
    memory.extend_from_slice(&word(0)); // read offset
    memory.extend_from_slice(&word(0)); // flags
    memory.extend_from_slice(text);
    // The fake core reads a segment's bytes short of its very end: pad past the buffer.
    memory.resize(HEADER + CHANNEL + BUFFER + 16, 0);
    memory
}

fn elf_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("ELF written");
    path
}

fn dry_run() -> ProbeFlashOptions {
    ProbeFlashOptions {
        verify: false,
        dry_run: true,
        progress: false,
    }
}

#[test]
fn a_selector_matching_no_probe_names_the_probes_found() {
    let error = open_probe(&lister(&["000111"]), &selector("1366:1051:999999"))
        .expect_err("no probe has serial 999999");
    let said = error.to_string();
    assert!(matches!(error, ProbeError::NoProbe { .. }), "{said}");
    assert!(said.contains("1366:1051:000111"), "{said}");
}

#[test]
fn two_probes_matching_a_selector_are_refused_naming_both() {
    let error = open_probe(&lister(&["000111", "000222"]), &selector("1366:1051"))
        .expect_err("two J-Links match VID:PID alone");
    let said = error.to_string();
    assert!(
        matches!(error, ProbeError::Ambiguous { count: 2, .. }),
        "{said}"
    );
    assert!(said.contains("000111") && said.contains("000222"), "{said}");
}

#[test]
fn the_serial_number_picks_one_of_two_probes() {
    open_probe(
        &lister(&["000111", "000222"]),
        &selector("1366:1051:000222"),
    )
    .expect("exactly one probe has serial 000222");
}

#[test]
fn selector_text_that_is_not_vid_pid_is_refused() {
    let said = parse_selector("jlink").expect_err("not VID:PID");
    assert!(said.contains("VID:PID:SERIAL"), "{said}");
    // An ESP USB-JTAG serial number is a MAC: colons after the PID belong to it.
    let esp = selector("303a:1001:F4:12:FA:01:02:03");
    assert_eq!(esp.serial_number.as_deref(), Some("F4:12:FA:01:02:03"));
}

#[test]
fn an_elf_in_flash_dry_run_flashes_and_one_outside_flash_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let probe = ProbeSession::attach(&lister(&["000111"]), &selector("1366:1051"), TARGET)
        .expect("the mocked core attaches as an STM32F411");
    // A vector table's worth of bytes: initial SP, then the reset vector.
    let code: Vec<u8> = (0u8..64).collect();
    let in_flash = elf_file(
        dir.path(),
        "in-flash.elf",
        &arm_elf(&[(FLASH, &code)], None),
    );
    probe
        .flash_elf(&in_flash, dry_run())
        .expect("an ELF at the flash address is accepted");
    let nowhere = elf_file(
        dir.path(),
        "nowhere.elf",
        &arm_elf(&[(0x9000_0000, &code)], None),
    );
    let error = probe
        .flash_elf(&nowhere, dry_run())
        .expect_err("no flash or RAM at 0x90000000 on an STM32F411");
    assert!(matches!(error, ProbeError::FlashFile { .. }), "{error}");
}

#[test]
fn regions_dry_run_flash_at_flash_addresses_only() {
    let probe = ProbeSession::attach(&lister(&["000111"]), &selector("1366:1051"), TARGET)
        .expect("the mocked core attaches as an STM32F411");
    let region = |offset: u64| Region {
        offset: u32::try_from(offset).expect("32-bit address"),
        data: vec![0xa5; 256],
        name: "app.bin".into(),
    };
    probe
        .flash_regions(&[region(FLASH)], dry_run())
        .expect("bytes at the flash address are accepted");
    let error = probe
        .flash_regions(&[region(0x9000_0000)], dry_run())
        .expect_err("no flash at 0x90000000");
    assert!(
        error.to_string().contains("app.bin at 0x90000000"),
        "{error}"
    );
}

#[test]
fn the_rtt_control_block_is_found_through_the_segger_symbol() {
    let with = arm_elf(&[(FLASH, &[0; 16])], Some(RAM + 0x100));
    assert_eq!(rtt_control_block(&with), Some(RAM + 0x100));
    let without = arm_elf(&[(FLASH, &[0; 16])], None);
    assert_eq!(rtt_control_block(&without), None);
}

#[test]
fn rtt_text_arrives_in_the_observations_as_log_lines() {
    let dir = tempfile::tempdir().expect("temp dir");
    let block = RAM + 0x100;
    let memory = rtt_memory(block, b"app: sensor ready\n");
    let elf = arm_elf(&[(FLASH, &[0; 16]), (block, &memory)], Some(block));
    let path = elf_file(dir.path(), "rtt.elf", &elf);
    let lister = lister_with_memory(&["000111"], Some(path));
    let probe = ProbeSession::attach(&lister, &selector("1366:1051"), TARGET)
        .expect("the mocked core attaches as an STM32F411");
    let observations = crate::observe::Observations::new();
    let sink: Sink = Arc::new(Mutex::new(observations.clone()));
    let reader = probe.start_rtt(rtt_control_block(&elf), RttText::plain(), sink);
    // The mocked core ignores the reader's write of the read offset, so the same text
    // comes again at each poll; what counts is that it arrives as lines of the log port.
    let seen = observations.wait_for(
        std::time::Instant::now() + Duration::from_secs(10),
        |observed| {
            observed
                .log
                .lines()
                .iter()
                .any(|line| line.text == "app: sensor ready")
                .then_some(())
        },
    );
    assert!(
        seen.is_some(),
        "no RTT line in the log: {:?}",
        observations.lock().log.lines()
    );
    assert!(reader.is_alive());
    assert!(
        observations.lock().at.lines().is_empty(),
        "RTT is the log port only"
    );
}

#[test]
fn an_arm_board_is_identified_by_the_target_its_probe_attached_to() {
    let entry = ProbeEntry {
        id: "stm".into(),
        probe: selector("1366:1051"),
        target: TARGET.into(),
        log: ProbeLog::Rtt,
        elf: PathBuf::from("app.elf"),
        firmware: FirmwareKind::App,
        origin: "boards.toml:1".into(),
    };
    let mut board = ProbeBoard::open(&entry, &lister(&["000111"]), false, &mut |_| {})
        .expect("the mocked core attaches");
    assert_eq!(board.target(), Target::Other(TARGET.into()));
    let identity = board.identify().expect("identity through the probe");
    assert_eq!(identity.chip, TARGET);
    // STM32F411RE: 512 KiB of flash in probe-rs's memory map.
    assert_eq!(identity.flash_size, "512KB");
    assert_eq!(
        board.flash_content(),
        FlashContent::Elf(PathBuf::from("app.elf"))
    );
}

#[test]
fn targets_are_checked_against_the_registry_with_close_names() {
    assert_eq!(known_target("esp32c3").as_deref(), Ok("esp32c3"));
    assert_eq!(
        known_target("nRF52840_xxAA").as_deref(),
        Ok("nRF52840_xxAA")
    );
    let said = known_target("esp32c7").expect_err("there is no ESP32-C7");
    assert!(
        said.contains("esp32c3") && said.contains("esp32c6"),
        "{said}"
    );
}

/// Runs `scenarios` (id, `expect` regex on the log) with `sparring run`'s executor on an
/// STM32F411 probe board: `memory` is what the (fake) target's memory holds, `firmware` the
/// ELF its inventory entry names. Returns the verdicts and reasons by scenario id, and the chip
/// the run reported.
fn run_on_probe_board(
    memory: &[u8],
    firmware: &[u8],
    scenarios: &[(&str, &str)],
) -> (
    BTreeMap<String, (crate::events::Verdict, String)>,
    Vec<String>,
) {
    use crate::events::RunEvent;
    use crate::executor::{RunOptions, run};

    let dir = tempfile::tempdir().expect("temp dir");
    let memory_path = elf_file(dir.path(), "memory.elf", memory);
    elf_file(dir.path(), "app.elf", firmware);
    let board = format!("stm-probe-{}", scenarios[0].0);
    let inventory_path = dir.path().join("boards.toml");
    // SNTP on a free port: a real board asks 123, but tests run side by side.
    let inventory_text = format!(
        "[lab]\nsntp_port = 0\n\n[[board]]\nid = \"{board}\"\nprobe = \"1366:1051:000111\"\ntarget = \"{TARGET}\"\nlog = \"rtt\"\nelf = \"app.elf\"\nfirmware = \"app\"\n"
    );
    let inventory = crate::board::inventory::Inventory::parse(&inventory_path, &inventory_text)
        .expect("a valid probe board entry");
    let loaded: Vec<_> = scenarios
        .iter()
        .map(|(id, regex)| {
            let path = dir.path().join(format!("{id}.toml"));
            let text = format!(
                "id = \"{id}\"\ntitle = \"RTT log\"\n[board]\npersonality = \"app\"\n\n[[steps]]\nexpect = {{ port = \"log\", regex = '{regex}', within_ms = 3000 }}\n\n[[steps]]\nexpect-not = {{ port = \"log\", regex = 'panic', window_ms = 200 }}\n"
            );
            std::fs::write(&path, text).expect("scenario written");
            crate::scenario::load_file(&path).expect("a valid scenario")
        })
        .collect();
    let mut options = RunOptions::new(
        vec![board],
        dir.path().join("report"),
        dir.path().join("snapshots"),
    );
    options.inventory = Some(inventory);
    options.probes =
        ProbeFinder::new(move || lister_with_memory(&["000111"], Some(memory_path.clone())));
    let mut chips = Vec::new();
    let results = run(&loaded, &options, &mut |event| {
        if let RunEvent::RunStarted { boards, .. } = event {
            chips.extend(boards.iter().map(|b| b.chip.clone()));
        }
    })
    .expect("the run starts");
    let verdicts = results
        .into_iter()
        .map(|r| (r.id, (r.verdict, r.reason)))
        .collect();
    (verdicts, chips)
}

/// `sparring run`'s executor on a probe board: the ARM target attaches through the (fake)
/// probe, the bench reads its identity from probe-rs and its log from RTT, and `expect` steps
/// match RTT lines as they match UART lines — or fail naming what they waited for.
#[test]
fn scenarios_run_on_a_probe_board_with_its_rtt_log() {
    use crate::events::Verdict;
    let block = RAM + 0x100;
    let memory = rtt_memory(block, b"app: sensor-app 1.4.2 up\napp: temperature 21 C\n");
    let elf = arm_elf(&[(FLASH, &[0; 16]), (block, &memory)], Some(block));
    let (verdicts, chips) = run_on_probe_board(
        &elf,
        &elf,
        &[
            ("rtt-temperature", r"^app: temperature \d+ C$"),
            ("rtt-humidity", r"^app: humidity"),
        ],
    );
    assert_eq!(chips, [TARGET], "the chip as the probe attached to it");
    let (verdict, reason) = &verdicts["rtt-temperature"];
    assert_eq!(*verdict, Verdict::Pass, "{reason}");
    let (verdict, reason) = &verdicts["rtt-humidity"];
    assert_eq!(*verdict, Verdict::Fail, "{reason}");
    assert!(reason.contains("humidity"), "{reason}");
}

/// Firmware with a defmt table: the RTT channel carries rzcobs frames, and the scenario's
/// `expect` matches the message defmt-decoder renders from the ELF's table.
#[test]
fn defmt_frames_on_rtt_are_matched_as_decoded_lines() {
    use super::rtt_text::tests::{TEMPERATURE, add_symbol, defmt_object, rzcobs_frame};
    use crate::events::Verdict;
    let block = RAM + 0x100;
    let frames = [
        rzcobs_frame(TEMPERATURE, &[21]),
        rzcobs_frame(TEMPERATURE, &[22]),
    ]
    .concat();
    let memory = rtt_memory(block, &frames);
    let memory_elf = arm_elf(&[(FLASH, &[0; 16]), (block, &memory)], Some(block));
    let mut firmware = defmt_object("rzcobs", None);
    add_symbol(
        &mut firmware,
        "_SEGGER_RTT",
        block,
        object::write::SymbolSection::Absolute,
    );
    let firmware = firmware.write().expect("the firmware ELF is written");
    let (verdicts, _) = run_on_probe_board(
        &memory_elf,
        &firmware,
        &[
            ("defmt-temperature", r"^INFO temperature 22 C$"),
            ("defmt-raw-bytes", r"temperature \{=u8\}"),
        ],
    );
    let (verdict, reason) = &verdicts["defmt-temperature"];
    assert_eq!(*verdict, Verdict::Pass, "{reason}");
    // The format string itself never reaches the log: frames are decoded, not dumped.
    let (verdict, reason) = &verdicts["defmt-raw-bytes"];
    assert_eq!(*verdict, Verdict::Fail, "{reason}");
}

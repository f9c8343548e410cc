//! What happens between reset and the app: the ROM banner, the second-stage bootloader's
//! checks (partition table, otadata and rollback, image validation) and its log lines.

use esp_formats::image::{self, AppDescriptor};
use esp_formats::partition::{self, Partition, PartitionTable};
use esp_formats::{Chip, otadata};

use crate::flash::Flash;

/// Why the chip (re)started, as the ROM prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetCause {
    PowerOn,
    Software,
}

/// The app the bootloader chose and started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootedApp {
    pub partition: Partition,
    pub descriptor: AppDescriptor,
    /// The partition table the bootloader read (the app looks partitions up in it).
    pub table: PartitionTable,
}

/// Log lines of one boot (without line endings) and its result.
#[derive(Debug, Clone)]
pub struct Boot {
    pub lines: Vec<String>,
    pub app: Option<BootedApp>,
}

/// The ROM banner; `download` adds "waiting for download" as the strapped ROM does.
pub fn rom_banner(chip: Chip, cause: ResetCause, download: bool) -> Vec<String> {
    let esp32 = chip == Chip::Esp32;
    let rst = match (cause, esp32) {
        (ResetCause::PowerOn, true) => "rst:0x1 (POWERON_RESET)",
        (ResetCause::PowerOn, false) => "rst:0x1 (POWERON)",
        (ResetCause::Software, true) => "rst:0xc (SW_CPU_RESET)",
        (ResetCause::Software, false) => "rst:0xc (RTC_SW_CPU_RST)",
    };
    let boot = match (download, esp32) {
        (true, true) => "boot:0x3 (DOWNLOAD_BOOT(UART0/UART1/SDIO_REI_REO_V2))",
        (true, false) => "boot:0x4 (DOWNLOAD(USB/UART0/1))",
        (false, true) => "boot:0x13 (SPI_FAST_FLASH_BOOT)",
        (false, false) => "boot:0xc (SPI_FAST_FLASH_BOOT)",
    };
    let mut lines = if esp32 {
        vec!["ets Jun  8 2016 00:22:57".to_owned(), String::new()]
    } else {
        vec![
            "ESP-ROM:esp32c3-api1-20210207".to_owned(),
            "Build:Feb  7 2021".to_owned(),
        ]
    };
    lines.push(format!("{rst},{boot}"));
    if download {
        lines.push("waiting for download".to_owned());
    }
    lines
}

/// Boots from flash: ROM banner, bootloader, partition table, slot choice, app validation.
/// `now_ms` gives the log timestamps. Writes otadata when rollback states change, as the
/// real bootloader does.
pub fn boot(
    chip: Chip,
    cause: ResetCause,
    flash: &mut Flash,
    mut now_ms: impl FnMut() -> u64,
) -> Boot {
    let mut lines = rom_banner(chip, cause, false);
    let bootloader_at = u64::from(chip.bootloader_offset());
    let bootloader = flash
        .read(bootloader_at, 0x7000)
        .map(<[u8]>::to_vec)
        .unwrap_or_default();
    let Ok(parsed) = image::parse_for_chip(&bootloader, chip) else {
        let word = bootloader.get(..4).map_or(0xFFFF_FFFF, |b| {
            u32::from_le_bytes([b[0], b[1], b[2], b[3]])
        });
        lines.push(format!("invalid header: 0x{word:08x}"));
        return Boot { lines, app: None };
    };
    let hex = chip != Chip::Esp32;
    lines.push("SPIWP:0xee".to_owned());
    lines.push(
        if hex {
            "mode:DIO, clock div:1"
        } else {
            "mode:DIO, clock div:2"
        }
        .to_owned(),
    );
    for s in &parsed.segments {
        lines.push(if hex {
            format!("load:0x{:08x},len:0x{:x}", s.load_addr, s.len)
        } else {
            format!("load:0x{:08x},len:{}", s.load_addr, s.len)
        });
    }
    lines.push(format!("entry 0x{:08x}", parsed.header.entry));
    let mut log = |level: char, tag: &str, msg: String| {
        lines.push(format!("{level} ({}) {tag}: {msg}", now_ms()))
    };
    log('I', "boot", "ESP-IDF v5.4.1 2nd stage bootloader".into());
    log('I', "boot", "compile time Jan  1 2026 00:00:00".into());
    log('I', "boot", "chip revision: v0.0".into());
    log(
        'I',
        &format!("boot.{chip}"),
        "SPI Speed      : 40MHz".into(),
    );
    log('I', &format!("boot.{chip}"), "SPI Mode       : DIO".into());
    log(
        'I',
        &format!("boot.{chip}"),
        format!("SPI Flash Size : {}MB", flash.size() >> 20),
    );

    let table_bytes = flash
        .read(u64::from(partition::TABLE_OFFSET), partition::TABLE_MAX_LEN)
        .map(<[u8]>::to_vec)
        .unwrap_or_default();
    let table = match PartitionTable::parse(&table_bytes) {
        Ok(table) => table,
        Err(e) => {
            log('E', "flash_parts", format!("{e}"));
            log('E', "boot", "Failed to verify partition table".into());
            log('E', "boot", "load partition table error!".into());
            return Boot { lines, app: None };
        }
    };
    log('I', "boot", "Partition Table:".into());
    for line in table.listing() {
        log('I', "boot", line);
    }
    log('I', "boot", "End of partition table".into());

    let candidates = boot_order(&table, flash, &mut log);
    for partition in candidates {
        let bytes = flash
            .read(u64::from(partition.offset), partition.size as usize)
            .map(<[u8]>::to_vec)
            .unwrap_or_default();
        match image::parse_for_chip(&bytes, chip) {
            Ok(app) => {
                for (i, s) in app.segments.iter().enumerate() {
                    log(
                        'I',
                        "esp_image",
                        format!(
                            "segment {i}: paddr={:08x} vaddr={:08x} size={:05x}h ({:6}) {}",
                            partition.offset as usize + s.offset,
                            s.load_addr,
                            s.len,
                            s.len,
                            if i == 0 { "map" } else { "load" }
                        ),
                    );
                }
                log(
                    'I',
                    "boot",
                    format!(
                        "Loaded app from partition at offset 0x{:x}",
                        partition.offset
                    ),
                );
                log('I', "boot", "Disabling RNG early entropy source...".into());
                let Some(descriptor) = app.descriptor else {
                    log('E', "boot", "app image has no app descriptor".into());
                    continue;
                };
                log('I', "app_init", "Application information:".into());
                log(
                    'I',
                    "app_init",
                    format!("Project name:     {}", descriptor.project_name),
                );
                log(
                    'I',
                    "app_init",
                    format!("App version:      {}", descriptor.version),
                );
                log(
                    'I',
                    "app_init",
                    format!("Compile time:     {} {}", descriptor.date, descriptor.time),
                );
                let elf: String = descriptor.app_elf_sha256[..8]
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                log('I', "app_init", format!("ELF file SHA256:  {elf}..."));
                log(
                    'I',
                    "app_init",
                    format!("ESP-IDF:          {}", descriptor.idf_ver),
                );
                return Boot {
                    lines,
                    app: Some(BootedApp {
                        partition,
                        descriptor,
                        table: table.clone(),
                    }),
                };
            }
            Err(error) => {
                let (tag, message) = match error {
                    image::ImageError::ChipMismatch { expected, found } => (
                        "boot_comm",
                        format!("mismatch chip ID, expected {expected}, found {found}"),
                    ),
                    image::ImageError::BadMagic { .. } => (
                        "esp_image",
                        format!(
                            "image at 0x{:x} has invalid magic byte (nothing flashed here?)",
                            partition.offset
                        ),
                    ),
                    other => ("esp_image", other.to_string()),
                };
                log('E', tag, message);
                log(
                    'E',
                    "boot",
                    format!(
                        "{} app partition slot is not bootable",
                        slot_name(&partition)
                    ),
                );
            }
        }
    }
    log(
        'E',
        "boot",
        "No bootable app partitions in the partition table".into(),
    );
    Boot { lines, app: None }
}

fn slot_name(p: &Partition) -> String {
    match p.ota_slot() {
        Some(n) => format!("OTA {n}"),
        None => "Factory".to_owned(),
    }
}

/// The order the bootloader tries app partitions: the otadata choice first, then the other
/// OTA slots downwards, then factory and test.
fn boot_order(
    table: &PartitionTable,
    flash: &mut Flash,
    log: &mut impl FnMut(char, &str, String),
) -> Vec<Partition> {
    let slots: Vec<Partition> = table.ota_slots().into_iter().cloned().collect();
    let factory = table
        .by_type(partition::TYPE_APP, partition::SUBTYPE_FACTORY)
        .cloned();
    let mut order = Vec::new();
    if let Some(ota) = otadata::partition(table)
        .cloned()
        .filter(|_| !slots.is_empty())
    {
        let bytes = flash
            .read(u64::from(ota.offset), 2 * otadata::SECTOR)
            .map(<[u8]>::to_vec)
            .unwrap_or_default();
        let mut entries = otadata::read(&bytes);
        // Rollback: an app that was given its one chance and did not confirm is abandoned.
        for (i, entry) in entries.iter_mut().enumerate() {
            if let Some(e) = entry
                && e.state == otadata::OtaState::PendingVerify
            {
                e.state = otadata::OtaState::Aborted;
                let at = u64::from(ota.offset) + (i * otadata::SECTOR) as u64;
                let _ = flash.write(at, &e.to_bytes());
                log(
                    'W',
                    "boot",
                    "app was not confirmed after an update: marked aborted, rolling back".into(),
                );
            }
        }
        match otadata::active(&entries) {
            Some((i, e)) => {
                let slot = e.slot(slots.len());
                if e.state == otadata::OtaState::New {
                    let pending = otadata::OtaEntry {
                        state: otadata::OtaState::PendingVerify,
                        ..e
                    };
                    let _ = flash.write(
                        u64::from(ota.offset) + (i * otadata::SECTOR) as u64,
                        &pending.to_bytes(),
                    );
                }
                order.push(slots[slot].clone());
                order.extend(slots[..slot].iter().rev().cloned());
                order.extend(slots[slot + 1..].iter().rev().cloned());
            }
            None if entries.iter().any(Option::is_some) => {
                log(
                    'E',
                    "boot",
                    "ota data partition invalid, falling back to factory".into(),
                );
                order.extend(factory.clone());
                order.extend(slots.iter().cloned());
            }
            None => {
                if factory.is_some() {
                    log('I', "boot", "Defaulting to factory image".into());
                } else {
                    log('I', "boot", "No factory image, trying OTA 0".into());
                }
                order.extend(factory.clone());
                order.extend(slots.iter().cloned());
            }
        }
    } else {
        order.extend(factory.clone());
        order.extend(slots.iter().cloned());
    }
    let mut seen = Vec::new();
    order.retain(|p: &Partition| {
        let new = !seen.contains(&p.offset);
        seen.push(p.offset);
        new
    });
    order.extend(factory.filter(|f| !seen.contains(&f.offset)));
    order
}

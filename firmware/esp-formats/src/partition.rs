//! Partition tables (`gen_esp32part.py` binary format): parse with the bootloader's checks,
//! build, list as the bootloader logs them, and the ESP-AT layouts.

use std::fmt;

use md5::{Digest, Md5};

use crate::chip::Chip;

pub const TABLE_OFFSET: u32 = 0x8000;
/// Entries (and the MD5 row) fit in the first 0xC00 bytes of the table's sector.
pub const TABLE_MAX_LEN: usize = 0xC00;
const ENTRY_LEN: usize = 32;
const ENTRY_MAGIC: [u8; 2] = [0xAA, 0x50];
const MD5_MAGIC: [u8; 2] = [0xEB, 0xEB];

pub const TYPE_APP: u8 = 0x00;
pub const TYPE_DATA: u8 = 0x01;
/// ESP-AT's custom partition type for its user partitions.
pub const TYPE_AT_CUSTOM: u8 = 0x40;
pub const SUBTYPE_FACTORY: u8 = 0x00;
pub const SUBTYPE_OTA_0: u8 = 0x10;
pub const SUBTYPE_TEST: u8 = 0x20;
pub const SUBTYPE_DATA_OTA: u8 = 0x00;
pub const SUBTYPE_DATA_PHY: u8 = 0x01;
pub const SUBTYPE_DATA_NVS: u8 = 0x02;
pub const SUBTYPE_DATA_FAT: u8 = 0x81;

/// One partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    pub label: String,
    pub kind: u8,
    pub subtype: u8,
    pub offset: u32,
    pub size: u32,
    pub flags: u32,
}

impl Partition {
    pub fn new(label: &str, kind: u8, subtype: u8, offset: u32, size: u32) -> Partition {
        Partition {
            label: label.to_owned(),
            kind,
            subtype,
            offset,
            size,
            flags: 0,
        }
    }

    /// `ota_N` index of an OTA app partition.
    pub fn ota_slot(&self) -> Option<u8> {
        (self.kind == TYPE_APP && (SUBTYPE_OTA_0..SUBTYPE_OTA_0 + 16).contains(&self.subtype))
            .then(|| self.subtype - SUBTYPE_OTA_0)
    }

    /// The "Usage" column of the bootloader's table listing.
    pub fn usage(&self) -> &'static str {
        match (self.kind, self.subtype) {
            (TYPE_APP, SUBTYPE_FACTORY) => "factory app",
            (TYPE_APP, SUBTYPE_TEST) => "test app",
            (TYPE_APP, s) if (0x10..0x20).contains(&s) => "OTA app",
            (TYPE_APP, _) => "Unknown app",
            (TYPE_DATA, SUBTYPE_DATA_OTA) => "OTA data",
            (TYPE_DATA, SUBTYPE_DATA_PHY) => "RF data",
            (TYPE_DATA, SUBTYPE_DATA_NVS) => "WiFi data",
            (TYPE_DATA, 0x04) => "NVS keys",
            (TYPE_DATA, 0x05) => "efuse",
            (TYPE_DATA, _) => "Unknown data",
            _ => "unknown",
        }
    }

    pub fn end(&self) -> u64 {
        u64::from(self.offset) + u64::from(self.size)
    }
}

/// A partition table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionTable {
    pub partitions: Vec<Partition>,
}

/// What is wrong with a partition table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PartitionError {
    #[error("no partition table: the first entry has magic {found:02x?}, expected [aa, 50]")]
    NoTable { found: [u8; 2] },
    #[error("entry {index} at offset 0x{offset:x} has invalid magic {found:02x?}")]
    BadEntryMagic {
        index: usize,
        offset: usize,
        found: [u8; 2],
    },
    #[error("partition table MD5 mismatch: calculated {calculated}, stored {stored}")]
    Md5Mismatch { calculated: String, stored: String },
    #[error("partition table has no end marker within 0x{max:x} bytes")]
    Unterminated { max: usize },
    #[error("partition {label:?} at 0x{offset:x} overlaps {other:?}")]
    Overlap {
        label: String,
        offset: u32,
        other: String,
    },
    #[error("partition {label:?} ({kind}) at 0x{offset:x} is not aligned to 0x{align:x}")]
    Misaligned {
        label: String,
        kind: &'static str,
        offset: u32,
        align: u32,
    },
    #[error("partition label {label:?} is longer than 16 bytes")]
    LabelTooLong { label: String },
}

impl PartitionTable {
    /// Parses a table as the bootloader does, checking magic, MD5 row and layout.
    pub fn parse(bytes: &[u8]) -> Result<PartitionTable, PartitionError> {
        let mut partitions = Vec::new();
        let limit = bytes.len().min(TABLE_MAX_LEN);
        let mut pos = 0;
        loop {
            let Some(row) = bytes
                .get(pos..pos + ENTRY_LEN)
                .filter(|_| pos + ENTRY_LEN <= limit)
            else {
                return Err(PartitionError::Unterminated { max: limit });
            };
            let magic = [row[0], row[1]];
            if magic == ENTRY_MAGIC {
                let label_bytes = &row[12..28];
                let end = label_bytes.iter().position(|b| *b == 0).unwrap_or(16);
                partitions.push(Partition {
                    label: String::from_utf8_lossy(&label_bytes[..end]).into_owned(),
                    kind: row[2],
                    subtype: row[3],
                    offset: u32::from_le_bytes([row[4], row[5], row[6], row[7]]),
                    size: u32::from_le_bytes([row[8], row[9], row[10], row[11]]),
                    flags: u32::from_le_bytes([row[28], row[29], row[30], row[31]]),
                });
            } else if magic == MD5_MAGIC {
                let calculated: [u8; 16] = Md5::digest(&bytes[..pos]).into();
                if calculated != row[16..32] {
                    return Err(PartitionError::Md5Mismatch {
                        calculated: hex(&calculated),
                        stored: hex(&row[16..32]),
                    });
                }
            } else if row.iter().all(|b| *b == 0xFF) {
                break;
            } else if pos == 0 {
                return Err(PartitionError::NoTable { found: magic });
            } else {
                return Err(PartitionError::BadEntryMagic {
                    index: pos / ENTRY_LEN,
                    offset: pos,
                    found: magic,
                });
            }
            pos += ENTRY_LEN;
        }
        if partitions.is_empty() {
            return Err(PartitionError::NoTable {
                found: [0xFF, 0xFF],
            });
        }
        let table = PartitionTable { partitions };
        table.validate()?;
        Ok(table)
    }

    /// Checks labels, alignment (apps 64 KiB, data 4 KiB) and overlaps.
    pub fn validate(&self) -> Result<(), PartitionError> {
        for (i, p) in self.partitions.iter().enumerate() {
            if p.label.len() > 16 {
                return Err(PartitionError::LabelTooLong {
                    label: p.label.clone(),
                });
            }
            let (kind, align) = if p.kind == TYPE_APP {
                ("app", 0x10000)
            } else {
                ("data", 0x1000)
            };
            if p.offset % align != 0 {
                return Err(PartitionError::Misaligned {
                    label: p.label.clone(),
                    kind,
                    offset: p.offset,
                    align,
                });
            }
            for other in &self.partitions[..i] {
                if u64::from(p.offset) < other.end() && u64::from(other.offset) < p.end() {
                    return Err(PartitionError::Overlap {
                        label: p.label.clone(),
                        offset: p.offset,
                        other: other.label.clone(),
                    });
                }
            }
        }
        Ok(())
    }

    /// The binary table with MD5 row, `0xFF`-filled to 0xC00 bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, PartitionError> {
        self.validate()?;
        let mut out = Vec::with_capacity(TABLE_MAX_LEN);
        for p in &self.partitions {
            out.extend_from_slice(&ENTRY_MAGIC);
            out.push(p.kind);
            out.push(p.subtype);
            out.extend_from_slice(&p.offset.to_le_bytes());
            out.extend_from_slice(&p.size.to_le_bytes());
            let mut label = [0u8; 16];
            label[..p.label.len()].copy_from_slice(p.label.as_bytes());
            out.extend_from_slice(&label);
            out.extend_from_slice(&p.flags.to_le_bytes());
        }
        let md5: [u8; 16] = Md5::digest(&out).into();
        out.extend_from_slice(&MD5_MAGIC);
        out.extend_from_slice(&[0xFF; 14]);
        out.extend_from_slice(&md5);
        out.resize(TABLE_MAX_LEN, 0xFF);
        Ok(out)
    }

    pub fn find(&self, label: &str) -> Option<&Partition> {
        self.partitions.iter().find(|p| p.label == label)
    }

    pub fn by_type(&self, kind: u8, subtype: u8) -> Option<&Partition> {
        self.partitions
            .iter()
            .find(|p| p.kind == kind && p.subtype == subtype)
    }

    /// OTA app partitions in slot order.
    pub fn ota_slots(&self) -> Vec<&Partition> {
        let mut slots: Vec<&Partition> = self
            .partitions
            .iter()
            .filter(|p| p.ota_slot().is_some())
            .collect();
        slots.sort_by_key(|p| p.subtype);
        slots
    }

    /// The bootloader's listing lines (without log prefixes).
    pub fn listing(&self) -> Vec<String> {
        let mut lines =
            vec!["## Label            Usage          Type ST Offset   Length".to_owned()];
        for (i, p) in self.partitions.iter().enumerate() {
            lines.push(format!(
                "{i:2} {:<16} {:<16} {:02x} {:02x} {:08x} {:08x}",
                p.label,
                p.usage(),
                p.kind,
                p.subtype,
                p.offset,
                p.size
            ));
        }
        lines
    }
}

impl fmt::Display for PartitionTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for line in self.listing() {
            writeln!(f, "{line}")?;
        }
        Ok(())
    }
}

/// Where an ESP-AT build keeps its certificates (esp-facts §4.2).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AtStorage {
    /// v2.x–v3.0.0.0: one user partition per PKI bin (`mqtt_ca`, `client_cert`, ...), written
    /// with `AT+SYSFLASH`.
    #[default]
    PkiPartitions,
    /// v3.1 and later: one manufacturing NVS partition (`mfg_nvs`), one namespace per
    /// certificate kind, written with `AT+SYSMFG`.
    MfgNvs,
}

/// The label of the v3.1+ manufacturing NVS partition.
pub const MFG_NVS: &str = "mfg_nvs";

/// An ESP-AT flash layout: the main table, and the secondary `at_customize` table listing the
/// user partitions (`AT+SYSFLASH`), which hold either PKI bins or the `mfg_nvs` partition.
#[derive(Debug, Clone)]
pub struct EspAtLayout {
    pub main: PartitionTable,
    /// Written at the start of the `at_customize` partition.
    pub at_customize: PartitionTable,
}

/// The ESP-AT layout of esp-at's `module_*_default` configurations (see the facts sheet §4.2).
pub fn esp_at_layout(chip: Chip, storage: AtStorage) -> EspAtLayout {
    let p = Partition::new;
    let c3_like = !matches!(chip, Chip::Esp32 | Chip::Esp32S2);
    let main = if c3_like {
        vec![
            p("otadata", TYPE_DATA, SUBTYPE_DATA_OTA, 0xD000, 0x2000),
            p("phy_init", TYPE_DATA, SUBTYPE_DATA_PHY, 0xF000, 0x1000),
            p("nvs", TYPE_DATA, SUBTYPE_DATA_NVS, 0x10000, 0xE000),
            p("at_customize", TYPE_AT_CUSTOM, 0, 0x1E000, 0x42000),
            p("ota_0", TYPE_APP, SUBTYPE_OTA_0, 0x60000, 0x1D0000),
            p("ota_1", TYPE_APP, SUBTYPE_OTA_0 + 1, 0x230000, 0x1D0000),
        ]
    } else {
        vec![
            p("phy_init", TYPE_DATA, SUBTYPE_DATA_PHY, 0xF000, 0x1000),
            p("otadata", TYPE_DATA, SUBTYPE_DATA_OTA, 0x10000, 0x2000),
            p("nvs", TYPE_DATA, SUBTYPE_DATA_NVS, 0x12000, 0xE000),
            p("at_customize", TYPE_AT_CUSTOM, 0, 0x20000, 0xE0000),
            p("ota_0", TYPE_APP, SUBTYPE_OTA_0, 0x100000, 0x180000),
            p("ota_1", TYPE_APP, SUBTYPE_OTA_0 + 1, 0x280000, 0x180000),
        ]
    };
    let (fat_offset, fat_size) = if c3_like {
        (0x47000, 0x19000)
    } else {
        (0x70000, 0x90000)
    };
    let fatfs = p("fatfs", TYPE_DATA, SUBTYPE_DATA_FAT, fat_offset, fat_size);
    let main = PartitionTable { partitions: main };
    if storage == AtStorage::MfgNvs {
        let (mfg_offset, mfg_size) = if c3_like {
            (0x1F000, 0x1F000)
        } else {
            (0x21000, 0x1C000)
        };
        return EspAtLayout {
            main,
            at_customize: PartitionTable {
                partitions: vec![
                    p(MFG_NVS, TYPE_DATA, SUBTYPE_DATA_NVS, mfg_offset, mfg_size),
                    fatfs,
                ],
            },
        };
    }
    let user = [
        ("ble_data", 1),
        ("server_cert", 2),
        ("server_key", 3),
        ("server_ca", 4),
        ("client_cert", 5),
        ("client_key", 6),
        ("client_ca", 7),
        ("factory_param", 8),
        ("wpa2_cert", 9),
        ("wpa2_key", 10),
        ("wpa2_ca", 11),
        ("mqtt_cert", 12),
        ("mqtt_key", 13),
        ("mqtt_ca", 14),
    ];
    let (ble_offset, ble_size, server_cert_offset) = if c3_like {
        (0x1F000, 0x6000, 0x25000)
    } else {
        (0x21000, 0x3000, 0x24000)
    };
    let mut at_customize = vec![p("ble_data", TYPE_AT_CUSTOM, 1, ble_offset, ble_size)];
    let mut offset = server_cert_offset;
    for (label, subtype) in &user[1..] {
        let size = if *label == "factory_param" {
            0x1000
        } else {
            0x2000
        };
        at_customize.push(p(label, TYPE_AT_CUSTOM, *subtype, offset, size));
        offset += size;
    }
    at_customize.push(fatfs);
    EspAtLayout {
        main,
        at_customize: PartitionTable {
            partitions: at_customize,
        },
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn esp_at_layouts_match_the_documented_offsets() {
        let c3 = esp_at_layout(Chip::Esp32C3, AtStorage::PkiPartitions);
        assert_eq!(c3.main.find("ota_1").unwrap().offset, 0x230000);
        assert_eq!(c3.at_customize.find("mqtt_cert").unwrap().offset, 0x38000);
        assert_eq!(c3.at_customize.find("mqtt_ca").unwrap().offset, 0x3C000);
        let esp32 = esp_at_layout(Chip::Esp32, AtStorage::PkiPartitions);
        assert_eq!(
            esp32.at_customize.find("mqtt_cert").unwrap().offset,
            0x37000
        );
        assert_eq!(esp32.at_customize.find("mqtt_ca").unwrap().offset, 0x3B000);
        assert_eq!(
            esp32.at_customize.find("factory_param").unwrap().offset,
            0x30000
        );
        assert_eq!(
            esp32.at_customize.find("wpa2_cert").unwrap().offset,
            0x31000
        );
        let c3_mfg = esp_at_layout(Chip::Esp32C3, AtStorage::MfgNvs);
        let mfg = c3_mfg.at_customize.find(MFG_NVS).unwrap();
        assert_eq!((mfg.offset, mfg.size), (0x1F000, 0x1F000));
        assert_eq!(c3_mfg.at_customize.find("fatfs").unwrap().offset, 0x47000);
        let esp32_mfg = esp_at_layout(Chip::Esp32, AtStorage::MfgNvs);
        let mfg = esp32_mfg.at_customize.find(MFG_NVS).unwrap();
        assert_eq!((mfg.offset, mfg.size), (0x21000, 0x1C000));
        assert!(c3_mfg.at_customize.validate().is_ok());
    }

    #[test]
    fn round_trips_and_checks_md5() {
        let table = esp_at_layout(Chip::Esp32C3, AtStorage::PkiPartitions).main;
        let bytes = table.to_bytes().unwrap();
        assert_eq!(bytes.len(), TABLE_MAX_LEN);
        assert_eq!(PartitionTable::parse(&bytes).unwrap(), table);
        let mut corrupt = bytes.clone();
        corrupt[4] ^= 0x10; // first entry's offset
        assert!(matches!(
            PartitionTable::parse(&corrupt),
            Err(PartitionError::Md5Mismatch { .. })
        ));
    }

    #[test]
    fn listing_matches_the_bootloader_format() {
        let table = esp_at_layout(Chip::Esp32C3, AtStorage::PkiPartitions).main;
        assert_eq!(
            table.listing()[1],
            " 0 otadata          OTA data         01 00 0000d000 00002000"
        );
        assert_eq!(
            table.listing()[4],
            " 3 at_customize     unknown          40 00 0001e000 00042000"
        );
    }

    #[test]
    fn erased_flash_and_garbage_are_errors() {
        assert_eq!(
            PartitionTable::parse(&[0xFF; 4096]),
            Err(PartitionError::NoTable {
                found: [0xFF, 0xFF]
            })
        );
        assert!(matches!(
            PartitionTable::parse(&[0x00; 64]),
            Err(PartitionError::NoTable { .. })
        ));
        assert!(PartitionTable::parse(&[0xAA, 0x50, 0]).is_err());
    }

    #[test]
    fn overlaps_are_refused() {
        let table = PartitionTable {
            partitions: vec![
                Partition::new("a", TYPE_DATA, 2, 0x9000, 0x2000),
                Partition::new("b", TYPE_DATA, 2, 0xA000, 0x1000),
            ],
        };
        assert!(matches!(
            table.to_bytes(),
            Err(PartitionError::Overlap { .. })
        ));
    }
}

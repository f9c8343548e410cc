//! The set of files that make a flashable ESP-AT module: bootloader, partition table,
//! initial otadata, the `at_customize` secondary table, the app in the first OTA slot and,
//! for the v3.1+ layout, the manufacturing NVS image (`mfg_nvs.bin`) with the factory
//! parameters. `sparring image flash-set` writes it to disk; the runner flashes it into boards.

use crate::Chip;
use crate::image::{self, AppSpec, FieldTooLong};
use crate::nvs::{self, NvsError};
use crate::otadata;
use crate::partition::{self, AtStorage, MFG_NVS, PartitionError};

/// One file of a flash set and where it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlashFile {
    pub name: &'static str,
    pub offset: u32,
    pub bytes: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum FlashSetError {
    #[error(transparent)]
    App(#[from] FieldTooLong),
    #[error(transparent)]
    Table(#[from] PartitionError),
    #[error(transparent)]
    Nvs(#[from] NvsError),
}

/// The factory parameters ESP-AT's own `mfg_nvs.bin` carries (the `factory_param` namespace);
/// only the module name, which `AT+GMR` reports, matters to the virtual board.
pub fn factory_params(chip: Chip) -> Vec<nvs::Item> {
    let module = match chip {
        Chip::Esp32 => "WROOM-32",
        _ => "MINI-1",
    };
    vec![nvs::Item {
        namespace: "factory_param".into(),
        key: "module_name".into(),
        value: nvs::Value::Str(module.into()),
    }]
}

/// The ESP-AT flash set for `chip` with the app `spec` in `ota_0`.
pub fn esp_at(
    chip: Chip,
    spec: &AppSpec,
    storage: AtStorage,
) -> Result<Vec<FlashFile>, FlashSetError> {
    let layout = partition::esp_at_layout(chip, storage);
    let at = |label: &str| layout.main.find(label).map_or(0, |p| p.offset);
    let otadata_size = otadata::partition(&layout.main).map_or(0x2000, |p| p.size);
    let mut files = vec![
        FlashFile {
            name: "bootloader.bin",
            offset: chip.bootloader_offset(),
            bytes: image::build_bootloader(chip),
        },
        FlashFile {
            name: "partition-table.bin",
            offset: partition::TABLE_OFFSET,
            bytes: layout.main.to_bytes()?,
        },
        FlashFile {
            name: "ota_data_initial.bin",
            offset: at("otadata"),
            bytes: otadata::initial(otadata_size as usize),
        },
        FlashFile {
            name: "at_customize.bin",
            offset: at("at_customize"),
            bytes: layout.at_customize.to_bytes()?,
        },
        FlashFile {
            name: "app.bin",
            offset: at("ota_0"),
            bytes: image::build_app(spec)?,
        },
    ];
    if let Some(mfg) = layout.at_customize.find(MFG_NVS) {
        files.push(FlashFile {
            name: "mfg_nvs.bin",
            offset: mfg.offset,
            bytes: nvs::write(&factory_params(chip), mfg.size as usize)?,
        });
    }
    Ok(files)
}

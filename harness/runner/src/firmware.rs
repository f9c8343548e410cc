//! What to flash, from whatever a user has at hand: an ESP-IDF build directory, an app ELF, a
//! merged binary (`esptool merge-bin`), a sparring flash set (`sparring image flash-set`) or
//! `offset=file` pairs. Each becomes the same list of [`Region`]s, and the whole list is
//! validated for the board's chip before anything touches the board: images for another chip,
//! an app larger than its partition, broken partition tables and overlapping regions are
//! refused with one line naming the file.

use std::fmt;
use std::path::{Path, PathBuf};

use esp_formats::Chip;
use esp_formats::image::{self, IMAGE_MAGIC};
use esp_formats::partition::{self, PartitionTable, TYPE_APP};
use serde::Deserialize;

use crate::flash::{Region, espflash_chip};

/// What kind of input [`resolve`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    IdfBuildDir,
    AppElf,
    MergedBin,
    FlashSet,
    OffsetFiles,
}

impl fmt::Display for InputKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InputKind::IdfBuildDir => "ESP-IDF build directory",
            InputKind::AppElf => "app ELF",
            InputKind::MergedBin => "merged binary",
            InputKind::FlashSet => "sparring flash set",
            InputKind::OffsetFiles => "offset=file pairs",
        })
    }
}

/// Regions ready to flash, validated for one chip.
#[derive(Debug, Clone)]
pub struct Firmware {
    pub kind: InputKind,
    pub regions: Vec<Region>,
    /// The app's ELF when the input names one (an ESP-IDF build, an ELF given directly), for
    /// decoding its panics.
    pub elf: Option<PathBuf>,
    /// `flash_settings` of an ESP-IDF build (`dio 80m 4MB`), shown to the user.
    pub flash_settings: Option<String>,
}

/// Files that complete an app ELF into a bootable flash (espflash's own when absent).
#[derive(Debug, Clone, Default)]
pub struct ElfCompanions {
    pub bootloader: Option<PathBuf>,
    pub partition_table: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum FirmwareError {
    #[error("nothing to flash: give a build directory, an ELF, a .bin or offset=file pairs")]
    Empty,
    #[error("{0}: cannot read: {1}")]
    Read(PathBuf, std::io::Error),
    #[error(
        "{0}: not an ESP-IDF build directory, app ELF, merged binary, flash set or offset=file pair ({1})"
    )]
    Unknown(String, String),
    #[error("{0}: {1}")]
    Invalid(String, String),
    #[error("{input}: built for {found}, but the board is {board}")]
    WrongChip {
        input: String,
        found: String,
        board: Chip,
    },
    #[error(
        "{name}: the app is {len} bytes but its partition {label:?} at 0x{offset:x} holds {size}"
    )]
    AppTooLarge {
        name: String,
        len: usize,
        label: String,
        offset: u32,
        size: u32,
    },
    #[error("{0} at 0x{1:x} overlaps {2} at 0x{3:x}")]
    Overlap(String, u32, String, u32),
    #[error(
        "{0}: one build directory, ELF, merged binary or flash set at a time, or only offset=file pairs"
    )]
    Mixed(String),
}

/// Resolves `inputs` into regions for `chip` and validates them all. Relative paths in them
/// are taken from `base` (`Path::new("")`: the working directory, as a command line's are;
/// an inventory's directory for its `firmware_files`).
pub fn resolve(
    inputs: &[String],
    base: &Path,
    chip: Chip,
    companions: &ElfCompanions,
) -> Result<Firmware, FirmwareError> {
    let firmware = match inputs {
        [] => return Err(FirmwareError::Empty),
        [one] if !one.contains('=') => resolve_path(&base.join(one), chip, companions)?,
        pairs => {
            let regions = pairs
                .iter()
                .map(|pair| offset_file(pair, base))
                .collect::<Result<_, _>>()?;
            Firmware {
                kind: InputKind::OffsetFiles,
                regions,
                elf: None,
                flash_settings: None,
            }
        }
    };
    validate(&firmware.regions, chip)?;
    Ok(firmware)
}

fn resolve_path(
    path: &Path,
    chip: Chip,
    companions: &ElfCompanions,
) -> Result<Firmware, FirmwareError> {
    let shown = path.display().to_string();
    if path.is_dir() {
        return if path.join(IDF_ARGS).is_file() {
            idf_build(&path.join(IDF_ARGS), chip)
        } else if path.join(FLASH_SET).is_file() {
            flash_set(&path.join(FLASH_SET), chip)
        } else {
            Err(FirmwareError::Unknown(
                shown,
                format!("a directory without {IDF_ARGS} or {FLASH_SET}"),
            ))
        };
    }
    let bytes = read(path)?;
    if bytes.starts_with(b"\x7fELF") {
        return app_elf(path, &bytes, chip, companions);
    }
    if bytes.first() == Some(&b'{') {
        let json: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| FirmwareError::Invalid(shown.clone(), format!("not JSON: {e}")))?;
        // flasher_args.json always has flash_settings; a sparring flash set never does.
        return if json.get("flash_settings").is_some() {
            idf_build(path, chip)
        } else if json.get("flash_files").is_some() {
            flash_set(path, chip)
        } else {
            Err(FirmwareError::Unknown(
                shown,
                "JSON without flash_files".into(),
            ))
        };
    }
    if is_merged(&bytes) {
        return Ok(Firmware {
            kind: InputKind::MergedBin,
            regions: vec![Region {
                offset: 0,
                name: file_name(path),
                data: bytes,
            }],
            elf: None,
            flash_settings: None,
        });
    }
    let what = match bytes.first() {
        Some(&IMAGE_MAGIC) => format!(
            "an app image: give its offset, e.g. 0x10000={}",
            path.display()
        ),
        Some(first) => format!("first byte 0x{first:02x}"),
        None => "empty file".into(),
    };
    Err(FirmwareError::Unknown(shown, what))
}

/// The file or directory an input names: the input itself, or the file of an `offset=file`
/// pair.
pub fn named_path(input: &str) -> &str {
    input.split_once('=').map_or(input, |(_, file)| file)
}

const IDF_ARGS: &str = "flasher_args.json";
const FLASH_SET: &str = "flash-set.json";

/// A merged binary holds a bootloader image at one of the chips' bootloader offsets and a
/// partition table at 0x8000, as `esptool merge-bin` lays them out.
fn is_merged(bytes: &[u8]) -> bool {
    let table = bytes
        .get(partition::TABLE_OFFSET as usize..)
        .unwrap_or_default();
    PartitionTable::parse(table).is_ok()
        && BOOTLOADER_OFFSETS
            .iter()
            .any(|&offset| bytes.get(offset as usize) == Some(&IMAGE_MAGIC))
}

/// Where the chips keep their second-stage bootloader: 0x0 (ESP32-C3 and later), 0x1000
/// (ESP32, ESP32-S2). A merged binary for the wrong family has its bootloader at the other.
const BOOTLOADER_OFFSETS: [u32; 2] = [0x0, 0x1000];

/// `flasher_args.json` as ESP-IDF's `components/esptool_py/flasher_args.json.in` writes it
/// (configured by `tools/cmake/flash.cmake`): `flash_settings` (mode, size, freq), `flash_files`
/// (offset → path relative to the build directory), an `app` entry, and the target chip in
/// `extra_esptool_args.chip` (ESP-IDF 4.4 and later).
#[derive(Debug, Deserialize)]
struct IdfFlasherArgs {
    flash_settings: IdfFlashSettings,
    flash_files: std::collections::BTreeMap<String, String>,
    app: Option<IdfFlashEntry>,
    #[serde(default)]
    extra_esptool_args: IdfExtraArgs,
}

#[derive(Debug, Deserialize)]
struct IdfFlashSettings {
    flash_mode: String,
    flash_size: String,
    flash_freq: String,
}

#[derive(Debug, Deserialize)]
struct IdfFlashEntry {
    file: String,
}

#[derive(Debug, Default, Deserialize)]
struct IdfExtraArgs {
    chip: Option<String>,
}

fn idf_build(args_path: &Path, chip: Chip) -> Result<Firmware, FirmwareError> {
    let shown = args_path.display().to_string();
    let args: IdfFlasherArgs = serde_json::from_slice(&read(args_path)?)
        .map_err(|e| FirmwareError::Invalid(shown.clone(), e.to_string()))?;
    check_declared_chip(&shown, args.extra_esptool_args.chip.as_deref(), chip)?;
    let dir = args_path.parent().unwrap_or(Path::new("."));
    let regions = offset_files(&args.flash_files, dir)?;
    let settings = &args.flash_settings;
    if let Some(size) = flash_size_bytes(&settings.flash_size) {
        for region in &regions {
            if u64::from(region.offset) + region.data.len() as u64 > size {
                return Err(FirmwareError::Invalid(
                    region.name.clone(),
                    format!(
                        "ends past the build's flash size {} (at 0x{:x})",
                        settings.flash_size, region.offset
                    ),
                ));
            }
        }
    }
    // The app's ELF is the app binary's name with .elf, next to it (ESP-IDF's build layout).
    let elf = args
        .app
        .map(|app| dir.join(app.file).with_extension("elf"))
        .filter(|elf| elf.is_file());
    Ok(Firmware {
        kind: InputKind::IdfBuildDir,
        regions,
        elf,
        flash_settings: Some(format!(
            "{} {} {}",
            settings.flash_mode, settings.flash_freq, settings.flash_size
        )),
    })
}

/// `4MB` → bytes; `detect` and `keep` say nothing.
fn flash_size_bytes(text: &str) -> Option<u64> {
    let megabytes: u64 = text.strip_suffix("MB")?.parse().ok()?;
    Some(megabytes << 20)
}

/// `flash-set.json` as `sparring image flash-set` writes it: `chip`, `layout`, `flash_files`.
#[derive(Debug, Deserialize)]
struct FlashSetManifest {
    chip: Option<String>,
    flash_files: std::collections::BTreeMap<String, String>,
}

fn flash_set(manifest_path: &Path, chip: Chip) -> Result<Firmware, FirmwareError> {
    let shown = manifest_path.display().to_string();
    let manifest: FlashSetManifest = serde_json::from_slice(&read(manifest_path)?)
        .map_err(|e| FirmwareError::Invalid(shown.clone(), e.to_string()))?;
    check_declared_chip(&shown, manifest.chip.as_deref(), chip)?;
    let dir = manifest_path.parent().unwrap_or(Path::new("."));
    Ok(Firmware {
        kind: InputKind::FlashSet,
        regions: offset_files(&manifest.flash_files, dir)?,
        elf: None,
        flash_settings: None,
    })
}

fn check_declared_chip(
    input: &str,
    declared: Option<&str>,
    chip: Chip,
) -> Result<(), FirmwareError> {
    match declared {
        Some(name) if Chip::from_name(name) != Some(chip) => Err(FirmwareError::WrongChip {
            input: input.to_owned(),
            found: name.to_owned(),
            board: chip,
        }),
        _ => Ok(()),
    }
}

fn offset_files(
    files: &std::collections::BTreeMap<String, String>,
    dir: &Path,
) -> Result<Vec<Region>, FirmwareError> {
    let mut regions = files
        .iter()
        .map(|(offset, file)| offset_file(&format!("{offset}={file}"), dir))
        .collect::<Result<Vec<_>, _>>()?;
    regions.sort_by_key(|r| r.offset);
    Ok(regions)
}

/// `0x10000=build/app.bin` (the file relative to `dir`).
fn offset_file(pair: &str, dir: &Path) -> Result<Region, FirmwareError> {
    let Some((offset_text, file)) = pair.split_once('=') else {
        return Err(FirmwareError::Mixed(pair.to_owned()));
    };
    let digits = offset_text
        .trim_start_matches("0x")
        .trim_start_matches("0X");
    let offset = u32::from_str_radix(digits, 16)
        .ok()
        .filter(|_| offset_text.len() > digits.len())
        .ok_or_else(|| {
            FirmwareError::Invalid(
                pair.to_owned(),
                format!("offset {offset_text:?}: expected a hex number like 0x10000"),
            )
        })?;
    let path = dir.join(file);
    Ok(Region {
        offset,
        data: read(&path)?,
        name: file.to_owned(),
    })
}

/// Converts the ELF into an app image with espflash's own image code (what `espflash
/// save-image` does), with the bootloader and partition table given or espflash's defaults.
fn app_elf(
    path: &Path,
    bytes: &[u8],
    chip: Chip,
    companions: &ElfCompanions,
) -> Result<Firmware, FirmwareError> {
    use espflash::flasher::{FlashData, FlashSettings};
    use espflash::image_format::idf::IdfBootloaderFormat;

    let shown = path.display().to_string();
    let invalid = |e: espflash::Error| FirmwareError::Invalid(shown.clone(), e.to_string());
    let espflash_chip = espflash_chip(chip);
    let flash_data = FlashData::new(
        FlashSettings::default(),
        0,
        None,
        espflash_chip,
        espflash_chip.default_xtal_frequency(),
    );
    let format = IdfBootloaderFormat::new(
        bytes,
        &flash_data,
        companions.partition_table.as_deref(),
        companions.bootloader.as_deref(),
        None,
        None,
    )
    .map_err(invalid)?;
    let names = [
        companions
            .bootloader
            .as_deref()
            .map_or("bootloader (espflash's)".to_owned(), file_name),
        companions
            .partition_table
            .as_deref()
            .map_or("partition table (espflash's)".to_owned(), file_name),
        format!("{} (as app image)", file_name(path)),
    ];
    let regions = format
        .flash_segments()
        .zip(names)
        .map(|(segment, name)| Region {
            offset: segment.addr,
            data: segment.data().to_vec(),
            name,
        })
        .collect();
    Ok(Firmware {
        kind: InputKind::AppElf,
        regions,
        elf: Some(path.to_owned()),
        flash_settings: None,
    })
}

fn read(path: &Path) -> Result<Vec<u8>, FirmwareError> {
    std::fs::read(path).map_err(|e| FirmwareError::Read(path.to_owned(), e))
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// The bytes flash will hold from `offset` to the end of the region that covers it.
fn flash_at(regions: &[Region], offset: u32) -> Option<(&Region, &[u8])> {
    regions.iter().find_map(|r| {
        let start = offset.checked_sub(r.offset)? as usize;
        r.data
            .get(start..)
            .filter(|rest| !rest.is_empty())
            .map(|rest| (r, rest))
    })
}

/// Every check that can be made without the board: no overlaps; the bootloader, the partition
/// table and each app image the table points at are well-formed, for `chip`, and fit.
fn validate(regions: &[Region], chip: Chip) -> Result<(), FirmwareError> {
    let mut sorted: Vec<&Region> = regions.iter().collect();
    sorted.sort_by_key(|r| r.offset);
    for pair in sorted.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if u64::from(a.offset) + a.data.len() as u64 > u64::from(b.offset) {
            return Err(FirmwareError::Overlap(
                b.name.clone(),
                b.offset,
                a.name.clone(),
                a.offset,
            ));
        }
    }
    let table = match flash_at(regions, partition::TABLE_OFFSET) {
        Some((region, bytes)) => Some(PartitionTable::parse(bytes).map_err(|e| {
            FirmwareError::Invalid(
                format!("{} (partition table at 0x8000)", region.name),
                e.to_string(),
            )
        })?),
        None => None,
    };
    // The bootloader: the first bootloader offset that holds an image (an ESP32 bootloader at
    // 0x1000 given to an ESP32-C3 is found, and refused, there).
    let bootloader = BOOTLOADER_OFFSETS.iter().find_map(|&offset| {
        flash_at(regions, offset)
            .filter(|(_, bytes)| bytes.first() == Some(&IMAGE_MAGIC))
            .map(|(region, bytes)| (region, offset, bytes))
    });
    if let Some((region, offset, bytes)) = bootloader {
        check_image(region, offset, bytes, None, chip)?;
    }
    match &table {
        Some(table) => {
            for slot in table.partitions.iter().filter(|p| p.kind == TYPE_APP) {
                let Some((region, bytes)) = flash_at(regions, slot.offset) else {
                    continue;
                };
                // An unused slot inside a merged binary is padding; a file put there is an app.
                if region.offset == slot.offset || bytes.first() == Some(&IMAGE_MAGIC) {
                    check_image(region, slot.offset, bytes, Some(slot), chip)?;
                }
            }
        }
        // Without a table, any region that is an image must be one for this chip.
        None => {
            for region in regions
                .iter()
                .filter(|r| r.data.first() == Some(&IMAGE_MAGIC))
            {
                check_image(region, region.offset, &region.data, None, chip)?;
            }
        }
    }
    Ok(())
}

fn check_image(
    region: &Region,
    offset: u32,
    bytes: &[u8],
    slot: Option<&partition::Partition>,
    chip: Chip,
) -> Result<(), FirmwareError> {
    let name = if region.offset == offset {
        region.name.clone()
    } else {
        format!("{} (image at 0x{offset:x})", region.name)
    };
    let parsed =
        image::parse(bytes).map_err(|e| FirmwareError::Invalid(name.clone(), e.to_string()))?;
    if parsed.header.chip_id != chip.id() {
        return Err(FirmwareError::WrongChip {
            input: name,
            found: Chip::from_id(parsed.header.chip_id).map_or_else(
                || format!("unknown chip id {}", parsed.header.chip_id),
                |c| c.name().to_owned(),
            ),
            board: chip,
        });
    }
    if let Some(slot) = slot {
        // A file at the partition's offset is written whole; inside a merged binary, the image.
        let len = if region.offset == offset {
            region.data.len()
        } else {
            parsed.len
        };
        if len > slot.size as usize {
            return Err(FirmwareError::AppTooLarge {
                name,
                len,
                label: slot.label.clone(),
                offset,
                size: slot.size,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use esp_formats::flash_set::{self, FlashFile};
    use esp_formats::image::AppSpec;
    use esp_formats::partition::{Partition, SUBTYPE_FACTORY};
    use sparring_backtrace::elf_builder::{Architecture, TestElf, at};

    const C3: Chip = Chip::Esp32C3;

    fn esp_at_set(chip: Chip) -> Vec<FlashFile> {
        flash_set::esp_at(chip, &AppSpec::new(chip, "blink", "v1"), Default::default())
            .expect("the ESP-AT flash set builds")
    }

    /// Writes the set's files and `manifest_name` (with `extra` keys) naming them.
    fn write_set(dir: &Path, files: &[FlashFile], manifest_name: &str, extra: serde_json::Value) {
        let mut flash_files = serde_json::Map::new();
        for file in files {
            std::fs::write(dir.join(file.name), &file.bytes).expect("file written");
            flash_files.insert(format!("0x{:x}", file.offset), file.name.into());
        }
        let mut manifest = extra;
        manifest["flash_files"] = flash_files.into();
        std::fs::write(dir.join(manifest_name), manifest.to_string()).expect("manifest written");
    }

    fn args(items: &[&Path]) -> Vec<String> {
        items.iter().map(|p| p.display().to_string()).collect()
    }

    fn resolve_one(path: &Path) -> Result<Firmware, FirmwareError> {
        resolve(&args(&[path]), Path::new(""), C3, &ElfCompanions::default())
    }

    /// The one-line refusal of `inputs` for an ESP32-C3, checked to contain `words`.
    fn assert_refused(inputs: &[String], words: &str) -> String {
        let error = resolve(inputs, Path::new(""), C3, &ElfCompanions::default())
            .expect_err("refused")
            .to_string();
        assert!(error.contains(words) && !error.contains('\n'), "{error}");
        error
    }

    /// The files laid out as `esptool merge-bin` does: each at its offset, erased in between.
    fn merged(files: &[FlashFile]) -> Vec<u8> {
        let end = files
            .iter()
            .map(|f| f.offset as usize + f.bytes.len())
            .max()
            .unwrap_or_default();
        let mut flash = vec![0xFF; end];
        for f in files {
            flash[f.offset as usize..][..f.bytes.len()].copy_from_slice(&f.bytes);
        }
        flash
    }

    #[test]
    fn an_esp_idf_build_directory_gives_its_files_settings_and_elf() {
        let dir = tempfile::tempdir().expect("temp dir");
        let files = esp_at_set(C3);
        let extra = serde_json::json!({
            "flash_settings": {"flash_mode": "dio", "flash_size": "4MB", "flash_freq": "80m"},
            "app": {"offset": "0x60000", "file": "app.bin", "encrypted": "false"},
            "extra_esptool_args": {"after": "hard_reset", "before": "default_reset", "chip": "esp32c3"},
        });
        write_set(dir.path(), &files, IDF_ARGS, extra);
        std::fs::write(dir.path().join("app.elf"), b"\x7fELF").expect("elf written");

        let firmware = resolve_one(dir.path()).expect("resolves");
        assert_eq!(firmware.kind, InputKind::IdfBuildDir);
        assert_eq!(firmware.regions.len(), files.len());
        assert_eq!(firmware.regions[0].offset, 0);
        assert_eq!(firmware.flash_settings.as_deref(), Some("dio 80m 4MB"));
        assert_eq!(firmware.elf, Some(dir.path().join("app.elf")));
    }

    #[test]
    fn an_esp_idf_build_for_another_chip_is_refused_by_its_declared_target() {
        let dir = tempfile::tempdir().expect("temp dir");
        let extra = serde_json::json!({
            "flash_settings": {"flash_mode": "dio", "flash_size": "4MB", "flash_freq": "40m"},
            "extra_esptool_args": {"chip": "esp32"},
        });
        write_set(dir.path(), &esp_at_set(Chip::Esp32), IDF_ARGS, extra);
        assert_refused(
            &args(&[dir.path()]),
            "built for esp32, but the board is esp32c3",
        );
    }

    #[test]
    fn a_flash_set_resolves_by_directory_and_by_manifest() {
        let dir = tempfile::tempdir().expect("temp dir");
        write_set(
            dir.path(),
            &esp_at_set(C3),
            FLASH_SET,
            serde_json::json!({"chip": "esp32c3", "layout": "esp-at"}),
        );
        for input in [dir.path().to_owned(), dir.path().join(FLASH_SET)] {
            let firmware = resolve_one(&input).expect("resolves");
            assert_eq!(firmware.kind, InputKind::FlashSet);
            let names: Vec<&str> = firmware.regions.iter().map(|r| r.name.as_str()).collect();
            assert!(
                names.contains(&"app.bin") && names.contains(&"bootloader.bin"),
                "{names:?}"
            );
        }
    }

    #[test]
    fn relative_inputs_are_taken_from_the_base_directory() {
        let dir = tempfile::tempdir().expect("temp dir");
        let set = dir.path().join("set");
        std::fs::create_dir(&set).expect("set dir");
        write_set(
            &set,
            &esp_at_set(C3),
            FLASH_SET,
            serde_json::json!({"chip": "esp32c3"}),
        );
        let companions = ElfCompanions::default();
        let firmware = resolve(&["set".into()], dir.path(), C3, &companions).expect("resolves");
        assert_eq!(firmware.kind, InputKind::FlashSet);

        let pair = "0x60000=set/app.bin";
        assert_eq!(named_path(pair), "set/app.bin");
        assert_eq!(named_path("set"), "set");
        let firmware = resolve(&[pair.into()], dir.path(), C3, &companions).expect("resolves");
        let app = std::fs::read(set.join("app.bin")).expect("app.bin");
        assert_eq!(firmware.regions[0].data, app);
        // The same inputs from elsewhere name nothing.
        let elsewhere = tempfile::tempdir().expect("temp dir");
        let error =
            resolve(&[pair.into()], elsewhere.path(), C3, &companions).expect_err("not found");
        assert!(matches!(error, FirmwareError::Read(..)), "{error}");
    }

    #[test]
    fn a_merged_binary_is_one_region_at_zero() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("merged.bin");
        std::fs::write(&path, merged(&esp_at_set(C3))).expect("written");
        let firmware = resolve_one(&path).expect("resolves");
        assert_eq!(firmware.kind, InputKind::MergedBin);
        assert_eq!(firmware.regions.len(), 1);
        assert_eq!(firmware.regions[0].offset, 0);
    }

    #[test]
    fn offset_file_pairs_are_taken_as_given() {
        let dir = tempfile::tempdir().expect("temp dir");
        let app = dir.path().join("app.bin");
        std::fs::write(
            &app,
            image::build_app(&AppSpec::new(C3, "blink", "v1")).expect("app"),
        )
        .expect("written");
        let pair = format!("0x10000={}", app.display());
        let firmware =
            resolve(&[pair], Path::new(""), C3, &ElfCompanions::default()).expect("resolves");
        assert_eq!(firmware.kind, InputKind::OffsetFiles);
        assert_eq!(firmware.regions[0].offset, 0x10000);
    }

    #[test]
    fn an_app_elf_becomes_bootloader_table_and_app_image_for_the_chip() {
        let dir = tempfile::tempdir().expect("temp dir");
        let elf = TestElf::new(Architecture::Riscv32)
            .code_section(".flash.text", 0x4200_0020..0x4200_1020)
            .function("app_main", 0x4200_0020..0x4200_0040, at("/app/main.c", 3))
            .build();
        let path = dir.path().join("app.elf");
        std::fs::write(&path, elf).expect("written");
        let firmware = resolve_one(&path).expect("resolves");
        assert_eq!(firmware.kind, InputKind::AppElf);
        assert_eq!(firmware.elf, Some(path));
        let offsets: Vec<u32> = firmware.regions.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, [0x0, 0x8000, 0x10000]);
        let app = image::parse(&firmware.regions[2].data).expect("an app image");
        assert_eq!(app.chip(), Some(C3));
    }

    #[test]
    fn a_file_that_is_none_of_the_inputs_is_refused_in_one_line() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("notes.txt");
        std::fs::write(&path, "hello").expect("written");
        assert_refused(&args(&[&path]), "not an ESP-IDF build directory, app ELF");

        let app = dir.path().join("app.bin");
        std::fs::write(
            &app,
            image::build_app(&AppSpec::new(C3, "blink", "v1")).expect("app"),
        )
        .expect("written");
        assert_refused(&args(&[&app]), "give its offset, e.g. 0x10000=");
    }

    #[test]
    fn images_for_another_chip_are_refused_in_every_kind() {
        let dir = tempfile::tempdir().expect("temp dir");
        let esp32 = esp_at_set(Chip::Esp32);
        let merged_path = dir.path().join("esp32-merged.bin");
        std::fs::write(&merged_path, merged(&esp32)).expect("written");
        assert_refused(
            &args(&[&merged_path]),
            "built for esp32, but the board is esp32c3",
        );

        // A flash set that does not declare its chip is refused by its images' headers.
        write_set(dir.path(), &esp32, FLASH_SET, serde_json::json!({}));
        assert_refused(
            &args(&[dir.path()]),
            "built for esp32, but the board is esp32c3",
        );

        let app = dir.path().join("app.bin");
        std::fs::write(
            &app,
            image::build_app(&AppSpec::new(Chip::Esp32, "x", "1")).expect("app"),
        )
        .expect("written");
        let error = assert_refused(&[format!("0x10000={}", app.display())], "built for esp32");
        assert!(error.starts_with(&app.display().to_string()), "{error}");
    }

    #[test]
    fn an_app_larger_than_its_partition_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let table = PartitionTable {
            partitions: vec![Partition::new(
                "factory",
                TYPE_APP,
                SUBTYPE_FACTORY,
                0x10000,
                0x10000,
            )],
        };
        let app = AppSpec {
            code_len: 0x10000,
            ..AppSpec::new(C3, "big", "v1")
        };
        let files = [
            ("table.bin", table.to_bytes().expect("table")),
            ("app.bin", image::build_app(&app).expect("app")),
        ];
        for (name, bytes) in &files {
            std::fs::write(dir.path().join(name), bytes).expect("written");
        }
        let pairs = [
            format!("0x8000={}", dir.path().join("table.bin").display()),
            format!("0x10000={}", dir.path().join("app.bin").display()),
        ];
        assert_refused(
            &pairs,
            "but its partition \"factory\" at 0x10000 holds 65536",
        );
    }

    #[test]
    fn overlapping_regions_bad_offsets_and_mixed_inputs_are_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("blob.bin");
        std::fs::write(&file, vec![0u8; 0x2000]).expect("written");
        let pairs = [
            format!("0x9000={}", file.display()),
            format!("0xa000={}", file.display()),
        ];
        let error =
            resolve(&pairs, Path::new(""), C3, &ElfCompanions::default()).expect_err("refused");
        assert!(matches!(error, FirmwareError::Overlap(..)), "{error}");
        assert_refused(
            &[format!("9000={}", file.display())],
            "expected a hex number like 0x10000",
        );
        assert_refused(
            &[
                format!("0x9000={}", file.display()),
                file.display().to_string(),
            ],
            "or only offset=file pairs",
        );
    }
}

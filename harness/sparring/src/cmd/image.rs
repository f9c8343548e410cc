//! `sparring image`: build, lay out and explain ESP app images and partition tables.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use esp_formats::image::{self, AppSpec};
use esp_formats::partition::{AtStorage, PartitionTable};
use esp_formats::{Chip, otadata};

/// Build ESP app images and flash sets, or explain what is in (or wrong with) one.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Sub,
}

#[derive(Debug, clap::Subcommand)]
enum Sub {
    /// Write a valid ESP app image (header, app descriptor, segments, checksum, SHA-256) that
    /// the virtual board boots and esptool's `image-info` accepts. The descriptor's project
    /// name chooses the virtual board's firmware personality (`esp-at`, anything else: generic).
    Build {
        #[arg(long, value_parser = parse_chip)]
        chip: Chip,
        /// Project name in the app descriptor (at most 31 bytes).
        #[arg(long)]
        project: String,
        /// Version string in the app descriptor (at most 31 bytes).
        #[arg(long)]
        version: String,
        /// Anti-rollback secure version.
        #[arg(long, default_value_t = 0)]
        secure_version: u32,
        /// Size of the code segment in bytes (to make images of realistic size).
        #[arg(long, default_value_t = 4096)]
        code_size: usize,
        /// Output file (default: <project>-<version>-<chip>.bin).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Write everything a flash needs: bootloader, partition table, initial otadata and an
    /// app, plus `flash-set.json` with the offset of each file.
    FlashSet {
        #[arg(long, value_parser = parse_chip)]
        chip: Chip,
        /// Partition layout: `esp-at` is ESP-AT v2.x–v3.0's (an at_customize table of PKI
        /// partitions written with AT+SYSFLASH); `esp-at-mfg-nvs` is v3.1+'s (one mfg_nvs
        /// partition written with AT+SYSMFG; the set then includes mfg_nvs.bin with the
        /// factory parameters).
        #[arg(long, default_value = "esp-at", value_parser = ["esp-at", "esp-at-mfg-nvs"])]
        layout: String,
        /// Project name of the app (default esp-at).
        #[arg(long, default_value = "esp-at")]
        project: String,
        #[arg(long, default_value = "v2.4.0.0")]
        version: String,
        #[arg(short, long, default_value = "flash-set")]
        output: PathBuf,
    },
    /// Parse and validate an app image, a partition table or an otadata partition, and say
    /// exactly what is wrong with a broken one. Exit code 1 when it is broken.
    Info { file: PathBuf },
}

pub(crate) fn parse_chip(name: &str) -> Result<Chip, String> {
    Chip::from_name(name).ok_or_else(|| {
        let known: Vec<&str> = Chip::ALL.iter().map(|c| c.name()).collect();
        format!("unknown chip {name:?}; known: {}", known.join(", "))
    })
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Sub::Build {
            chip,
            project,
            version,
            secure_version,
            code_size,
            output,
        } => {
            let spec = AppSpec {
                secure_version,
                code_len: code_size,
                ..AppSpec::new(chip, &project, &version)
            };
            let bytes = image::build_app(&spec)?;
            let output =
                output.unwrap_or_else(|| PathBuf::from(format!("{project}-{version}-{chip}.bin")));
            write(&output, &bytes)?;
            println!(
                "wrote {}: {chip} app {project} {version}, {} bytes",
                output.display(),
                bytes.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Sub::FlashSet {
            chip,
            layout,
            project,
            version,
            output,
        } => flash_set(chip, &layout, &project, &version, &output),
        Sub::Info { file } => info(&file),
    }
}

fn write(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

fn flash_set(
    chip: Chip,
    layout: &str,
    project: &str,
    version: &str,
    dir: &Path,
) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let storage = match layout {
        "esp-at-mfg-nvs" => AtStorage::MfgNvs,
        _ => AtStorage::PkiPartitions,
    };
    let app = AppSpec::new(chip, project, version);
    let files = esp_formats::flash_set::esp_at(chip, &app, storage)?;
    let mut offsets = serde_json::Map::new();
    for file in &files {
        write(&dir.join(file.name), &file.bytes)?;
        offsets.insert(
            format!("0x{:x}", file.offset),
            serde_json::Value::from(file.name),
        );
    }
    let manifest =
        serde_json::json!({ "chip": chip.name(), "layout": layout, "flash_files": offsets });
    write(
        &dir.join("flash-set.json"),
        serde_json::to_string_pretty(&manifest)?.as_bytes(),
    )?;
    println!("wrote {}:", dir.display());
    for file in &files {
        println!(
            "  0x{:06x} {} ({} bytes)",
            file.offset,
            file.name,
            file.bytes.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn info(path: &Path) -> anyhow::Result<ExitCode> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let name = path.display();
    match bytes.first() {
        Some(&image::IMAGE_MAGIC) => match image::parse(&bytes) {
            Ok(app) => {
                let chip = app.chip().map_or_else(
                    || format!("unknown chip id {}", app.header.chip_id),
                    |c| c.to_string(),
                );
                println!(
                    "{name}: ESP app image for {chip}, {} segments, entry 0x{:08x}, {} bytes",
                    app.segments.len(),
                    app.header.entry,
                    app.len
                );
                for (i, s) in app.segments.iter().enumerate() {
                    println!(
                        "  segment {i}: load 0x{:08x}, {} bytes at file offset 0x{:x}",
                        s.load_addr, s.len, s.offset
                    );
                }
                println!("  checksum 0x{:02x} ok", app.checksum);
                if let Some(hash) = app.sha256 {
                    println!(
                        "  sha256 {} ok",
                        hash.iter().map(|b| format!("{b:02x}")).collect::<String>()
                    );
                }
                match &app.descriptor {
                    Some(d) => println!(
                        "  app: project {:?}, version {:?}, IDF {:?}, secure version {}, built {} {}",
                        d.project_name, d.version, d.idf_ver, d.secure_version, d.date, d.time
                    ),
                    None => println!("  no app descriptor (a bootloader?)"),
                }
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => broken(&name.to_string(), "ESP app image", &e.to_string()),
        },
        Some(0xAA) => match PartitionTable::parse(&bytes) {
            Ok(table) => {
                println!(
                    "{name}: partition table, {} partitions, MD5 ok",
                    table.partitions.len()
                );
                print!("{table}");
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => broken(&name.to_string(), "partition table", &e.to_string()),
        },
        _ if bytes.len() >= 2 * otadata::SECTOR => {
            let entries = otadata::read(&bytes);
            if entries.iter().all(Option::is_none) && bytes.iter().all(|b| *b == 0xFF) {
                println!(
                    "{name}: erased (an empty otadata partition: the bootloader boots factory or ota_0)"
                );
                return Ok(ExitCode::SUCCESS);
            }
            println!("{name}: otadata");
            for (i, entry) in entries.iter().enumerate() {
                match entry {
                    Some(e) => println!(
                        "  entry {i}: seq {} state {:?} crc {}",
                        e.seq,
                        e.state,
                        if e.is_valid() { "ok" } else { "INVALID" }
                    ),
                    None => println!("  entry {i}: empty"),
                }
            }
            match otadata::active(&entries) {
                Some((i, e)) => println!(
                    "  active: entry {i}, boots OTA slot (seq-1) mod N = {} of N",
                    e.seq - 1
                ),
                None => {
                    return broken(
                        &name.to_string(),
                        "otadata",
                        "no valid entry: the bootloader falls back to factory",
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        first => {
            let what = first.map_or("empty file".to_owned(), |b| format!("first byte 0x{b:02x}"));
            bail!(
                "{name}: not an app image (0xe9), partition table (aa 50) or otadata partition ({what})"
            )
        }
    }
}

fn broken(name: &str, what: &str, why: &str) -> anyhow::Result<ExitCode> {
    println!("{name}: broken {what}: {why}");
    Ok(super::exit_problem())
}

//! ESP application images: header, segments, checksum, appended SHA-256 and the app
//! descriptor (`esp_app_desc_t`) — parsed and validated the way the second-stage bootloader
//! and `esp_https_ota` do, and built so that esptool's `image-info` accepts them.

use sha2::{Digest, Sha256};

use crate::chip::Chip;

pub const IMAGE_MAGIC: u8 = 0xE9;
pub const APP_DESC_MAGIC: u32 = 0xABCD_5432;
const HEADER_LEN: usize = 24;
const APP_DESC_LEN: usize = 256;
const MAX_SEGMENTS: usize = 16;
const CHECKSUM_SEED: u8 = 0xEF;

/// The image header (24 bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageHeader {
    pub segment_count: u8,
    pub spi_mode: u8,
    /// High nibble flash size, low nibble flash frequency.
    pub flash_size_freq: u8,
    pub entry: u32,
    pub chip_id: u16,
    pub min_chip_rev: u16,
    pub max_chip_rev: u16,
    pub hash_appended: bool,
}

/// Where a segment's data lies in the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub load_addr: u32,
    /// File offset of the data (after its 8-byte header).
    pub offset: usize,
    pub len: usize,
}

/// `esp_app_desc_t`, at the start of the first segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppDescriptor {
    pub secure_version: u32,
    pub version: String,
    pub project_name: String,
    pub time: String,
    pub date: String,
    pub idf_ver: String,
    pub app_elf_sha256: [u8; 32],
}

/// A parsed, validated app image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppImage {
    pub header: ImageHeader,
    pub segments: Vec<Segment>,
    pub checksum: u8,
    pub sha256: Option<[u8; 32]>,
    /// Length of the image including checksum and hash; bytes after it are not part of it.
    pub len: usize,
    /// `None` for images without an app descriptor (bootloaders).
    pub descriptor: Option<AppDescriptor>,
}

impl AppImage {
    pub fn chip(&self) -> Option<Chip> {
        Chip::from_id(self.header.chip_id)
    }
}

/// What is wrong with an image, in the bootloader's terms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    #[error("image is {len} bytes, shorter than its {needed}-byte header")]
    TooShort { len: usize, needed: usize },
    #[error("image has invalid magic byte 0x{found:02x} (expected 0xe9; nothing flashed here?)")]
    BadMagic { found: u8 },
    #[error("image has {count} segments, at most 16 are allowed")]
    TooManySegments { count: usize },
    #[error(
        "segment {index} at offset 0x{offset:x} claims {len} bytes but the image ends at 0x{end:x}"
    )]
    SegmentTruncated {
        index: usize,
        offset: usize,
        len: usize,
        end: usize,
    },
    #[error("image ends at 0x{end:x} before its checksum byte")]
    ChecksumMissing { end: usize },
    #[error("Checksum failed. Calculated 0x{calculated:x} read 0x{stored:x}")]
    ChecksumMismatch { calculated: u8, stored: u8 },
    #[error("image ends at 0x{end:x} before its appended SHA-256")]
    HashMissing { end: usize },
    #[error("Image hash failed - image is corrupt (calculated {calculated}, read {stored})")]
    HashMismatch { calculated: String, stored: String },
    #[error("mismatch chip ID, expected {expected}, found {found}")]
    ChipMismatch { expected: u16, found: u16 },
}

/// Parses and validates an app image: header, segment layout, checksum, appended SHA-256.
/// Trailing bytes (erased flash, padding) are ignored, as the bootloader ignores them.
pub fn parse(bytes: &[u8]) -> Result<AppImage, ImageError> {
    let header_bytes = bytes.get(..HEADER_LEN).ok_or(ImageError::TooShort {
        len: bytes.len(),
        needed: HEADER_LEN,
    })?;
    if header_bytes[0] != IMAGE_MAGIC {
        return Err(ImageError::BadMagic {
            found: header_bytes[0],
        });
    }
    let u16_at = |o: usize| u16::from_le_bytes([header_bytes[o], header_bytes[o + 1]]);
    let header = ImageHeader {
        segment_count: header_bytes[1],
        spi_mode: header_bytes[2],
        flash_size_freq: header_bytes[3],
        entry: u32::from_le_bytes([
            header_bytes[4],
            header_bytes[5],
            header_bytes[6],
            header_bytes[7],
        ]),
        chip_id: u16_at(12),
        min_chip_rev: u16_at(15),
        max_chip_rev: u16_at(17),
        hash_appended: header_bytes[23] == 1,
    };
    let count = usize::from(header.segment_count);
    if count > MAX_SEGMENTS {
        return Err(ImageError::TooManySegments { count });
    }
    let (checksum_pos, segments) = layout(bytes)?;
    let checksum = data_checksum(bytes, &segments);
    let stored = *bytes
        .get(checksum_pos)
        .ok_or(ImageError::ChecksumMissing { end: bytes.len() })?;
    if stored != checksum {
        return Err(ImageError::ChecksumMismatch {
            calculated: checksum,
            stored,
        });
    }
    let mut len = checksum_pos + 1;
    let mut sha256 = None;
    if header.hash_appended {
        let stored = bytes
            .get(len..len + 32)
            .ok_or(ImageError::HashMissing { end: bytes.len() })?;
        let calculated: [u8; 32] = Sha256::digest(&bytes[..len]).into();
        if calculated != stored {
            return Err(ImageError::HashMismatch {
                calculated: hex(&calculated),
                stored: hex(stored),
            });
        }
        sha256 = Some(calculated);
        len += 32;
    }
    let descriptor = segments
        .first()
        .and_then(|s| bytes.get(s.offset..s.offset + s.len))
        .and_then(parse_descriptor);
    Ok(AppImage {
        header,
        segments,
        checksum,
        sha256,
        len,
        descriptor,
    })
}

/// Parses and checks that the image is for `chip`, as `esp_ota_check_image_validity` does.
pub fn parse_for_chip(bytes: &[u8], chip: Chip) -> Result<AppImage, ImageError> {
    let image = parse(bytes)?;
    if image.header.chip_id != chip.id() {
        return Err(ImageError::ChipMismatch {
            expected: chip.id(),
            found: image.header.chip_id,
        });
    }
    Ok(image)
}

fn parse_descriptor(segment: &[u8]) -> Option<AppDescriptor> {
    let d = segment.get(..APP_DESC_LEN)?;
    if u32::from_le_bytes([d[0], d[1], d[2], d[3]]) != APP_DESC_MAGIC {
        return None;
    }
    let text = |range: std::ops::Range<usize>| {
        let field = &d[range];
        let end = field.iter().position(|b| *b == 0).unwrap_or(field.len());
        String::from_utf8_lossy(&field[..end]).into_owned()
    };
    let mut app_elf_sha256 = [0u8; 32];
    app_elf_sha256.copy_from_slice(&d[144..176]);
    Some(AppDescriptor {
        secure_version: u32::from_le_bytes([d[4], d[5], d[6], d[7]]),
        version: text(16..48),
        project_name: text(48..80),
        time: text(80..96),
        date: text(96..112),
        idf_ver: text(112..144),
        app_elf_sha256,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What an app image to build contains.
#[derive(Debug, Clone)]
pub struct AppSpec {
    pub chip: Chip,
    pub project_name: String,
    pub version: String,
    pub secure_version: u32,
    pub idf_ver: String,
    /// Size of the code segment (filler bytes), to make images of realistic size.
    pub code_len: usize,
}

impl AppSpec {
    pub fn new(chip: Chip, project_name: &str, version: &str) -> AppSpec {
        AppSpec {
            chip,
            project_name: project_name.to_owned(),
            version: version.to_owned(),
            secure_version: 0,
            idf_ver: "v5.4.1".to_owned(),
            code_len: 4096,
        }
    }
}

/// The descriptor fields are fixed-size C strings: longer values do not fit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {value:?} is {len} bytes; the app descriptor holds at most {max}")]
pub struct FieldTooLong {
    pub field: &'static str,
    pub value: String,
    pub len: usize,
    pub max: usize,
}

/// Builds a valid app image: descriptor segment, code segment, checksum, SHA-256.
pub fn build_app(spec: &AppSpec) -> Result<Vec<u8>, FieldTooLong> {
    let desc = app_descriptor(spec)?;
    let code: Vec<u8> = (0..spec.code_len).map(|i| (i % 251) as u8).collect();
    let (drom, iram) = spec.chip.app_addresses();
    Ok(build_image(
        spec.chip,
        iram,
        &[(drom, &desc), (iram, &code)],
    ))
}

/// The `esp_app_desc_t` of `spec` (ESP-IDF's `.flash.appdesc`), as the first bytes of an app's
/// first segment hold it.
pub fn app_descriptor(spec: &AppSpec) -> Result<Vec<u8>, FieldTooLong> {
    let mut desc = vec![0u8; APP_DESC_LEN];
    desc[0..4].copy_from_slice(&APP_DESC_MAGIC.to_le_bytes());
    desc[4..8].copy_from_slice(&spec.secure_version.to_le_bytes());
    put_str(&mut desc, 16, 32, "version", &spec.version)?;
    put_str(&mut desc, 48, 32, "project name", &spec.project_name)?;
    put_str(&mut desc, 80, 16, "time", "00:00:00")?;
    put_str(&mut desc, 96, 16, "date", "Jan  1 2026")?;
    put_str(&mut desc, 112, 32, "IDF version", &spec.idf_ver)?;
    // A stand-in for the ELF's SHA-256: derived from the identity so that every distinct
    // build has a distinct value, as a real one would.
    let elf: [u8; 32] = Sha256::digest(format!(
        "{}|{}|{}",
        spec.chip, spec.project_name, spec.version
    ))
    .into();
    desc[144..176].copy_from_slice(&elf);
    desc[180] = 16; // mmu_page_size: log2(64 KiB)
    desc[181] = 2; // spi_flash_mode: DIO
    Ok(desc)
}

/// Builds a minimal second-stage bootloader image for the chip (one IRAM segment).
pub fn build_bootloader(chip: Chip) -> Vec<u8> {
    let (_, iram) = chip.app_addresses();
    let code = vec![0u8; 1024];
    build_image(chip, iram, &[(iram, &code)])
}

fn put_str(
    desc: &mut [u8],
    at: usize,
    size: usize,
    field: &'static str,
    value: &str,
) -> Result<(), FieldTooLong> {
    // One byte stays for the terminating NUL, as in the C struct.
    if value.len() >= size {
        return Err(FieldTooLong {
            field,
            value: value.to_owned(),
            len: value.len(),
            max: size - 1,
        });
    }
    desc[at..at + value.len()].copy_from_slice(value.as_bytes());
    Ok(())
}

/// Header, segments, zero padding, checksum, SHA-256 — the layout of esptool's `elf2image`.
fn build_image(chip: Chip, entry: u32, segments: &[(u32, &[u8])]) -> Vec<u8> {
    // magic, segment count, SPI mode DIO, 4 MB flash at 40 MHz
    let mut out = vec![IMAGE_MAGIC, segments.len() as u8, 2, 0x20];
    out.extend_from_slice(&entry.to_le_bytes());
    out.push(0xEE); // WP pin disabled
    out.extend_from_slice(&[0, 0, 0]);
    out.extend_from_slice(&chip.id().to_le_bytes());
    out.push(0); // legacy min revision
    out.extend_from_slice(&0u16.to_le_bytes()); // min revision
    out.extend_from_slice(&0xFFFFu16.to_le_bytes()); // max revision: any
    out.extend_from_slice(&[0; 4]);
    out.push(1); // hash appended
    let mut checksum = CHECKSUM_SEED;
    for (addr, data) in segments {
        // Segment lengths are multiples of 4 in real images.
        let padded_len = data.len().div_ceil(4) * 4;
        out.extend_from_slice(&addr.to_le_bytes());
        out.extend_from_slice(&(padded_len as u32).to_le_bytes());
        out.extend_from_slice(data);
        out.resize(out.len() + padded_len - data.len(), 0);
        checksum = data.iter().fold(checksum, |acc, b| acc ^ b);
    }
    out.resize(out.len() + (15 - out.len() % 16), 0);
    out.push(checksum);
    let hash = Sha256::digest(&out);
    out.extend_from_slice(&hash);
    out
}

/// Recomputes checksum and SHA-256 after a deliberate edit of the header or the segment
/// data (e.g. a wrong chip id or another version), so the image is well-formed again.
pub fn reseal(image: &mut Vec<u8>) -> Result<(), ImageError> {
    let (checksum_pos, segments) = layout(image)?;
    image[checksum_pos] = data_checksum(image, &segments);
    if image[23] == 1 {
        image.truncate(checksum_pos + 1);
        let hash = Sha256::digest(&image[..]);
        image.extend_from_slice(&hash);
    }
    Ok(())
}

/// `0xEF` XOR every byte of every segment's data (not the headers).
fn data_checksum(bytes: &[u8], segments: &[Segment]) -> u8 {
    segments
        .iter()
        .flat_map(|s| &bytes[s.offset..s.offset + s.len])
        .fold(CHECKSUM_SEED, |acc, b| acc ^ b)
}

/// (checksum offset, segments) without validating checksum or hash.
fn layout(bytes: &[u8]) -> Result<(usize, Vec<Segment>), ImageError> {
    let header = bytes.get(..HEADER_LEN).ok_or(ImageError::TooShort {
        len: bytes.len(),
        needed: HEADER_LEN,
    })?;
    if header[0] != IMAGE_MAGIC {
        return Err(ImageError::BadMagic { found: header[0] });
    }
    let mut pos = HEADER_LEN;
    let mut segments = Vec::new();
    for index in 0..usize::from(header[1]).min(MAX_SEGMENTS) {
        let h = bytes
            .get(pos..pos + 8)
            .ok_or(ImageError::SegmentTruncated {
                index,
                offset: pos,
                len: 8,
                end: bytes.len(),
            })?;
        let len = u32::from_le_bytes([h[4], h[5], h[6], h[7]]) as usize;
        let offset = pos + 8;
        if offset.checked_add(len).is_none_or(|end| end > bytes.len()) {
            return Err(ImageError::SegmentTruncated {
                index,
                offset,
                len,
                end: bytes.len(),
            });
        }
        segments.push(Segment {
            load_addr: u32::from_le_bytes([h[0], h[1], h[2], h[3]]),
            offset,
            len,
        });
        pos = offset + len;
    }
    let checksum_pos = pos + (15 - pos % 16);
    if checksum_pos >= bytes.len() {
        return Err(ImageError::ChecksumMissing { end: bytes.len() });
    }
    Ok((checksum_pos, segments))
}

/// Changes the version string in the descriptor and reseals the image.
pub fn set_version(image: &mut Vec<u8>, version: &str) -> Result<(), ImageError> {
    let (_, segments) = layout(image)?;
    let first = segments.first().ok_or(ImageError::TooShort {
        len: image.len(),
        needed: HEADER_LEN + 8 + APP_DESC_LEN,
    })?;
    let field =
        image
            .get_mut(first.offset + 16..first.offset + 48)
            .ok_or(ImageError::TooShort {
                len: first.len,
                needed: APP_DESC_LEN,
            })?;
    field.fill(0);
    let n = version.len().min(31);
    field[..n].copy_from_slice(&version.as_bytes()[..n]);
    reseal(image)
}

/// Changes the chip id in the header and reseals the image.
pub fn set_chip_id(image: &mut Vec<u8>, chip_id: u16) -> Result<(), ImageError> {
    layout(image)?;
    image[12..14].copy_from_slice(&chip_id.to_le_bytes());
    reseal(image)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_images_parse_with_their_descriptor() {
        for chip in Chip::ALL {
            let bytes = build_app(&AppSpec::new(chip, "esp-at", "v4.1.0.0")).unwrap();
            let image = parse_for_chip(&bytes, chip).unwrap();
            let desc = image.descriptor.unwrap();
            assert_eq!(
                (desc.project_name.as_str(), desc.version.as_str()),
                ("esp-at", "v4.1.0.0")
            );
            assert_eq!(image.len, bytes.len());
            assert_eq!(bytes.len() % 16, 0);
        }
    }

    #[test]
    fn one_corrupt_byte_is_caught_by_checksum_or_hash() {
        let bytes = build_app(&AppSpec::new(Chip::Esp32C3, "blink", "1.0")).unwrap();
        let mut in_data = bytes.clone();
        in_data[0x40] ^= 0x01;
        assert!(matches!(
            parse(&in_data),
            Err(ImageError::ChecksumMismatch { .. })
        ));
        let mut in_header = bytes.clone();
        in_header[2] = 3; // SPI mode: only the hash covers it
        assert!(matches!(
            parse(&in_header),
            Err(ImageError::HashMismatch { .. })
        ));
    }

    #[test]
    fn chip_mismatch_is_reported_with_both_ids() {
        let bytes = build_app(&AppSpec::new(Chip::Esp32, "blink", "1.0")).unwrap();
        assert_eq!(
            parse_for_chip(&bytes, Chip::Esp32C3).unwrap_err(),
            ImageError::ChipMismatch {
                expected: 5,
                found: 0
            }
        );
        let mut moved = bytes.clone();
        set_chip_id(&mut moved, 5).unwrap();
        assert!(parse_for_chip(&moved, Chip::Esp32C3).is_ok());
    }

    #[test]
    fn version_can_be_rewritten_and_stays_valid() {
        let mut bytes = build_app(&AppSpec::new(Chip::Esp32C3, "esp-at", "v1")).unwrap();
        set_version(&mut bytes, "v0-older").unwrap();
        assert_eq!(
            parse(&bytes).unwrap().descriptor.unwrap().version,
            "v0-older"
        );
    }

    #[test]
    fn truncation_and_garbage_are_errors_not_panics() {
        let bytes = build_app(&AppSpec::new(Chip::Esp32C3, "esp-at", "v1")).unwrap();
        for cut in [0, 1, 23, 24, 31, 100, bytes.len() - 33, bytes.len() - 1] {
            assert!(parse(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        assert_eq!(
            parse(&[0xFF; 64]).unwrap_err(),
            ImageError::BadMagic { found: 0xFF }
        );
        let mut huge = bytes.clone();
        huge[28..32].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            parse(&huge),
            Err(ImageError::SegmentTruncated { .. })
        ));
    }

    #[test]
    fn descriptor_fields_that_do_not_fit_are_refused() {
        let spec = AppSpec::new(Chip::Esp32C3, &"x".repeat(32), "v1");
        assert_eq!(build_app(&spec).unwrap_err().max, 31);
    }
}

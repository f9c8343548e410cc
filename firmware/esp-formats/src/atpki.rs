//! The PKI bin format of ESP-AT v2.x (`tools/AtPKI.py`, esp-at tag v3.0.0.0), stored in the
//! `mqtt_ca`, `mqtt_cert`, `mqtt_key`, `client_*` and `server_*` partitions and written with
//! `AT+SYSFLASH`.
//!
//! Layout (little-endian, no checksum): an 8-byte header (`F1 F1`, item count u16, length of
//! all items u32), then items: type u8, id u8, content length u16, content, `0xFF` padding to
//! a 4-byte boundary. Items are grouped by type in the order each type first appears; ids
//! count from 0 per type.

use std::fmt;

const MAGIC: [u8; 2] = [0xF1, 0xF1];
const HEADER_LEN: usize = 8;
const ITEM_HEADER_LEN: usize = 4;

/// What an item holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ItemType {
    Ca,
    Cert,
    Key,
}

impl ItemType {
    fn code(self) -> u8 {
        match self {
            ItemType::Ca => 0x01,
            ItemType::Cert => 0x02,
            ItemType::Key => 0x03,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        match code {
            0x01 => Some(ItemType::Ca),
            0x02 => Some(ItemType::Cert),
            0x03 => Some(ItemType::Key),
            _ => None,
        }
    }

    /// The name AtPKI.py uses on its command line (`ca`, `cert`, `key`).
    pub fn name(self) -> &'static str {
        match self {
            ItemType::Ca => "ca",
            ItemType::Cert => "cert",
            ItemType::Key => "key",
        }
    }

    /// Parses AtPKI.py's command-line type name.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "ca" => Some(ItemType::Ca),
            "cert" => Some(ItemType::Cert),
            "key" => Some(ItemType::Key),
            _ => None,
        }
    }
}

impl fmt::Display for ItemType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One item of a PKI bin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub item_type: ItemType,
    /// Matches a certificate with its key; counts from 0 per type.
    pub id: u8,
    /// The file's bytes as given (PEM or DER).
    pub content: Vec<u8>,
}

/// Why bytes are not a valid PKI bin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AtPkiError {
    #[error("too short for a PKI bin header: {len} bytes, need 8")]
    TooShort { len: usize },
    #[error("bad magic {found:02X?} at offset 0, expected [F1, F1] (empty partition reads FF FF)")]
    BadMagic { found: [u8; 2] },
    #[error("header says {declared} bytes of items but {available} bytes follow the header")]
    LengthMismatch { declared: usize, available: usize },
    #[error("item {index} at offset {offset}: header truncated")]
    ItemTruncated { index: usize, offset: usize },
    #[error(
        "item {index} at offset {offset}: unknown type 0x{code:02X}, expected 0x01 ca, 0x02 cert or 0x03 key"
    )]
    UnknownType {
        index: usize,
        offset: usize,
        code: u8,
    },
    #[error(
        "item {index} at offset {offset}: content of {len} bytes runs past the end of the items"
    )]
    ContentTruncated {
        index: usize,
        offset: usize,
        len: usize,
    },
    #[error("header says {declared} items but {found} were found")]
    CountMismatch { declared: usize, found: usize },
    #[error("item {index} ({item_type}) is {len} bytes; an item holds at most 65535")]
    ItemTooLarge {
        index: usize,
        item_type: ItemType,
        len: usize,
    },
    #[error("{count} items of type {item_type}; ids are one byte, at most 256 per type")]
    TooManyItems { item_type: ItemType, count: usize },
}

/// Builds a PKI bin the way AtPKI.py's `generate_bin` does: `inputs` in command-line order;
/// items are grouped by type in the order each type first appears and numbered per type.
pub fn build(inputs: &[(ItemType, Vec<u8>)]) -> Result<Vec<u8>, AtPkiError> {
    let mut type_order: Vec<ItemType> = Vec::new();
    for (item_type, _) in inputs {
        if !type_order.contains(item_type) {
            type_order.push(*item_type);
        }
    }
    let mut body = Vec::new();
    let mut count = 0usize;
    for item_type in type_order {
        let of_type: Vec<&Vec<u8>> = inputs
            .iter()
            .filter(|(t, _)| *t == item_type)
            .map(|(_, content)| content)
            .collect();
        if of_type.len() > 256 {
            return Err(AtPkiError::TooManyItems {
                item_type,
                count: of_type.len(),
            });
        }
        for (id, content) in of_type.into_iter().enumerate() {
            let len = u16::try_from(content.len()).map_err(|_| AtPkiError::ItemTooLarge {
                index: count,
                item_type,
                len: content.len(),
            })?;
            body.push(item_type.code());
            // `id < 256` was checked above.
            body.push(id as u8);
            body.extend_from_slice(&len.to_le_bytes());
            body.extend_from_slice(content);
            body.resize(body.len() + padding(content.len()), 0xFF);
            count += 1;
        }
    }
    let count = u16::try_from(count).map_err(|_| AtPkiError::TooManyItems {
        item_type: ItemType::Ca,
        count,
    })?;
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&count.to_le_bytes());
    // Items are < 65536 each and < 65536 in number, so the total fits in u32.
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Parses a PKI bin. Bytes after the declared item length are ignored, as the firmware
/// ignores the rest of the partition (usually `0xFF`).
pub fn parse(bytes: &[u8]) -> Result<Vec<Item>, AtPkiError> {
    let header = bytes
        .get(..HEADER_LEN)
        .ok_or(AtPkiError::TooShort { len: bytes.len() })?;
    let magic = [header[0], header[1]];
    if magic != MAGIC {
        return Err(AtPkiError::BadMagic { found: magic });
    }
    let declared_count = usize::from(u16::from_le_bytes([header[2], header[3]]));
    let declared_len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
    let body = bytes
        .get(HEADER_LEN..)
        .and_then(|rest| rest.get(..declared_len))
        .ok_or(AtPkiError::LengthMismatch {
            declared: declared_len,
            available: bytes.len() - HEADER_LEN,
        })?;

    let mut items = Vec::new();
    let mut pos = 0usize;
    while pos < body.len() {
        let index = items.len();
        let offset = HEADER_LEN + pos;
        let item_header = body
            .get(pos..pos + ITEM_HEADER_LEN)
            .ok_or(AtPkiError::ItemTruncated { index, offset })?;
        let item_type = ItemType::from_code(item_header[0]).ok_or(AtPkiError::UnknownType {
            index,
            offset,
            code: item_header[0],
        })?;
        let len = usize::from(u16::from_le_bytes([item_header[2], item_header[3]]));
        let start = pos + ITEM_HEADER_LEN;
        let content = body
            .get(start..start + len)
            .ok_or(AtPkiError::ContentTruncated { index, offset, len })?;
        items.push(Item {
            item_type,
            id: item_header[1],
            content: content.to_vec(),
        });
        pos = start + len + padding(len);
    }
    if items.len() != declared_count {
        return Err(AtPkiError::CountMismatch {
            declared: declared_count,
            found: items.len(),
        });
    }
    Ok(items)
}

/// True when the bytes start with the PKI bin magic (cheap format sniffing).
pub fn looks_like_atpki(bytes: &[u8]) -> bool {
    bytes.starts_with(&MAGIC)
}

fn padding(len: usize) -> usize {
    (4 - len % 4) % 4
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worked example of the facts sheet (§4.3): one cert "CERT-A" and one key "KEY1".
    #[test]
    fn matches_the_worked_example_byte_for_byte() {
        let bin = build(&[
            (ItemType::Cert, b"CERT-A".to_vec()),
            (ItemType::Key, b"KEY1".to_vec()),
        ])
        .unwrap();
        let expected: [u8; 28] = [
            0xF1, 0xF1, 0x02, 0x00, 0x14, 0x00, 0x00, 0x00, //
            0x02, 0x00, 0x06, 0x00, b'C', b'E', b'R', b'T', b'-', b'A', 0xFF, 0xFF, //
            0x03, 0x00, 0x04, 0x00, b'K', b'E', b'Y', b'1',
        ];
        assert_eq!(bin, expected);
    }

    /// The documentation's example: two 1164-byte client certs give header length 0x920.
    #[test]
    fn two_client_certs_give_the_documented_header() {
        let cert = vec![0x30; 1164];
        let bin = build(&[(ItemType::Cert, cert.clone()), (ItemType::Cert, cert)]).unwrap();
        assert_eq!(&bin[..8], &[0xF1, 0xF1, 0x02, 0x00, 0x20, 0x09, 0x00, 0x00]);
        assert_eq!(bin.len(), 2344);
    }

    #[test]
    fn groups_by_first_appearance_and_numbers_per_type() {
        let bin = build(&[
            (ItemType::Key, b"k0".to_vec()),
            (ItemType::Cert, b"c0".to_vec()),
            (ItemType::Key, b"k1".to_vec()),
        ])
        .unwrap();
        let items = parse(&bin).unwrap();
        let summary: Vec<(ItemType, u8, &[u8])> = items
            .iter()
            .map(|i| (i.item_type, i.id, i.content.as_slice()))
            .collect();
        assert_eq!(
            summary,
            vec![
                (ItemType::Key, 0, &b"k0"[..]),
                (ItemType::Key, 1, &b"k1"[..]),
                (ItemType::Cert, 0, &b"c0"[..]),
            ]
        );
    }

    #[test]
    fn round_trips_and_ignores_trailing_erased_flash() {
        let mut bin = build(&[(ItemType::Ca, b"-----BEGIN CERTIFICATE-----".to_vec())]).unwrap();
        bin.extend_from_slice(&[0xFF; 64]);
        let items = parse(&bin).unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].content, b"-----BEGIN CERTIFICATE-----");
    }

    #[test]
    fn rejects_erased_flash_and_truncation_precisely() {
        assert_eq!(
            parse(&[0xFF; 16]),
            Err(AtPkiError::BadMagic {
                found: [0xFF, 0xFF]
            })
        );
        assert_eq!(parse(&[0xF1]), Err(AtPkiError::TooShort { len: 1 }));
        let bin = build(&[(ItemType::Cert, vec![1; 10])]).unwrap();
        assert!(matches!(
            parse(&bin[..bin.len() - 3]),
            Err(AtPkiError::LengthMismatch { .. })
        ));
        let mut bad_type = bin.clone();
        bad_type[8] = 0x07;
        assert!(matches!(
            parse(&bad_type),
            Err(AtPkiError::UnknownType { code: 0x07, .. })
        ));
    }

    #[test]
    fn never_panics_on_short_garbage() {
        for len in 0..40 {
            let mut bytes = vec![0u8; len];
            if len >= 2 {
                bytes[0] = 0xF1;
                bytes[1] = 0xF1;
            }
            for fill in [0x00u8, 0x7F, 0xFF] {
                for b in bytes.iter_mut().skip(2) {
                    *b = fill;
                }
                let _ = parse(&bytes);
            }
        }
    }
}

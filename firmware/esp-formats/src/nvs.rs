//! ESP-IDF NVS partition format (version 2, unencrypted): pages of 4096 bytes, each with a
//! 32-byte header (state, sequence number, version, CRC32), a 32-byte entry state bitmap and
//! 126 entries of 32 bytes. Variable-length values (strings, blob chunks) span several entries.
//!
//! The writer lays entries out exactly as Espressif's `esp-idf-nvs-partition-gen` does, so the
//! same items produce byte-identical partitions (tested against the generator). Hand-written
//! because no crate implements NVS.

use thiserror::Error;

pub const PAGE_SIZE: usize = 4096;
const ENTRY_SIZE: usize = 32;
const ENTRIES_PER_PAGE: usize = 126;
const BITMAP_OFFSET: usize = 32;
const FIRST_ENTRY_OFFSET: usize = 64;
const KEY_MAX: usize = 15;
const VERSION_2: u8 = 0xFE;
const CHUNK_ANY: u8 = 0xFF;
/// Largest string the generator (and `nvs_set_str`) accepts, terminating NUL included.
const MAX_STRING: usize = 4000;

const STATE_EMPTY: u32 = 0xFFFF_FFFF;
const STATE_ACTIVE: u32 = 0xFFFF_FFFE;
const STATE_FULL: u32 = 0xFFFF_FFFC;
const STATE_FREEING: u32 = 0xFFFF_FFF8;

const TYPE_U8: u8 = 0x01;
const TYPE_I8: u8 = 0x11;
const TYPE_U16: u8 = 0x02;
const TYPE_I16: u8 = 0x12;
const TYPE_U32: u8 = 0x04;
const TYPE_I32: u8 = 0x14;
const TYPE_U64: u8 = 0x08;
const TYPE_I64: u8 = 0x18;
const TYPE_STR: u8 = 0x21;
const TYPE_BLOB_DATA: u8 = 0x42;
const TYPE_BLOB_INDEX: u8 = 0x48;

/// One stored value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    Str(String),
    Blob(Vec<u8>),
}

/// A key/value pair in a namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub namespace: String,
    pub key: String,
    pub value: Value,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum NvsError {
    #[error("NVS partition size {0} is not a non-zero multiple of {PAGE_SIZE} bytes")]
    BadSize(usize),
    #[error("page at 0x{offset:x}: header CRC32 is 0x{read:08x}, calculated 0x{calculated:08x}")]
    PageHeaderCrc {
        offset: usize,
        read: u32,
        calculated: u32,
    },
    #[error("page at 0x{offset:x}: unknown page state 0x{state:08x}")]
    PageState { offset: usize, state: u32 },
    #[error("entry at 0x{offset:x}: CRC32 is 0x{read:08x}, calculated 0x{calculated:08x}")]
    EntryCrc {
        offset: usize,
        read: u32,
        calculated: u32,
    },
    #[error("entry at 0x{offset:x}: span {span} does not fit in its page")]
    BadSpan { offset: usize, span: u8 },
    #[error(
        "entry at 0x{offset:x}: data of {len} bytes has CRC32 0x{read:08x}, calculated 0x{calculated:08x}"
    )]
    DataCrc {
        offset: usize,
        len: usize,
        read: u32,
        calculated: u32,
    },
    #[error("entry at 0x{offset:x}: unknown value type 0x{kind:02x}")]
    UnknownType { offset: usize, kind: u8 },
    #[error("entry at 0x{offset:x}: namespace index {index} has no namespace entry")]
    UnknownNamespace { offset: usize, index: u8 },
    #[error("entry at 0x{offset:x}: string is not UTF-8 or lacks its terminating NUL")]
    BadString { offset: usize },
    #[error("blob {namespace}/{key}: chunk {chunk} is missing")]
    MissingChunk {
        namespace: String,
        key: String,
        chunk: u16,
    },
    #[error("blob {namespace}/{key}: index says {expected} bytes, chunks hold {found}")]
    BlobSize {
        namespace: String,
        key: String,
        expected: usize,
        found: usize,
    },
    #[error("key {key:?} is longer than {KEY_MAX} bytes or empty")]
    BadKey { key: String },
    #[error("string {key:?} is {len} bytes with its NUL, the limit is {MAX_STRING}")]
    StringTooLong { key: String, len: usize },
    #[error("more than 254 namespaces")]
    TooManyNamespaces,
    #[error("item {key:?} written before any namespace")]
    NoNamespace { key: String },
    #[error(
        "the items need {needed} pages, a {size}-byte partition offers {available} (one page stays reserved)"
    )]
    TooSmall {
        size: usize,
        needed: usize,
        available: usize,
    },
}

/// NVS CRC32: zlib's crc32 seeded with 0xFFFFFFFF, as in ESP-IDF (`esp_rom_crc32_le(0xffffffff, ..)`).
fn crc(data: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new_with_initial(0xFFFF_FFFF);
    hasher.update(data);
    hasher.finalize()
}

fn entry_crc(entry: &[u8; ENTRY_SIZE]) -> u32 {
    let mut covered = [0u8; 28];
    covered[..4].copy_from_slice(&entry[..4]);
    covered[4..].copy_from_slice(&entry[8..]);
    crc(&covered)
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    if let Some(src) = bytes.get(at..at + 4) {
        word.copy_from_slice(src);
    }
    u32::from_le_bytes(word)
}

// ---------------------------------------------------------------- writer

struct Page {
    buf: Vec<u8>,
    used: usize,
}

impl Page {
    fn new(seq: u32) -> Page {
        let mut buf = vec![0xFF; PAGE_SIZE];
        buf[..4].copy_from_slice(&STATE_ACTIVE.to_le_bytes());
        buf[4..8].copy_from_slice(&seq.to_le_bytes());
        buf[8] = VERSION_2;
        let header_crc = crc(&buf[4..28]);
        buf[28..32].copy_from_slice(&header_crc.to_le_bytes());
        Page { buf, used: 0 }
    }

    /// Writes `data` starting at the next free entry and marks `entries` entries written.
    fn put(&mut self, data: &[u8], entries: usize) {
        let start = FIRST_ENTRY_OFFSET + self.used * ENTRY_SIZE;
        self.buf[start..start + data.len()].copy_from_slice(data);
        for _ in 0..entries {
            let bit = self.used * 2;
            self.buf[BITMAP_OFFSET + bit / 8] &= !(1 << (bit % 8));
            self.used += 1;
        }
    }

    fn put_entry(&mut self, mut entry: [u8; ENTRY_SIZE]) {
        let sum = entry_crc(&entry);
        entry[4..8].copy_from_slice(&sum.to_le_bytes());
        self.put(&entry, 1);
    }
}

/// Builds an NVS partition image item by item, in the generator's layout.
pub struct Writer {
    pages: Vec<Page>,
    namespaces: Vec<String>,
    current_ns: Option<u8>,
}

impl Default for Writer {
    fn default() -> Self {
        Writer::new()
    }
}

fn entry_head(
    ns: u8,
    kind: u8,
    span: u8,
    chunk: u8,
    key: &str,
) -> Result<[u8; ENTRY_SIZE], NvsError> {
    if key.is_empty() || key.len() > KEY_MAX {
        return Err(NvsError::BadKey { key: key.into() });
    }
    let mut entry = [0xFF; ENTRY_SIZE];
    entry[0] = ns;
    entry[1] = kind;
    entry[2] = span;
    entry[3] = chunk;
    entry[8..24].fill(0);
    entry[8..8 + key.len()].copy_from_slice(key.as_bytes());
    Ok(entry)
}

fn entries_for(len: usize) -> usize {
    len.div_ceil(ENTRY_SIZE)
}

impl Writer {
    pub fn new() -> Writer {
        Writer {
            pages: vec![Page::new(0)],
            namespaces: Vec::new(),
            current_ns: None,
        }
    }

    fn new_page(&mut self) {
        if let Some(last) = self.pages.last_mut() {
            last.buf[..4].copy_from_slice(&STATE_FULL.to_le_bytes());
            let header_crc = crc(&last.buf[4..28]);
            last.buf[28..32].copy_from_slice(&header_crc.to_le_bytes());
        }
        let seq = u32::try_from(self.pages.len()).unwrap_or(u32::MAX);
        self.pages.push(Page::new(seq));
    }

    fn page(&mut self) -> &mut Page {
        if self.pages.is_empty() {
            self.pages.push(Page::new(0));
        }
        let last = self.pages.len() - 1;
        &mut self.pages[last]
    }

    /// Selects (creating on first use) the namespace the following items go to.
    pub fn namespace(&mut self, name: &str) -> Result<&mut Writer, NvsError> {
        if let Some(pos) = self.namespaces.iter().position(|n| n == name) {
            self.current_ns = u8::try_from(pos + 1).ok();
            return Ok(self);
        }
        let index = u8::try_from(self.namespaces.len() + 1)
            .ok()
            .filter(|&i| i < 0xFF)
            .ok_or(NvsError::TooManyNamespaces)?;
        let mut entry = entry_head(0, TYPE_U8, 1, CHUNK_ANY, name)?;
        entry[24] = index;
        if self.page().used >= ENTRIES_PER_PAGE {
            self.new_page();
        }
        self.page().put_entry(entry);
        self.namespaces.push(name.to_owned());
        self.current_ns = Some(index);
        Ok(self)
    }

    /// Adds an item to the current namespace.
    pub fn put(&mut self, key: &str, value: &Value) -> Result<&mut Writer, NvsError> {
        let ns = self
            .current_ns
            .ok_or_else(|| NvsError::NoNamespace { key: key.into() })?;
        let primitive: Option<(u8, Vec<u8>)> = match value {
            Value::U8(v) => Some((TYPE_U8, v.to_le_bytes().to_vec())),
            Value::I8(v) => Some((TYPE_I8, v.to_le_bytes().to_vec())),
            Value::U16(v) => Some((TYPE_U16, v.to_le_bytes().to_vec())),
            Value::I16(v) => Some((TYPE_I16, v.to_le_bytes().to_vec())),
            Value::U32(v) => Some((TYPE_U32, v.to_le_bytes().to_vec())),
            Value::I32(v) => Some((TYPE_I32, v.to_le_bytes().to_vec())),
            Value::U64(v) => Some((TYPE_U64, v.to_le_bytes().to_vec())),
            Value::I64(v) => Some((TYPE_I64, v.to_le_bytes().to_vec())),
            Value::Str(_) | Value::Blob(_) => None,
        };
        if let Some((kind, bytes)) = primitive {
            let mut entry = entry_head(ns, kind, 1, CHUNK_ANY, key)?;
            entry[24..24 + bytes.len()].copy_from_slice(&bytes);
            if self.page().used >= ENTRIES_PER_PAGE {
                self.new_page();
            }
            self.page().put_entry(entry);
        } else if let Value::Str(text) = value {
            self.put_string(ns, key, text)?;
        } else if let Value::Blob(data) = value {
            self.put_blob(ns, key, data)?;
        }
        Ok(self)
    }

    fn put_string(&mut self, ns: u8, key: &str, text: &str) -> Result<(), NvsError> {
        let mut data = text.as_bytes().to_vec();
        data.push(0);
        if data.len() > MAX_STRING {
            return Err(NvsError::StringTooLong {
                key: key.into(),
                len: data.len(),
            });
        }
        let data_entries = entries_for(data.len());
        // The generator starts a new page when the string would reach the last entry.
        if self.page().used + data_entries + 1 >= ENTRIES_PER_PAGE {
            self.new_page();
        }
        let span = u8::try_from(data_entries + 1).unwrap_or(u8::MAX);
        let mut entry = entry_head(ns, TYPE_STR, span, CHUNK_ANY, key)?;
        entry[24..26].copy_from_slice(&(data.len() as u16).to_le_bytes());
        entry[28..32].copy_from_slice(&crc(&data).to_le_bytes());
        let page = self.page();
        page.put_entry(entry);
        page.put(&data, data_entries);
        Ok(())
    }

    /// Version-2 blob: data chunks filling the pages' free room, then one index entry.
    fn put_blob(&mut self, ns: u8, key: &str, data: &[u8]) -> Result<(), NvsError> {
        entry_head(ns, TYPE_BLOB_DATA, 1, 0, key)?;
        if self.page().used >= ENTRIES_PER_PAGE {
            self.new_page();
        }
        let mut offset = 0usize;
        let mut chunk_count: u8 = 0;
        loop {
            let used = self.page().used;
            let tailroom = (ENTRIES_PER_PAGE.saturating_sub(used + 1)) * ENTRY_SIZE;
            let chunk_len = tailroom.min(data.len() - offset);
            let chunk = &data[offset..offset + chunk_len];
            let chunk_entries = entries_for(chunk_len);
            let span = u8::try_from(chunk_entries + 1).unwrap_or(u8::MAX);
            let mut entry = entry_head(ns, TYPE_BLOB_DATA, span, chunk_count, key)?;
            entry[24..26].copy_from_slice(&(chunk_len as u16).to_le_bytes());
            entry[28..32].copy_from_slice(&crc(chunk).to_le_bytes());
            let page = self.page();
            page.put_entry(entry);
            page.put(chunk, chunk_entries);
            chunk_count = chunk_count.saturating_add(1);
            offset += chunk_len;
            let remaining = data.len() - offset;
            if remaining > 0 || tailroom - chunk_len < ENTRY_SIZE {
                self.new_page();
            }
            if remaining == 0 {
                break;
            }
        }
        let mut index = entry_head(ns, TYPE_BLOB_INDEX, 1, CHUNK_ANY, key)?;
        index[24..28].copy_from_slice(&(data.len() as u32).to_le_bytes());
        index[28] = chunk_count;
        index[29] = 0;
        self.page().put_entry(index);
        Ok(())
    }

    /// The partition image of `size` bytes (unused pages erased, the last page kept free as
    /// NVS requires).
    pub fn finish(&self, size: usize) -> Result<Vec<u8>, NvsError> {
        if size == 0 || !size.is_multiple_of(PAGE_SIZE) {
            return Err(NvsError::BadSize(size));
        }
        let available = (size / PAGE_SIZE).saturating_sub(1);
        if self.pages.len() > available {
            return Err(NvsError::TooSmall {
                size,
                needed: self.pages.len(),
                available,
            });
        }
        let mut out = Vec::with_capacity(size);
        for page in &self.pages {
            out.extend_from_slice(&page.buf);
        }
        out.resize(size, 0xFF);
        Ok(out)
    }
}

/// Writes `items` (grouped by namespace in order of first appearance) into a partition image.
pub fn write(items: &[Item], size: usize) -> Result<Vec<u8>, NvsError> {
    let mut writer = Writer::new();
    for item in items {
        writer
            .namespace(&item.namespace)?
            .put(&item.key, &item.value)?;
    }
    writer.finish(size)
}

// ---------------------------------------------------------------- reader

struct RawEntry {
    offset: usize,
    ns: u8,
    kind: u8,
    chunk: u8,
    key: String,
    data: [u8; 8],
    payload: Vec<u8>,
}

/// Reads every item of an NVS partition image (pages in sequence order), reassembling blobs.
/// Strict: a bad page header, entry or data CRC is an error naming its offset.
pub fn read(partition: &[u8]) -> Result<Vec<Item>, NvsError> {
    if partition.is_empty() || !partition.len().is_multiple_of(PAGE_SIZE) {
        return Err(NvsError::BadSize(partition.len()));
    }
    let mut pages: Vec<(u32, usize)> = Vec::new();
    for (index, page) in partition.chunks_exact(PAGE_SIZE).enumerate() {
        let offset = index * PAGE_SIZE;
        let state = u32_at(page, 0);
        match state {
            STATE_EMPTY => continue,
            STATE_ACTIVE | STATE_FULL | STATE_FREEING => {}
            other => {
                return Err(NvsError::PageState {
                    offset,
                    state: other,
                });
            }
        }
        let read = u32_at(page, 28);
        let calculated = crc(&page[4..28]);
        if read != calculated {
            return Err(NvsError::PageHeaderCrc {
                offset,
                read,
                calculated,
            });
        }
        pages.push((u32_at(page, 4), offset));
    }
    pages.sort_by_key(|&(seq, _)| seq);

    let mut raw = Vec::new();
    for &(_, page_offset) in &pages {
        read_page(partition, page_offset, &mut raw)?;
    }

    let mut namespaces: Vec<(u8, String)> = Vec::new();
    for e in raw.iter().filter(|e| e.ns == 0 && e.kind == TYPE_U8) {
        namespaces.push((e.data[0], e.key.clone()));
    }
    let ns_name = |e: &RawEntry| -> Result<String, NvsError> {
        namespaces
            .iter()
            .find(|(i, _)| *i == e.ns)
            .map(|(_, n)| n.clone())
            .ok_or(NvsError::UnknownNamespace {
                offset: e.offset,
                index: e.ns,
            })
    };

    let mut items = Vec::new();
    for e in raw.iter().filter(|e| e.ns != 0) {
        let d = e.data;
        let value = match e.kind {
            TYPE_U8 => Value::U8(d[0]),
            TYPE_I8 => Value::I8(i8::from_le_bytes([d[0]])),
            TYPE_U16 => Value::U16(u16::from_le_bytes([d[0], d[1]])),
            TYPE_I16 => Value::I16(i16::from_le_bytes([d[0], d[1]])),
            TYPE_U32 => Value::U32(u32::from_le_bytes([d[0], d[1], d[2], d[3]])),
            TYPE_I32 => Value::I32(i32::from_le_bytes([d[0], d[1], d[2], d[3]])),
            TYPE_U64 => Value::U64(u64::from_le_bytes(d)),
            TYPE_I64 => Value::I64(i64::from_le_bytes(d)),
            TYPE_STR => {
                let text = e
                    .payload
                    .strip_suffix(&[0])
                    .and_then(|t| std::str::from_utf8(t).ok())
                    .ok_or(NvsError::BadString { offset: e.offset })?;
                Value::Str(text.to_owned())
            }
            TYPE_BLOB_INDEX => {
                let namespace = ns_name(e)?;
                Value::Blob(assemble_blob(&raw, e, &namespace)?)
            }
            TYPE_BLOB_DATA => continue,
            other => {
                return Err(NvsError::UnknownType {
                    offset: e.offset,
                    kind: other,
                });
            }
        };
        items.push(Item {
            namespace: ns_name(e)?,
            key: e.key.clone(),
            value,
        });
    }
    Ok(items)
}

fn assemble_blob(raw: &[RawEntry], index: &RawEntry, namespace: &str) -> Result<Vec<u8>, NvsError> {
    let expected = u32_at(&index.data, 0) as usize;
    let count = index.data[4];
    let start = index.data[5];
    let mut blob = Vec::new();
    for n in 0..u16::from(count) {
        let chunk = u16::from(start) + n;
        let part = raw
            .iter()
            .find(|c| {
                c.kind == TYPE_BLOB_DATA
                    && c.ns == index.ns
                    && c.key == index.key
                    && u16::from(c.chunk) == chunk
            })
            .ok_or_else(|| NvsError::MissingChunk {
                namespace: namespace.into(),
                key: index.key.clone(),
                chunk,
            })?;
        blob.extend_from_slice(&part.payload);
    }
    if blob.len() != expected {
        return Err(NvsError::BlobSize {
            namespace: namespace.into(),
            key: index.key.clone(),
            expected,
            found: blob.len(),
        });
    }
    Ok(blob)
}

fn entry_state(page: &[u8], index: usize) -> u8 {
    let bit = index * 2;
    page.get(BITMAP_OFFSET + bit / 8)
        .map_or(0b11, |b| (b >> (bit % 8)) & 0b11)
}

fn read_page(
    partition: &[u8],
    page_offset: usize,
    out: &mut Vec<RawEntry>,
) -> Result<(), NvsError> {
    const WRITTEN: u8 = 0b10;
    let page = &partition[page_offset..page_offset + PAGE_SIZE];
    let mut index = 0;
    while index < ENTRIES_PER_PAGE {
        if entry_state(page, index) != WRITTEN {
            index += 1;
            continue;
        }
        let start = FIRST_ENTRY_OFFSET + index * ENTRY_SIZE;
        let offset = page_offset + start;
        let mut entry = [0u8; ENTRY_SIZE];
        entry.copy_from_slice(&page[start..start + ENTRY_SIZE]);
        let read = u32_at(&entry, 4);
        let calculated = entry_crc(&entry);
        if read != calculated {
            return Err(NvsError::EntryCrc {
                offset,
                read,
                calculated,
            });
        }
        let span = entry[2];
        let kind = entry[1];
        let variable = kind == TYPE_STR || kind == TYPE_BLOB_DATA;
        if span == 0 || index + usize::from(span) > ENTRIES_PER_PAGE || (!variable && span != 1) {
            return Err(NvsError::BadSpan { offset, span });
        }
        let key_bytes = &entry[8..24];
        let key_len = key_bytes.iter().position(|&b| b == 0).unwrap_or(16);
        let key = String::from_utf8_lossy(&key_bytes[..key_len]).into_owned();
        let mut data = [0u8; 8];
        data.copy_from_slice(&entry[24..32]);
        let mut payload = Vec::new();
        if variable {
            let len = usize::from(u16::from_le_bytes([data[0], data[1]]));
            let room = (usize::from(span) - 1) * ENTRY_SIZE;
            if len > room {
                return Err(NvsError::BadSpan { offset, span });
            }
            payload = page[start + ENTRY_SIZE..start + ENTRY_SIZE + len].to_vec();
            let read = u32_at(&data, 4);
            let calculated = crc(&payload);
            if read != calculated {
                return Err(NvsError::DataCrc {
                    offset,
                    len,
                    read,
                    calculated,
                });
            }
        }
        out.push(RawEntry {
            offset,
            ns: entry[0],
            kind,
            chunk: entry[3],
            key,
            data,
            payload,
        });
        index += usize::from(span);
    }
    Ok(())
}

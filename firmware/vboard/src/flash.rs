//! The board's SPI flash: a file that persists across resets and restarts, like real flash.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

pub const SECTOR: usize = 0x1000;

/// Why a flash operation failed.
#[derive(Debug, thiserror::Error)]
pub enum FlashError {
    #[error("access of {len} bytes at 0x{offset:x} runs past the end of the {size}-byte flash")]
    OutOfRange {
        offset: u64,
        len: usize,
        size: usize,
    },
    #[error("flash file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "flash file {path} is {actual} bytes, the board was started with a {expected}-byte flash"
    )]
    SizeMismatch {
        path: PathBuf,
        actual: u64,
        expected: usize,
    },
}

/// Flash contents, mirrored to a file on every write.
#[derive(Debug)]
pub struct Flash {
    data: Vec<u8>,
    file: File,
    path: PathBuf,
}

impl Flash {
    /// Opens `path`, creating it erased (all `0xFF`) when missing.
    pub fn open(path: &Path, size: usize) -> Result<Flash, FlashError> {
        let io = |source| FlashError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io)?;
        let actual = file.metadata().map_err(io)?.len();
        let data = if actual == 0 {
            let data = vec![0xFF; size];
            file.write_all(&data).map_err(io)?;
            data
        } else if actual != size as u64 {
            return Err(FlashError::SizeMismatch {
                path: path.to_path_buf(),
                actual,
                expected: size,
            });
        } else {
            let mut data = Vec::with_capacity(size);
            file.read_to_end(&mut data).map_err(io)?;
            data
        };
        Ok(Flash {
            data,
            file,
            path: path.to_path_buf(),
        })
    }

    pub fn size(&self) -> usize {
        self.data.len()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn range(&self, offset: u64, len: usize) -> Result<std::ops::Range<usize>, FlashError> {
        let out = FlashError::OutOfRange {
            offset,
            len,
            size: self.data.len(),
        };
        let start = usize::try_from(offset).map_err(|_| FlashError::OutOfRange {
            offset,
            len,
            size: self.data.len(),
        })?;
        let end = start
            .checked_add(len)
            .filter(|end| *end <= self.data.len())
            .ok_or(out)?;
        Ok(start..end)
    }

    pub fn read(&self, offset: u64, len: usize) -> Result<&[u8], FlashError> {
        let range = self.range(offset, len)?;
        Ok(&self.data[range])
    }

    /// Writes bytes as given (the caller erases first, as real flash needs).
    pub fn write(&mut self, offset: u64, bytes: &[u8]) -> Result<(), FlashError> {
        let range = self.range(offset, bytes.len())?;
        self.data[range.clone()].copy_from_slice(bytes);
        self.persist(range)
    }

    /// Erases whole sectors covering `[offset, offset + len)`.
    pub fn erase(&mut self, offset: u64, len: usize) -> Result<(), FlashError> {
        let start = offset - offset % SECTOR as u64;
        // Saturating: an absurd offset or length must end as OutOfRange, not an overflow panic.
        let end = offset
            .saturating_add(len as u64)
            .div_ceil(SECTOR as u64)
            .saturating_mul(SECTOR as u64);
        let span = usize::try_from(end - start).unwrap_or(usize::MAX);
        let range = self.range(start, span)?;
        self.data[range.clone()].fill(0xFF);
        self.persist(range)
    }

    fn persist(&mut self, range: std::ops::Range<usize>) -> Result<(), FlashError> {
        let path = self.path.clone();
        let io = |source| FlashError::Io { path, source };
        let written = self
            .file
            .seek(SeekFrom::Start(range.start as u64))
            .and_then(|_| self.file.write_all(&self.data[range]));
        written.map_err(io)
    }
}

//! ROM-loader packets (download mode): requests from the host, responses from the ROM or the
//! flasher stub, status and error codes — the byte layouts espflash and esptool speak.

use std::fmt;

/// Request opcodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    FlashBegin,
    FlashData,
    FlashEnd,
    MemBegin,
    MemEnd,
    MemData,
    Sync,
    WriteReg,
    ReadReg,
    SpiSetParams,
    SpiAttach,
    ReadFlashSlow,
    ChangeBaudrate,
    FlashDeflBegin,
    FlashDeflData,
    FlashDeflEnd,
    SpiFlashMd5,
    GetSecurityInfo,
    EraseFlash,
    EraseRegion,
    ReadFlash,
    RunUserCode,
    /// Anything else; answered with "invalid message" (ROM) / "not implemented" (stub).
    Unknown(u8),
}

impl Opcode {
    pub fn from_u8(code: u8) -> Opcode {
        use Opcode::*;
        match code {
            0x02 => FlashBegin,
            0x03 => FlashData,
            0x04 => FlashEnd,
            0x05 => MemBegin,
            0x06 => MemEnd,
            0x07 => MemData,
            0x08 => Sync,
            0x09 => WriteReg,
            0x0A => ReadReg,
            0x0B => SpiSetParams,
            0x0D => SpiAttach,
            0x0E => ReadFlashSlow,
            0x0F => ChangeBaudrate,
            0x10 => FlashDeflBegin,
            0x11 => FlashDeflData,
            0x12 => FlashDeflEnd,
            0x13 => SpiFlashMd5,
            0x14 => GetSecurityInfo,
            0xD0 => EraseFlash,
            0xD1 => EraseRegion,
            0xD2 => ReadFlash,
            0xD3 => RunUserCode,
            other => Unknown(other),
        }
    }

    pub fn code(self) -> u8 {
        use Opcode::*;
        match self {
            FlashBegin => 0x02,
            FlashData => 0x03,
            FlashEnd => 0x04,
            MemBegin => 0x05,
            MemEnd => 0x06,
            MemData => 0x07,
            Sync => 0x08,
            WriteReg => 0x09,
            ReadReg => 0x0A,
            SpiSetParams => 0x0B,
            SpiAttach => 0x0D,
            ReadFlashSlow => 0x0E,
            ChangeBaudrate => 0x0F,
            FlashDeflBegin => 0x10,
            FlashDeflData => 0x11,
            FlashDeflEnd => 0x12,
            SpiFlashMd5 => 0x13,
            GetSecurityInfo => 0x14,
            EraseFlash => 0xD0,
            EraseRegion => 0xD1,
            ReadFlash => 0xD2,
            RunUserCode => 0xD3,
            Unknown(code) => code,
        }
    }

    /// Data commands carry a checksummed payload after a 16-byte header.
    pub fn is_data(self) -> bool {
        matches!(
            self,
            Opcode::FlashData | Opcode::FlashDeflData | Opcode::MemData
        )
    }
}

/// A decoded request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub opcode: Opcode,
    pub checksum: u32,
    pub data: Vec<u8>,
}

/// Why a frame is not a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("frame of {len} bytes is shorter than the 8-byte request header")]
    TooShort { len: usize },
    #[error("direction byte 0x{found:02x}, expected 0x00 (host to chip)")]
    NotARequest { found: u8 },
    #[error("header announces {declared} data bytes, frame carries {actual}")]
    SizeMismatch { declared: usize, actual: usize },
}

impl Request {
    pub fn parse(frame: &[u8]) -> Result<Request, RequestError> {
        let header = frame
            .get(..8)
            .ok_or(RequestError::TooShort { len: frame.len() })?;
        if header[0] != 0x00 {
            return Err(RequestError::NotARequest { found: header[0] });
        }
        let declared = usize::from(u16::from_le_bytes([header[2], header[3]]));
        let data = &frame[8..];
        if data.len() != declared {
            return Err(RequestError::SizeMismatch {
                declared,
                actual: data.len(),
            });
        }
        Ok(Request {
            opcode: Opcode::from_u8(header[1]),
            checksum: u32::from_le_bytes([header[4], header[5], header[6], header[7]]),
            data: data.to_vec(),
        })
    }

    /// The little-endian word at `index` of the data, if present.
    pub fn word(&self, index: usize) -> Option<u32> {
        let b = self.data.get(index * 4..index * 4 + 4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Encodes a request (what a host sends), for tests and tools.
    pub fn encode(opcode: Opcode, data: &[u8], checksum: u32) -> Vec<u8> {
        let mut out = vec![0x00, opcode.code()];
        out.extend_from_slice(&(data.len() as u16).to_le_bytes());
        out.extend_from_slice(&checksum.to_le_bytes());
        out.extend_from_slice(data);
        out
    }
}

/// The data checksum: `0xEF` XOR every payload byte.
pub fn checksum(payload: &[u8]) -> u32 {
    u32::from(payload.iter().fold(0xEFu8, |acc, b| acc ^ b))
}

/// Who answers: the ROM (4 status bytes) or the flasher stub (2 status bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Responder {
    Rom,
    Stub,
}

/// A failure status, in the code space of whoever answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    InvalidParameter,
    InvalidMessage,
    ChecksumError,
    FlashWriteError,
    FlashReadError,
    InflateError,
    TooMuchData,
    NotInFlashMode,
    BadBlockSize,
    BadDataLength,
}

impl Failure {
    /// (ROM error byte, stub error byte).
    fn codes(self) -> (u8, u8) {
        match self {
            Failure::InvalidParameter => (0x01, 0xC0),
            Failure::InvalidMessage => (0x05, 0xFF),
            Failure::ChecksumError => (0x07, 0xC1),
            Failure::FlashWriteError => (0x08, 0xC4),
            Failure::FlashReadError => (0x09, 0xC4),
            Failure::InflateError => (0x0B, 0xC7),
            Failure::TooMuchData => (0x0D, 0xC9),
            Failure::NotInFlashMode => (0x06, 0xC6),
            Failure::BadBlockSize => (0x01, 0xC2),
            Failure::BadDataLength => (0x01, 0xC0),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

/// A response frame (before SLIP encoding). The sizes matter: espflash infers the status
/// length from the total (10 or 26 bytes ⇒ stub), so ROM replies are 12 and stub replies 10
/// bytes plus payload.
pub fn response(
    responder: Responder,
    opcode: Opcode,
    value: u32,
    payload: &[u8],
    failure: Option<Failure>,
) -> Vec<u8> {
    let status: Vec<u8> = match (responder, failure) {
        (Responder::Rom, None) => vec![0, 0, 0, 0],
        (Responder::Rom, Some(f)) => vec![1, f.codes().0, 0, 0],
        (Responder::Stub, None) => vec![0, 0],
        (Responder::Stub, Some(f)) => vec![f.codes().1, 0],
    };
    let size = payload.len() + status.len();
    let mut out = vec![0x01, opcode.code()];
    out.extend_from_slice(&(size as u16).to_le_bytes());
    out.extend_from_slice(&value.to_le_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(&status);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rom_sync_reply_matches_the_observed_bytes() {
        let reply = response(Responder::Rom, Opcode::Sync, 0x2012_0707, &[], None);
        assert_eq!(
            reply,
            [0x01, 0x08, 0x04, 0x00, 0x07, 0x07, 0x12, 0x20, 0, 0, 0, 0]
        );
    }

    #[test]
    fn failures_use_each_responders_codes() {
        assert_eq!(
            &response(
                Responder::Rom,
                Opcode::ReadReg,
                0,
                &[],
                Some(Failure::InvalidMessage)
            )[8..],
            &[1, 5, 0, 0]
        );
        assert_eq!(
            &response(
                Responder::Stub,
                Opcode::FlashData,
                0,
                &[],
                Some(Failure::ChecksumError)
            )[8..],
            &[0xC1, 0]
        );
    }

    #[test]
    fn requests_round_trip_and_bad_frames_are_errors() {
        let frame = Request::encode(Opcode::ReadReg, &0x4000_1000u32.to_le_bytes(), 0);
        let req = Request::parse(&frame).unwrap();
        assert_eq!(
            (req.opcode, req.word(0)),
            (Opcode::ReadReg, Some(0x4000_1000))
        );
        assert_eq!(
            Request::parse(&frame[..5]),
            Err(RequestError::TooShort { len: 5 })
        );
        assert_eq!(
            Request::parse(&frame[..10]),
            Err(RequestError::SizeMismatch {
                declared: 4,
                actual: 2
            })
        );
        assert_eq!(checksum(&[0xEF]), 0);
    }
}

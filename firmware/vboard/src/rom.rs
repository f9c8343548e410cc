//! The ROM serial loader (download mode) and the flasher stub it turns into once a stub is
//! uploaded: a pure state machine from request frames to response frames, so it can be
//! driven by a pseudo-terminal, a test, or a fuzzer alike.

use std::collections::HashMap;

use esp_formats::Chip;
use esp_formats::loader::{self, Failure, Opcode, Request, Responder};
use md5::{Digest, Md5};

use crate::flash::Flash;

/// The ROM's SYNC reply value; the stub answers 0 (which is how esptool notices a stub).
const ROM_SYNC_VALUE: u32 = 0x2012_0707;
const CHIP_MAGIC_REG: u32 = 0x4000_1000;
const SPI_CMD_USR: u32 = 1 << 18;
const READ_FLASH_SLOW_MAX: usize = 64;

/// Per-chip facts the loader answers with.
#[derive(Debug, Clone, Copy)]
struct ChipRegs {
    magic: u32,
    mac_words: (u32, u32),
    spi_base: u32,
    spi_usr2: u32,
    spi_w0: u32,
    /// The ESP32 ROM does not implement GET_SECURITY_INFO.
    security_info: bool,
    /// UART0 clock divider register, read to estimate the crystal (ESP32 only).
    uart_clkdiv: Option<u32>,
}

fn chip_regs(chip: Chip) -> ChipRegs {
    match chip {
        Chip::Esp32 => ChipRegs {
            magic: 0x00F0_1D83,
            mac_words: (0x3FF5_A004, 0x3FF5_A008),
            spi_base: 0x3FF4_2000,
            spi_usr2: 0x24,
            spi_w0: 0x80,
            security_info: false,
            uart_clkdiv: Some(0x3FF4_0014),
        },
        // The C3 register map; the other RISC-V chips differ in details sparring does not emulate.
        _ => ChipRegs {
            magic: 0x1B31_506F,
            mac_words: (0x6000_8844, 0x6000_8848),
            spi_base: 0x6000_2000,
            spi_usr2: 0x20,
            spi_w0: 0x58,
            security_info: true,
            uart_clkdiv: None,
        },
    }
}

/// What the board must do after a reply has been sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// Keep serving the loader.
    Stay,
    /// Leave download mode and boot the app from flash.
    RunUserCode,
}

/// A flash write in progress (FLASH_BEGIN or FLASH_DEFL_BEGIN until the next BEGIN/END).
struct FlashWrite {
    offset: u64,
    /// Uncompressed size announced by BEGIN.
    size: usize,
    block_size: usize,
    inflater: Option<flate2::Decompress>,
    written: usize,
}

/// The loader of one board.
pub struct RomLoader {
    chip: Chip,
    regs: ChipRegs,
    mac: [u8; 6],
    jedec_id: u32,
    responder: Responder,
    registers: HashMap<u32, u32>,
    write: Option<FlashWrite>,
}

impl RomLoader {
    pub fn new(chip: Chip, mac: [u8; 6], flash_size: usize) -> RomLoader {
        // Winbond manufacturer id, capacity byte log2(size): 0x16 = 4 MB.
        let capacity = flash_size.max(1).ilog2();
        RomLoader {
            chip,
            regs: chip_regs(chip),
            mac,
            jedec_id: 0xEF | (0x40 << 8) | (capacity << 16),
            responder: Responder::Rom,
            registers: HashMap::new(),
            write: None,
        }
    }

    /// True once a flasher stub has been uploaded and started.
    pub fn stub_running(&self) -> bool {
        self.responder == Responder::Stub
    }

    /// Handles one decoded SLIP frame; returns the frames to send back (not yet SLIP-encoded)
    /// and what to do afterwards. Frames that are not requests (e.g. READ_FLASH acks) get no
    /// answer.
    pub fn handle(&mut self, frame: &[u8], flash: &mut Flash) -> (Vec<Vec<u8>>, After) {
        let Ok(request) = Request::parse(frame) else {
            return (Vec::new(), After::Stay);
        };
        let op = request.opcode;
        let ok = |payload: &[u8], value: u32, responder| {
            vec![loader::response(responder, op, value, payload, None)]
        };
        let fail =
            |failure, responder| vec![loader::response(responder, op, 0, &[], Some(failure))];
        let r = self.responder;
        let stub = r == Responder::Stub;
        let outcome = match op {
            Opcode::Sync => {
                let value = if stub { 0 } else { ROM_SYNC_VALUE };
                let reply = loader::response(r, op, value, &[], None);
                return (vec![reply; 8], After::Stay);
            }
            Opcode::ReadReg => match request.word(0) {
                Some(addr) => Ok(ok(&[], self.read_reg(addr), r)),
                None => Err(Failure::InvalidMessage),
            },
            Opcode::WriteReg => self.write_regs(&request.data).map(|()| ok(&[], 0, r)),
            Opcode::GetSecurityInfo if self.regs.security_info => {
                let mut info = [0u8; 20];
                info[12..16].copy_from_slice(&u32::from(self.chip.id()).to_le_bytes());
                Ok(ok(&info, 0, r))
            }
            Opcode::GetSecurityInfo => Err(Failure::InvalidMessage),
            Opcode::SpiAttach | Opcode::SpiSetParams | Opcode::ChangeBaudrate => Ok(ok(&[], 0, r)),
            Opcode::FlashBegin | Opcode::FlashDeflBegin => {
                self.begin(&request, flash).map(|()| ok(&[], 0, r))
            }
            Opcode::FlashData | Opcode::FlashDeflData => {
                self.data(&request, flash).map(|()| ok(&[], 0, r))
            }
            Opcode::FlashEnd | Opcode::FlashDeflEnd => {
                self.write = None;
                // "Run user code" is honoured for FLASH_END only (esptool's soft reset:
                // FLASH_BEGIN(0,0) + FLASH_END(1)); FLASH_DEFL_END(1) just leaves flash mode,
                // which is what espflash relies on when it writes several regions in a row
                // after its stub reset the chip back into the ROM.
                let run_user_code = op == Opcode::FlashEnd && request.word(0) == Some(1) && !stub;
                let reboot = request.word(0) == Some(0);
                if reboot && stub {
                    // The stub resets itself; the chip comes back in the ROM loader.
                    self.responder = Responder::Rom;
                }
                let after = if run_user_code {
                    After::RunUserCode
                } else {
                    After::Stay
                };
                return (ok(&[], 0, r), after);
            }
            Opcode::MemBegin | Opcode::MemData => Ok(ok(&[], 0, r)),
            Opcode::MemEnd => {
                // Whatever was uploaded, the board behaves as the flasher stub from now on.
                let mut frames = ok(&[], 0, r);
                frames.push(b"OHAI".to_vec());
                self.responder = Responder::Stub;
                return (frames, After::Stay);
            }
            Opcode::SpiFlashMd5 => self.md5(&request, flash).map(|payload| ok(&payload, 0, r)),
            Opcode::ReadFlashSlow if !stub => self
                .read_slow(&request, flash)
                .map(|payload| ok(&payload, 0, r)),
            Opcode::EraseFlash if stub => flash
                .erase(0, flash.size())
                .map(|()| ok(&[], 0, r))
                .map_err(|_| Failure::FlashWriteError),
            Opcode::EraseRegion if stub => match (request.word(0), request.word(1)) {
                (Some(offset), Some(len))
                    if offset.is_multiple_of(0x1000) && len.is_multiple_of(0x1000) =>
                {
                    flash
                        .erase(u64::from(offset), len as usize)
                        .map(|()| ok(&[], 0, r))
                        .map_err(|_| Failure::InvalidParameter)
                }
                _ => Err(Failure::InvalidParameter),
            },
            Opcode::ReadFlash if stub => self.read_flash(&request, flash).map(|mut frames| {
                frames.insert(0, loader::response(r, op, 0, &[], None));
                frames
            }),
            Opcode::RunUserCode if stub => return (Vec::new(), After::RunUserCode),
            _ => Err(Failure::InvalidMessage),
        };
        (
            outcome.unwrap_or_else(|failure| fail(failure, r)),
            After::Stay,
        )
    }

    fn read_reg(&self, addr: u32) -> u32 {
        let (a, b) = self.regs.mac_words;
        let m = self.mac;
        match addr {
            CHIP_MAGIC_REG => self.regs.magic,
            _ if addr == a => u32::from_be_bytes([m[2], m[3], m[4], m[5]]),
            _ if addr == b => u32::from_be_bytes([0, 0, m[0], m[1]]),
            _ if Some(addr) == self.regs.uart_clkdiv => 347, // 40 MHz crystal at 115200 baud
            _ => self.registers.get(&addr).copied().unwrap_or(0),
        }
    }

    /// WRITE_REG: one or more (addr, value, mask, delay) groups. A write of the SPI user
    /// command bit runs the flash command in USR2 at once, as the SPI controller would.
    fn write_regs(&mut self, data: &[u8]) -> Result<(), Failure> {
        if data.is_empty() || !data.len().is_multiple_of(16) {
            return Err(Failure::InvalidMessage);
        }
        for group in data.chunks(16) {
            let word =
                |i: usize| u32::from_le_bytes([group[i], group[i + 1], group[i + 2], group[i + 3]]);
            let (addr, value, mask) = (word(0), word(4), word(8));
            let old = self.registers.get(&addr).copied().unwrap_or(0);
            let mut new = (old & !mask) | (value & mask);
            if addr == self.regs.spi_base && new & SPI_CMD_USR != 0 {
                self.run_spi_command();
                new &= !SPI_CMD_USR;
            }
            self.registers.insert(addr, new);
        }
        Ok(())
    }

    fn run_spi_command(&mut self) {
        let usr2 = self
            .registers
            .get(&(self.regs.spi_base + self.regs.spi_usr2))
            .copied()
            .unwrap_or(0);
        let answer = match usr2 & 0xFF {
            0x9F => self.jedec_id, // RDID
            0x5A => 0x5044_4653,   // RDSFDP: "SFDP"
            _ => 0,                // status registers, resets, wake-ups
        };
        self.registers
            .insert(self.regs.spi_base + self.regs.spi_w0, answer);
    }

    fn begin(&mut self, request: &Request, flash: &mut Flash) -> Result<(), Failure> {
        let (Some(size), Some(_blocks), Some(block_size), Some(offset)) = (
            request.word(0),
            request.word(1),
            request.word(2),
            request.word(3),
        ) else {
            return Err(Failure::InvalidMessage);
        };
        let max_block = if self.stub_running() {
            0x4000
        } else {
            0x1_0000
        };
        if block_size == 0 || block_size > max_block {
            return Err(Failure::BadBlockSize);
        }
        let size = size as usize;
        if u64::from(offset) + size as u64 > flash.size() as u64 {
            return Err(Failure::InvalidParameter);
        }
        flash
            .erase(u64::from(offset), size)
            .map_err(|_| Failure::InvalidParameter)?;
        let compressed = request.opcode == Opcode::FlashDeflBegin;
        self.write = Some(FlashWrite {
            offset: u64::from(offset),
            size,
            block_size: block_size as usize,
            inflater: compressed.then(|| flate2::Decompress::new(true)),
            written: 0,
        });
        Ok(())
    }

    fn data(&mut self, request: &Request, flash: &mut Flash) -> Result<(), Failure> {
        let write = self.write.as_mut().ok_or(Failure::NotInFlashMode)?;
        let (Some(len), Some(seq)) = (request.word(0), request.word(1)) else {
            return Err(Failure::InvalidMessage);
        };
        let payload = request.data.get(16..).ok_or(Failure::BadDataLength)?;
        if payload.len() != len as usize {
            return Err(Failure::BadDataLength);
        }
        if loader::checksum(payload) != request.checksum {
            return Err(Failure::ChecksumError);
        }
        match &mut write.inflater {
            None => {
                // Uncompressed blocks land at their sequence position; padding past the announced
                // size is written too (it is 0xFF), within the flash.
                let at = write.offset + u64::from(seq) * write.block_size as u64;
                flash
                    .write(at, payload)
                    .map_err(|_| Failure::InvalidParameter)?;
                write.written += payload.len();
            }
            Some(inflater) => {
                let mut input = payload;
                let mut out = vec![0u8; 0x1_0000];
                // Bounded: every round consumes input or produces output, else it stops.
                for _ in 0..1024 {
                    let (before_in, before_out) = (inflater.total_in(), inflater.total_out());
                    let status = inflater
                        .decompress(input, &mut out, flate2::FlushDecompress::None)
                        .map_err(|_| Failure::InflateError)?;
                    let consumed = (inflater.total_in() - before_in) as usize;
                    let produced = (inflater.total_out() - before_out) as usize;
                    input = &input[consumed..];
                    if write.written + produced > write.size {
                        return Err(Failure::TooMuchData);
                    }
                    flash
                        .write(write.offset + write.written as u64, &out[..produced])
                        .map_err(|_| Failure::InvalidParameter)?;
                    write.written += produced;
                    if status == flate2::Status::StreamEnd || (consumed == 0 && produced == 0) {
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    fn md5(&self, request: &Request, flash: &Flash) -> Result<Vec<u8>, Failure> {
        let (Some(addr), Some(size)) = (request.word(0), request.word(1)) else {
            return Err(Failure::InvalidMessage);
        };
        let bytes = flash
            .read(u64::from(addr), size as usize)
            .map_err(|_| Failure::FlashReadError)?;
        let digest: [u8; 16] = Md5::digest(bytes).into();
        Ok(if self.stub_running() {
            digest.to_vec()
        } else {
            digest
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
                .into_bytes()
        })
    }

    fn read_slow(&self, request: &Request, flash: &Flash) -> Result<Vec<u8>, Failure> {
        let (Some(offset), Some(len)) = (request.word(0), request.word(1)) else {
            return Err(Failure::InvalidMessage);
        };
        if len as usize > READ_FLASH_SLOW_MAX {
            return Err(Failure::InvalidParameter);
        }
        let mut out = flash
            .read(u64::from(offset), len as usize)
            .map_err(|_| Failure::FlashReadError)?
            .to_vec();
        out.resize(READ_FLASH_SLOW_MAX, 0xFF);
        Ok(out)
    }

    /// Stub READ_FLASH: the data in `packet_size` frames, then the MD5 of all of it. The
    /// host's acks arrive as non-request frames and are ignored.
    fn read_flash(&self, request: &Request, flash: &Flash) -> Result<Vec<Vec<u8>>, Failure> {
        let (Some(offset), Some(len), Some(packet)) =
            (request.word(0), request.word(1), request.word(2))
        else {
            return Err(Failure::InvalidMessage);
        };
        if packet == 0 {
            return Err(Failure::InvalidParameter);
        }
        let data = flash
            .read(u64::from(offset), len as usize)
            .map_err(|_| Failure::FlashReadError)?;
        let mut frames: Vec<Vec<u8>> = data.chunks(packet as usize).map(<[u8]>::to_vec).collect();
        frames.push(Md5::digest(data).to_vec());
        Ok(frames)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loader_and_flash() -> (RomLoader, Flash, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let flash = Flash::open(&dir.path().join("flash.bin"), 0x10000).unwrap();
        (
            RomLoader::new(Chip::Esp32C3, [1, 2, 3, 4, 5, 6], 0x10000),
            flash,
            dir,
        )
    }

    fn status(reply: &[u8]) -> &[u8] {
        &reply[8..]
    }

    #[test]
    fn writes_past_the_end_of_flash_get_an_error_status() {
        let (mut rom, mut flash, _dir) = loader_and_flash();
        let begin = Request::encode(
            Opcode::FlashBegin,
            &[0x2000u32, 2, 0x1000, 0xF000]
                .map(u32::to_le_bytes)
                .concat(),
            0,
        );
        let (replies, _) = rom.handle(&begin, &mut flash);
        assert_eq!(
            status(&replies[0]),
            &[1, 0x01, 0, 0],
            "FLASH_BEGIN past the end: invalid parameter"
        );
        let md5 = Request::encode(
            Opcode::SpiFlashMd5,
            &[0xFFF0u32, 0x100, 0, 0].map(u32::to_le_bytes).concat(),
            0,
        );
        let (replies, _) = rom.handle(&md5, &mut flash);
        assert_eq!(
            status(&replies[0]),
            &[1, 0x09, 0, 0],
            "MD5 past the end: flash read error"
        );
    }

    #[test]
    fn data_without_begin_and_bad_checksums_are_refused() {
        let (mut rom, mut flash, _dir) = loader_and_flash();
        let payload = [0xAAu8; 16];
        let mut data = [16u32, 0, 0, 0].map(u32::to_le_bytes).concat();
        data.extend_from_slice(&payload);
        let (replies, _) = rom.handle(
            &Request::encode(Opcode::FlashData, &data, loader::checksum(&payload)),
            &mut flash,
        );
        assert_eq!(status(&replies[0]), &[1, 0x06, 0, 0]);
        let begin = Request::encode(
            Opcode::FlashBegin,
            &[0x1000u32, 1, 0x400, 0].map(u32::to_le_bytes).concat(),
            0,
        );
        rom.handle(&begin, &mut flash);
        let (replies, _) = rom.handle(&Request::encode(Opcode::FlashData, &data, 0x42), &mut flash);
        assert_eq!(status(&replies[0]), &[1, 0x07, 0, 0], "checksum error");
    }

    #[test]
    fn unknown_opcodes_and_stub_only_commands_on_the_rom_are_invalid_messages() {
        let (mut rom, mut flash, _dir) = loader_and_flash();
        for op in [0x0C, 0xD0, 0xD2, 0x7F] {
            let (replies, _) = rom.handle(&[0x00, op, 0, 0, 0, 0, 0, 0], &mut flash);
            assert_eq!(replies.len(), 1);
            assert_eq!(status(&replies[0]), &[1, 0x05, 0, 0], "opcode 0x{op:02x}");
        }
    }

    /// Deterministic noise: no frame, however malformed, makes the loader panic or hang.
    #[test]
    fn survives_random_frames() {
        let (mut rom, mut flash, _dir) = loader_and_flash();
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let len = (next() % 48) as usize;
            let mut frame: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if len >= 4 {
                frame[0] = 0; // mostly well-formed headers, so the opcode handlers are reached
                let size = (len.saturating_sub(8)) as u16;
                frame[2..4].copy_from_slice(&size.to_le_bytes());
            }
            let _ = rom.handle(&frame, &mut flash);
        }
    }
}

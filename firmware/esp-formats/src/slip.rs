//! SLIP framing (RFC 1055) as the ESP ROM loader uses it: `0xC0` delimits frames, `0xC0` and
//! `0xDB` inside a frame are escaped as `DB DC` and `DB DD`.
//!
//! Hand-written rather than taken from a crate: it is a dozen lines, and the decoder must
//! survive arbitrary line noise (bounded frame size, bad escapes) in exactly the way the
//! board needs, which the small SLIP crates do not promise.

pub const END: u8 = 0xC0;
pub const ESC: u8 = 0xDB;
const ESC_END: u8 = 0xDC;
const ESC_ESC: u8 = 0xDD;

/// One frame on the wire, delimiters included.
pub fn encode(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 8);
    out.push(END);
    for &b in payload {
        match b {
            END => out.extend_from_slice(&[ESC, ESC_END]),
            ESC => out.extend_from_slice(&[ESC, ESC_ESC]),
            b => out.push(b),
        }
    }
    out.push(END);
    out
}

/// Incremental decoder: feed bytes as they arrive, collect complete frames.
#[derive(Debug)]
pub struct Decoder {
    frame: Vec<u8>,
    in_frame: bool,
    escaped: bool,
    /// Set when the current frame went wrong (bad escape, too long); it is dropped at its end.
    broken: bool,
    max_len: usize,
}

/// Why bytes were dropped instead of forming a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dropped {
    /// `DB` followed by something other than `DC`/`DD`.
    BadEscape,
    /// The frame exceeded the decoder's maximum length.
    TooLong,
}

impl Decoder {
    /// `max_len` bounds the memory one frame may take.
    pub fn new(max_len: usize) -> Decoder {
        Decoder {
            frame: Vec::new(),
            in_frame: false,
            escaped: false,
            broken: false,
            max_len,
        }
    }

    /// Feeds one byte; returns a finished frame (or why one was dropped).
    pub fn push(&mut self, byte: u8) -> Option<Result<Vec<u8>, Dropped>> {
        if byte == END {
            let was_in_frame = self.in_frame;
            let broken = std::mem::take(&mut self.broken);
            self.in_frame = true;
            self.escaped = false;
            let frame = std::mem::take(&mut self.frame);
            // `C0 C0` is an empty frame boundary, not a frame.
            if !was_in_frame || (frame.is_empty() && !broken) {
                return None;
            }
            if broken {
                return Some(Err(if frame.len() >= self.max_len {
                    Dropped::TooLong
                } else {
                    Dropped::BadEscape
                }));
            }
            return Some(Ok(frame));
        }
        if !self.in_frame || self.broken {
            // Noise between frames (boot text, garbage) is ignored, as the ROM does.
            return None;
        }
        let decoded = if self.escaped {
            self.escaped = false;
            match byte {
                ESC_END => END,
                ESC_ESC => ESC,
                _ => {
                    self.broken = true;
                    return None;
                }
            }
        } else if byte == ESC {
            self.escaped = true;
            return None;
        } else {
            byte
        };
        if self.frame.len() >= self.max_len {
            self.broken = true;
            return None;
        }
        self.frame.push(decoded);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(bytes: &[u8]) -> Vec<Result<Vec<u8>, Dropped>> {
        let mut d = Decoder::new(64);
        bytes.iter().filter_map(|b| d.push(*b)).collect()
    }

    #[test]
    fn round_trips_escaped_bytes() {
        let payload = [0x01, END, 0x02, ESC, 0x03];
        let wire = encode(&payload);
        assert_eq!(
            wire,
            [END, 0x01, ESC, ESC_END, 0x02, ESC, ESC_ESC, 0x03, END]
        );
        assert_eq!(decode_all(&wire), vec![Ok(payload.to_vec())]);
    }

    #[test]
    fn ignores_noise_and_survives_bad_frames() {
        let mut wire = b"ets Jun  8 2016 boot text".to_vec();
        wire.extend([END, 0x01, ESC, 0x00, 0x02, END]); // bad escape
        wire.extend(encode(&[0x42]));
        wire.extend([END]);
        wire.extend(std::iter::repeat_n(0x11, 100)); // too long
        wire.extend(encode(&[0x43]));
        let frames = decode_all(&wire);
        assert_eq!(
            frames,
            vec![
                Err(Dropped::BadEscape),
                Ok(vec![0x42]),
                Err(Dropped::TooLong),
                Ok(vec![0x43])
            ]
        );
    }
}

//! What a probe board's RTT up channel carries, turned into log text. Firmware built with defmt
//! (most Rust embedded firmware) writes binary frames there, not text: each frame is decoded with
//! the defmt table of the board's ELF, by `defmt-decoder` (the decoder `defmt-print` and probe-rs
//! use). Firmware without a `.defmt` section writes text, which passes through unchanged.
//!
//! One line per frame, in `defmt-decoder`'s own uncoloured rendering (`Frame::display(false)`):
//! `[<timestamp> ]<LEVEL> <message>`, e.g. `0.000123 INFO temperature 21 C`, or
//! `INFO temperature 21 C` when the firmware defines no `defmt::timestamp!`. These are the fields
//! of `defmt-print`'s default format (`{t} {L} {s}`, `DefaultStyle` in `defmt-decoder`'s
//! `log/format/mod.rs`) without its colours and level padding. A `println!` frame has no level
//! and is its message alone; a message with a newline in it (defmt's `assert_eq!` failures)
//! keeps it, as `defmt-print` shows it. A frame that cannot be decoded becomes a line starting
//! with `defmt: malformed frame`.
//!
//! Framing, as the ELF's `_defmt_encoding_` symbol says (defmt book, `encoding.md`): `rzcobs`,
//! defmt's default, ends each frame with a 0x00 byte, so a malformed frame is skipped and the
//! next one decodes; `raw` frames are laid end to end with nothing between them, so after a
//! malformed one the bytes held are dropped and decoding starts again with the next bytes fed
//! (`defmt-print` stops there instead; a log line that may be misread beats a silent log).

use defmt_decoder::{DecodeError, Encoding, Table};

/// Why an ELF's defmt table cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RttTextError {
    /// `defmt-decoder` refused the ELF or its `.defmt` section (no version symbol, a wire-format
    /// version it does not know, a symbol that is not defmt's JSON, ...).
    #[error("cannot read the defmt table of the ELF: {0}")]
    Table(String),
    /// A defmt encoding newer than this harness.
    #[error("the ELF's defmt frames use the {0:?} encoding, which this harness cannot decode")]
    UnsupportedEncoding(Encoding),
}

/// Turns what an RTT up channel carries into log text: defmt frames decoded with the ELF's
/// table when the ELF has one, the bytes as they are otherwise.
pub struct RttText {
    defmt: Option<DefmtFrames>,
}

/// A defmt table and the bytes of a frame not complete yet. The bytes are kept here, not in a
/// `defmt_decoder::StreamDecoder`, because that one borrows the table it lives beside.
struct DefmtFrames {
    table: Table,
    framing: Framing,
    pending: Vec<u8>,
}

#[derive(Debug, Clone, Copy)]
enum Framing {
    Raw,
    Rzcobs,
}

/// Ends each rzcobs frame (defmt-decoder `stream/rzcobs.rs`, `Rzcobs::decode`).
const RZCOBS_FRAME_END: u8 = 0x00;

impl RttText {
    /// Plain text when the ELF has no `.defmt` table; an error (saying what is wrong) when it has
    /// one that cannot be read.
    pub fn for_elf(elf: &[u8]) -> Result<RttText, RttTextError> {
        let table = Table::parse(elf).map_err(|error| RttTextError::Table(format!("{error:#}")))?;
        let Some(table) = table else {
            return Ok(RttText::plain());
        };
        let framing = match table.encoding() {
            Encoding::Raw => Framing::Raw,
            Encoding::Rzcobs => Framing::Rzcobs,
            other => return Err(RttTextError::UnsupportedEncoding(other)),
        };
        Ok(RttText {
            defmt: Some(DefmtFrames {
                table,
                framing,
                pending: Vec::new(),
            }),
        })
    }

    pub fn plain() -> RttText {
        RttText { defmt: None }
    }

    /// Whether frames are decoded with a defmt table.
    pub fn is_defmt(&self) -> bool {
        self.defmt.is_some()
    }

    /// Feeds bytes as they arrive (frames may be split across calls, several may arrive in one);
    /// returns the text to push as log bytes: one line per complete frame, each ending with '\n'.
    /// A malformed frame becomes one line saying so, then decoding goes on.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<u8> {
        match &mut self.defmt {
            None => bytes.to_vec(),
            Some(frames) => {
                frames.pending.extend_from_slice(bytes);
                let mut text = String::new();
                match frames.framing {
                    Framing::Raw => frames.decode_raw(&mut text),
                    Framing::Rzcobs => frames.decode_rzcobs(&mut text),
                }
                text.into_bytes()
            }
        }
    }
}

impl DefmtFrames {
    fn decode_raw(&mut self, text: &mut String) {
        loop {
            match self.table.decode(&self.pending) {
                Ok((frame, consumed)) => {
                    push_line(text, &frame.display(false));
                    self.pending.drain(..consumed);
                }
                Err(DecodeError::UnexpectedEof) => return,
                Err(DecodeError::Malformed) => {
                    push_line(
                        text,
                        &format_args!(
                            "defmt: malformed frame ({}; raw frames have no boundary to resume at, \
                             so these bytes are dropped)",
                            hex_bytes(&self.pending)
                        ),
                    );
                    self.pending.clear();
                    return;
                }
            }
        }
    }

    fn decode_rzcobs(&mut self, text: &mut String) {
        let mut start = 0;
        while let Some(length) = self.pending[start..]
            .iter()
            .position(|&byte| byte == RZCOBS_FRAME_END)
        {
            let end = start + length + 1;
            // Runs of separators carry no frame.
            if length > 0 {
                // A stream decoder per frame: it reads one frame ending with its separator
                // and borrows the table only here.
                let mut decoder = self.table.new_stream_decoder();
                decoder.received(&self.pending[start..end]);
                match decoder.decode() {
                    Ok(frame) => push_line(text, &frame.display(false)),
                    Err(error) => push_line(
                        text,
                        &format_args!(
                            "defmt: malformed frame ({error}: {})",
                            hex_bytes(&self.pending[start..end - 1])
                        ),
                    ),
                }
            }
            start = end;
        }
        self.pending.drain(..start);
    }
}

fn push_line(text: &mut String, line: &dyn std::fmt::Display) {
    text.push_str(&line.to_string());
    text.push('\n');
}

/// The bytes of a frame that did not decode, for the log line that says so.
fn hex_bytes(bytes: &[u8]) -> String {
    let listed: Vec<String> = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("{} bytes: {}", bytes.len(), listed.join(" "))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use object::write::{Object, Symbol, SymbolSection};
    use object::{Architecture, BinaryFormat, Endianness, SectionKind, SymbolFlags, SymbolKind};
    use object::{SymbolScope, write::SectionId};

    /// Table indices of the test firmware's log statements: defmt-decoder keys a table entry
    /// by its symbol's address in `.defmt` (`parse_impl` in `elf2table/mod.rs`).
    pub(crate) const TEMPERATURE: u16 = 1;
    const BOOTED: u16 = 2;
    const HELLO: u16 = 3;

    /// An ARM ELF with what defmt's macros and linker script leave in firmware, as
    /// `defmt_decoder::Table::parse` reads it (`parse_impl` in `elf2table/mod.rs`): the
    /// `_defmt_version_ = 4` and `_defmt_encoding_ = <encoding>` symbol names, and one symbol per
    /// format string in `.defmt` whose name is defmt's JSON (`elf2table/symbol.rs`).
    pub(crate) fn defmt_elf(encoding: &str, timestamp: Option<&str>) -> Vec<u8> {
        defmt_object(encoding, timestamp)
            .write()
            .expect("the test ELF is written")
    }

    /// [`defmt_elf`] before it is written, for tests that add symbols of their own.
    pub(crate) fn defmt_object(encoding: &str, timestamp: Option<&str>) -> Object<'static> {
        let mut object = Object::new(BinaryFormat::Elf, Architecture::Arm, Endianness::Little);
        let defmt = object.add_section(Vec::new(), b".defmt".to_vec(), SectionKind::ReadOnlyData);
        object.set_section_data(defmt, vec![0; 8], 1);
        let mut entries = vec![
            (TEMPERATURE, "defmt_info", "temperature {=u8} C"),
            (BOOTED, "defmt_warn", "booted after {=u32} resets"),
            (HELLO, "defmt_println", "hello"),
        ];
        if let Some(format) = timestamp {
            entries.push((4, "defmt_timestamp", format));
        }
        for (index, tag, format) in entries {
            let name = format!(
                r#"{{"package":"app","tag":"{tag}","data":"{format}","disambiguator":"{index}","crate_name":"app"}}"#
            );
            add_symbol(
                &mut object,
                &name,
                u64::from(index),
                SymbolSection::Section(defmt),
            );
        }
        for name in [
            "_defmt_version_ = 4",
            &format!("_defmt_encoding_ = {encoding}"),
        ] {
            add_symbol(&mut object, name, 0, SymbolSection::Absolute);
        }
        object
    }

    pub(crate) fn add_symbol(
        object: &mut Object,
        name: &str,
        address: u64,
        section: SymbolSection,
    ) {
        object.add_symbol(Symbol {
            name: name.as_bytes().to_vec(),
            value: address,
            size: 0,
            kind: SymbolKind::Data,
            scope: SymbolScope::Linkage,
            weak: false,
            section,
            flags: SymbolFlags::None,
        });
    }

    /// An ELF of firmware without defmt: code and an RTT control block, nothing else.
    fn plain_elf() -> Vec<u8> {
        let mut object = Object::new(BinaryFormat::Elf, Architecture::Arm, Endianness::Little);
        let text: SectionId = object.add_section(Vec::new(), b".text".to_vec(), SectionKind::Text);
        object.set_section_data(text, vec![0x70, 0x47], 2);
        add_symbol(&mut object, "_SEGGER_RTT", 0, SymbolSection::Section(text));
        object.write().expect("the test ELF is written")
    }

    /// A frame as defmt writes it before encoding: the format string's table index as a u16
    /// little-endian, then the timestamp's arguments if the firmware has one, then the message's
    /// (defmt-decoder `Table::decode` in `lib.rs`; u8 and u32 arguments are their LE bytes).
    fn frame(index: u16, arguments: &[u8]) -> Vec<u8> {
        let mut frame = index.to_le_bytes().to_vec();
        frame.extend_from_slice(arguments);
        frame
    }

    /// A frame as defmt-rtt sends it by default: rzcobs-encoded (by the format's author's
    /// encoder), then the 0x00 that ends it.
    pub(crate) fn rzcobs_frame(index: u16, arguments: &[u8]) -> Vec<u8> {
        let mut encoded = rzcobs::encode(&frame(index, arguments));
        encoded.push(RZCOBS_FRAME_END);
        encoded
    }

    fn text(bytes: Vec<u8>) -> String {
        String::from_utf8(bytes).expect("decoded frames are UTF-8")
    }

    fn decoder(elf: &[u8]) -> RttText {
        let decoder = RttText::for_elf(elf).expect("the test ELF's defmt table is read");
        assert!(decoder.is_defmt());
        decoder
    }

    #[test]
    fn raw_frame_with_an_argument_is_its_level_and_message() {
        let mut rtt = decoder(&defmt_elf("raw", None));
        assert_eq!(
            text(rtt.feed(&frame(TEMPERATURE, &[21]))),
            "INFO temperature 21 C\n"
        );
        assert_eq!(
            text(rtt.feed(&frame(HELLO, &[]))),
            "hello\n",
            "a println has no level"
        );
    }

    #[test]
    fn raw_frames_split_across_feeds_or_sharing_one_are_one_line_each() {
        let mut rtt = decoder(&defmt_elf("raw", None));
        let booted = frame(BOOTED, &70_000u32.to_le_bytes());
        assert_eq!(text(rtt.feed(&booted[..3])), "", "half a frame waits");
        assert_eq!(
            text(rtt.feed(&booted[3..])),
            "WARN booted after 70000 resets\n"
        );
        let mut two = frame(TEMPERATURE, &[5]);
        two.extend(frame(TEMPERATURE, &[6]));
        assert_eq!(
            text(rtt.feed(&two)),
            "INFO temperature 5 C\nINFO temperature 6 C\n"
        );
    }

    #[test]
    fn raw_malformed_frame_is_a_line_and_later_frames_decode() {
        let mut rtt = decoder(&defmt_elf("raw", None));
        let lines = text(rtt.feed(&frame(0x0777, &[1, 2])));
        assert_eq!(
            lines,
            "defmt: malformed frame (4 bytes: 77 07 01 02; raw frames have no boundary to \
             resume at, so these bytes are dropped)\n"
        );
        assert_eq!(
            text(rtt.feed(&frame(TEMPERATURE, &[30]))),
            "INFO temperature 30 C\n"
        );
    }

    #[test]
    fn timestamp_leads_the_line_when_the_firmware_has_one() {
        let mut rtt = decoder(&defmt_elf("raw", Some("{=u32:us}")));
        let mut arguments = 1_500_000u32.to_le_bytes().to_vec();
        arguments.push(22);
        assert_eq!(
            text(rtt.feed(&frame(TEMPERATURE, &arguments))),
            "1.500000 INFO temperature 22 C\n"
        );
    }

    #[test]
    fn rzcobs_frames_decode_split_joined_and_past_a_malformed_one() {
        let mut rtt = decoder(&defmt_elf("rzcobs", None));
        // 0x0100 has zero bytes inside, which rzcobs compresses: the decoder must undo that.
        let booted = rzcobs_frame(BOOTED, &0x0100u32.to_le_bytes());
        let (head, tail) = booted.split_at(booted.len() / 2);
        assert_eq!(text(rtt.feed(head)), "", "half a frame waits");
        assert_eq!(text(rtt.feed(tail)), "WARN booted after 256 resets\n");

        let mut stream = rzcobs_frame(TEMPERATURE, &[7]);
        stream.extend(rzcobs_frame(0x0777, &[]));
        stream.push(RZCOBS_FRAME_END);
        stream.extend(rzcobs_frame(TEMPERATURE, &[8]));
        let lines = text(rtt.feed(&stream));
        let lines: Vec<&str> = lines.lines().collect();
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert_eq!(lines[0], "INFO temperature 7 C");
        assert!(
            lines[1].starts_with("defmt: malformed frame (malformed data: "),
            "{lines:?}"
        );
        assert_eq!(lines[2], "INFO temperature 8 C");
    }

    #[test]
    fn elf_without_defmt_passes_bytes_through() {
        let mut rtt = RttText::for_elf(&plain_elf()).expect("an ELF without defmt is plain");
        assert!(!rtt.is_defmt());
        let bytes = b"boot: ok\r\n\x00\xffpartial";
        assert_eq!(rtt.feed(bytes), bytes.to_vec());
        assert_eq!(RttText::plain().feed(bytes), bytes.to_vec());
    }

    #[test]
    fn unreadable_defmt_table_is_an_error_saying_why() {
        let mut elf = defmt_elf("raw", None);
        let version = b"_defmt_version_ = 4";
        let at = elf
            .windows(version.len())
            .position(|window| window == version)
            .expect("the version symbol's name is in the string table");
        elf[at + version.len() - 1] = b'9';
        let error = RttText::for_elf(&elf)
            .err()
            .expect("wire format version 9 is refused");
        assert!(
            error
                .to_string()
                .contains("defmt wire format version mismatch: firmware is using 9"),
            "{error}"
        );
    }
}

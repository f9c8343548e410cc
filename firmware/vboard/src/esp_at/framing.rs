//! Line framing on the AT port: command lines end in CR LF and are at most [`MAX_LINE_LEN`]
//! bytes (esp-facts §4.4); after a data prompt (`>`) the host sends exactly N raw bytes with no
//! terminator or escaping.

/// Longest accepted command line, terminator excluded (ESP-AT: ≤ 256 bytes).
pub const MAX_LINE_LEN: usize = 256;

/// What the framer saw in the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameEvent {
    /// A complete command line (CR LF stripped).
    Line(Vec<u8>),
    /// A line ended in LF without the CR the firmware requires.
    MissingCarriageReturn,
    /// A line exceeded [`MAX_LINE_LEN`]; its bytes up to the next LF were discarded.
    Overlong,
    /// The raw data block announced by the last prompt is complete.
    Data(Vec<u8>),
}

#[derive(Debug, Default)]
enum Mode {
    #[default]
    Line,
    /// Discarding an overlong line until its LF.
    Skipping,
    /// Collecting exactly `remaining` raw bytes after a `>` prompt.
    Data { remaining: usize },
}

/// Splits the AT port's byte stream into lines and data blocks. Bounded memory: a line never
/// grows past [`MAX_LINE_LEN`] + 1 bytes, a data block never past what the prompt announced.
#[derive(Debug, Default)]
pub struct LineFramer {
    mode: Mode,
    buffer: Vec<u8>,
}

impl LineFramer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Switches to raw data mode: the next `len` bytes form one [`FrameEvent::Data`].
    pub fn expect_data(&mut self, len: usize) {
        self.buffer.clear();
        self.mode = Mode::Data { remaining: len };
    }

    /// True while a data block is being collected (no echo, no line parsing).
    pub fn in_data_mode(&self) -> bool {
        matches!(self.mode, Mode::Data { .. })
    }

    /// Feeds one byte; returns an event when a line or data block completes.
    pub fn push(&mut self, byte: u8) -> Option<FrameEvent> {
        match &mut self.mode {
            Mode::Data { remaining } => {
                self.buffer.push(byte);
                *remaining = remaining.saturating_sub(1);
                if *remaining == 0 {
                    self.mode = Mode::Line;
                    return Some(FrameEvent::Data(std::mem::take(&mut self.buffer)));
                }
                None
            }
            Mode::Skipping => {
                if byte == b'\n' {
                    self.mode = Mode::Line;
                    return Some(FrameEvent::Overlong);
                }
                None
            }
            Mode::Line => {
                if byte == b'\n' {
                    let mut line = std::mem::take(&mut self.buffer);
                    if line.pop_if(|last| *last == b'\r').is_none() {
                        return Some(FrameEvent::MissingCarriageReturn);
                    }
                    return Some(FrameEvent::Line(line));
                }
                self.buffer.push(byte);
                // One byte of slack for the CR of a maximal line.
                if self.buffer.len() > MAX_LINE_LEN + 1 {
                    self.buffer.clear();
                    self.mode = Mode::Skipping;
                }
                None
            }
        }
    }
}
